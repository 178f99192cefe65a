"""HLS playlists: FFmpeg's media playlists read back, bandwidth measured from segment sizes, and
the master playlist written and read back the way players read it."""

from __future__ import annotations

import pytest

from pixelflow.core.hls import (AudioEntry, VariantEntry, avc1_codec, avc1_from_init, bandwidths, master_playlist,
                                parse_master_playlist, parse_media_playlist)

FFMPEG_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXTINF:2.000000,
seg_00000.m4s
#EXTINF:2.000000,
seg_00001.m4s
#EXTINF:0.533333,
seg_00002.m4s
#EXT-X-ENDLIST
"""

VARIANTS = [
    VariantEntry("720p/index.m3u8", 3_100_000, 2_400_000, 1280, 720, "avc1.64001f", 30.0),
    VariantEntry("360p/index.m3u8", 900_000, 700_000, 640, 360, "avc1.64001e", 30.0),
    VariantEntry("540p/index.m3u8", 1_800_000, 1_300_000, 960, 540, "avc1.64001f", 29.97),
]


def test_media_playlist_gives_init_segments_and_durations():
    playlist = parse_media_playlist(FFMPEG_PLAYLIST)
    assert playlist.init == "init.mp4" and playlist.target_duration == 2.0
    assert [uri for uri, _ in playlist.segments] == ["seg_00000.m4s", "seg_00001.m4s", "seg_00002.m4s"]
    assert playlist.duration == pytest.approx(4.533333)


def test_a_segment_without_its_duration_is_refused():
    with pytest.raises(ValueError, match="seg_00000.m4s"):
        parse_media_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg_00000.m4s\n")


def test_bandwidth_peak_is_the_busiest_segment_and_the_average_counts_the_init_segment():
    # A short last segment with many bytes is the peak, though it is not the largest; the average
    # is 1_201_000 bytes in 4.5 s, rounded up.
    assert bandwidths([500_000, 500_000, 200_000], [2.0, 2.0, 0.5], init_size=1_000) == (3_200_000, 2_135_112)
    assert bandwidths([], []) == (0, 0)


def test_master_playlist_reads_back_lowest_first_with_the_audio_in_every_variant():
    audio = AudioEntry("audio/index.m3u8", 140_000, 130_000, language="en")
    text = master_playlist(VARIANTS, audio)
    variants = parse_master_playlist(text)
    assert [v["URI"] for v in variants] == ["360p/index.m3u8", "540p/index.m3u8", "720p/index.m3u8"]
    top = variants[-1]
    assert top == {"BANDWIDTH": "3240000", "AVERAGE-BANDWIDTH": "2530000", "RESOLUTION": "1280x720",
                   "CODECS": "avc1.64001f,mp4a.40.2", "FRAME-RATE": "30.000", "AUDIO": "audio",
                   "URI": "720p/index.m3u8"}
    assert variants[1]["FRAME-RATE"] == "29.970"
    [media] = [line for line in text.splitlines() if line.startswith("#EXT-X-MEDIA:")]
    assert 'GROUP-ID="audio"' in media and 'LANGUAGE="en"' in media and 'URI="audio/index.m3u8"' in media


def test_master_playlist_without_audio_has_no_audio_group():
    text = master_playlist(VARIANTS[:1], None)
    [variant] = parse_master_playlist(text)
    assert variant["CODECS"] == "avc1.64001f" and variant["BANDWIDTH"] == "3100000" and "AUDIO" not in variant
    assert "#EXT-X-MEDIA" not in text and text.startswith("#EXTM3U\n") and text.endswith("720p/index.m3u8\n")


def test_h264_codec_strings():
    assert avc1_codec("Main", 40) == "avc1.4d4028"
    assert avc1_codec("High 10", 51) == "avc1.6e0033"
    assert avc1_from_init(b"\x00\x00\x00\x18ftypiso5" + b"\x00" * 8) is None  # no avcC box
    assert avc1_from_init(b"....avcC\x01\x4d") is None  # box cut short
