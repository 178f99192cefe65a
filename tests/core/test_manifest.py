"""Playlists and the manifest: bandwidth from real segment sizes, codecs, content types."""

from pixelflow.core.hls import master_playlist, parse_master_playlist
from pixelflow.core.manifest import audio_entry, build_manifest, object_headers, summarize_rendition, variant_entry
from pixelflow.core.upload import Upload

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.000000,
seg_00000.m4s
#EXTINF:4.000000,
seg_00001.m4s
#EXTINF:2.000000,
seg_00002.m4s
#EXT-X-ENDLIST
"""


def rendition():
    sizes = {"init.mp4": 800, "seg_00000.m4s": 500_000, "seg_00001.m4s": 1_000_000, "seg_00002.m4s": 100_000,
             "index.m3u8": 300}
    return summarize_rendition("720p", "video", PLAYLIST, sizes, "avc1.64001f", 1280, 720, 30.0)


def test_rendition_is_measured_from_its_segments():
    r = rendition()
    assert r.segments == 3 and r.duration == 10.0
    assert r.size == 1_600_800
    assert r.bandwidth == 2_000_000  # the largest segment: 1 MB in 4 s
    assert r.average_bandwidth == 1_280_640
    assert r.files[-1] == "720p/index.m3u8" and r.files[0] == "720p/init.mp4"


def test_master_lists_every_rendition_with_the_attributes_players_need():
    video = rendition()
    audio = summarize_rendition("audio", "audio", PLAYLIST, {"init.mp4": 600, "seg_00000.m4s": 64_000,
                                                             "seg_00001.m4s": 64_000, "seg_00002.m4s": 32_000,
                                                             "index.m3u8": 300},
                                "mp4a.40.2")
    text = master_playlist([variant_entry(video)], audio_entry(audio))
    [variant] = parse_master_playlist(text)
    assert variant["BANDWIDTH"] == str(2_000_000 + audio.bandwidth)
    assert variant["AVERAGE-BANDWIDTH"] == str(1_280_640 + audio.average_bandwidth)
    assert variant["RESOLUTION"] == "1280x720"
    assert variant["CODECS"] == "avc1.64001f,mp4a.40.2"
    assert variant["FRAME-RATE"] == "30.000"
    assert variant["AUDIO"] == "audio" and variant["URI"] == "720p/index.m3u8"
    assert 'URI="audio/index.m3u8"' in text and "#EXT-X-INDEPENDENT-SEGMENTS" in text


def test_manifest_describes_the_asset():
    source = Upload("uploads", "a/b.mp4", "etag1", None, 123)
    m = build_manifest("abc", source, {"duration": 10.0}, [rendition()], None, "ladder-x", "run-1")
    assert m["asset_id"] == "abc" and m["status"] == "ready"
    assert m["source"] == {"bucket": "uploads", "key": "a/b.mp4", "etag": "etag1", "version_id": None, "size": 123}
    assert m["renditions"][0]["name"] == "720p" and m["renditions"][0]["segments"] == 3
    assert m["duration"] == 10.0 and m["master_playlist"] == "master.m3u8" and m["audio"] is None


def test_published_files_get_content_types_and_cache_control():
    assert object_headers("master.m3u8")["ContentType"] == "application/vnd.apple.mpegurl"
    assert object_headers("720p/init.mp4") == {"ContentType": "video/mp4",
                                               "CacheControl": "public, max-age=31536000, immutable"}
    assert object_headers("poster.jpg")["ContentType"] == "image/jpeg"
    assert object_headers("manifest.json")["CacheControl"] == "public, max-age=60"
