"""End to end: an object in the (moto) upload bucket becomes a published HLS asset, through the
real flow on a real Prefect server, checked from the production bucket with ffprobe."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist, parse_media_playlist
from pixelflow.core.ids import asset_id
from tests.conftest import make_clip

pytestmark = pytest.mark.integration


def download_asset(bucket: str, prefix: str, dest: Path) -> list[str]:
    s3 = s3_client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            keys.append(obj["Key"])
            target = dest / obj["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
    return keys


def ffprobe_json(path: Path, **options: str) -> dict:
    """Inspect a published file with ffprobe, through ffmpeg-python."""
    import ffmpeg

    return ffmpeg.probe(str(path), v="error", **options)


def keyframe_times(init: Path, segments: list[Path], tmp: Path) -> list[float]:
    joined = tmp / f"{init.parent.name}-joined.mp4"
    with open(joined, "wb") as out:
        for part in [init, *segments]:
            out.write(part.read_bytes())
    data = ffprobe_json(joined, select_streams="v:0", show_entries="packet=pts_time,flags")
    return [round(float(p["pts_time"]), 2) for p in data["packets"] if "K" in p.get("flags", "")]


@pytest.fixture(scope="module")
def landscape_clip(media_dir) -> Path:
    # 6 s of 1920x1080 30 fps with audio: three rungs below it plus 1080p itself; its hue turns
    # 60 degrees a second, so that pictures taken at different times tell apart
    return make_clip(media_dir / "landscape-1080p.mp4", seconds=6, size="1920x1080", vf="hue=h=t*60")


def tile_psnr(sheet: Path, tile: tuple[int, int, int, int], source: Path, at: float) -> float:
    """PSNR (dB) of one storyboard tile against the source's frame at ``at`` seconds, scaled alike."""
    x, y, w, h = tile
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(sheet), "-ss", f"{at:.3f}", "-i", str(source),
         "-filter_complex", f"[0:v]crop={w}:{h}:{x}:{y},format=yuv420p[a];"
                            f"[1:v]scale={w}:{h}:flags=bicubic,format=yuv420p[b];[a][b]psnr",
         "-frames:v", "1", "-f", "null", "-"], capture_output=True, text=True, check=True)
    average = result.stderr.rsplit("average:", 1)[1].split()[0]
    return float("inf") if average == "inf" else float(average)


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4 file's top-level boxes, in order."""
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        boxes.append(kind)
        offset += size if size else len(data)
    return boxes


def packets_md5(path: Path, stream: str) -> str:
    """MD5 of one stream's packets, copied: equal for the same encode, whatever the container."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", stream, "-c", "copy", "-f", "md5", "-"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def ffmpeg_commands(flow_run_id: str) -> list[str]:
    """The FFmpeg commands a flow run started, as it logged them (``ffmpeg: <command>``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        for _ in range(100):  # logs reach the API in batches: wait for the run's last line
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
            if any(log.message.startswith("Finished in state") and log.task_run_id is None for log in logs):
                break
            time.sleep(0.1)
    return [log.message for log in logs if log.message.startswith("ffmpeg: ")]


def upload(path: Path, bucket: str, key: str) -> str:
    s3 = s3_client()
    s3.upload_file(str(path), bucket, key)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def test_upload_becomes_playable_hls_ladder(prefect_server, buckets, landscape_clip, tmp_path):
    from flows.transcode import transcode

    up, out = buckets
    key = "videos/my holiday clip.mp4"
    etag = upload(landscape_clip, up, key)
    manifest = transcode(bucket=up, key=key, etag=etag)

    aid = asset_id(up, key, etag)
    assert manifest["asset_id"] == aid
    assert manifest["status"] == "ready"
    prefix = f"assets/{aid}/"
    keys = download_asset(out, prefix, tmp_path)
    # Write-once: the manifest and the master playlist at the asset's top, everything else in the
    # folder of the attempt that made it
    run = manifest["folder"]
    assert run == f"{manifest['flow_run_id'].replace('-', '')[:12]}-1" and manifest["poster"] == f"{run}/poster.jpg"
    assert {k for k in keys if not k.startswith(f"{prefix}{run}/")} == {f"{prefix}manifest.json", f"{prefix}master.m3u8"}
    assert f"{prefix}{run}/poster.jpg" in keys
    # the poster: a JPEG the size of the 720p rung
    poster = ffprobe_json(tmp_path / run / "poster.jpg", show_entries="stream=codec_name,width,height")["streams"][0]
    assert (poster["codec_name"], poster["width"], poster["height"]) == ("mjpeg", 1280, 720)

    s3 = s3_client()
    head = s3.head_object(Bucket=out, Key=f"{prefix}master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    seg_head = s3.head_object(Bucket=out, Key=f"{prefix}{run}/720p/seg_00000.m4s")
    assert seg_head["ContentType"] == "video/iso.segment" and "immutable" in seg_head["CacheControl"]

    variants = parse_master_playlist((tmp_path / "master.m3u8").read_text())
    assert [v["RESOLUTION"] for v in variants] == ["640x360", "854x480", "1280x720", "1920x1080"]
    for v in variants:
        assert int(v["BANDWIDTH"]) >= int(v["AVERAGE-BANDWIDTH"]) > 0
        assert v["CODECS"].startswith("avc1.64") and "mp4a.40.2" in v["CODECS"]
        assert float(v["FRAME-RATE"]) == pytest.approx(30.0)
    assert '#EXT-X-MEDIA:TYPE=AUDIO' in (tmp_path / "master.m3u8").read_text()

    source_duration = float(ffprobe_json(landscape_clip)["format"]["duration"])
    keyframes = {}
    for v in variants:
        folder = tmp_path / Path(v["URI"]).parent
        playlist = parse_media_playlist((folder / "index.m3u8").read_text())
        assert playlist.duration == pytest.approx(source_duration, abs=2 / 30)
        assert all(d <= 4.1 for _, d in playlist.segments)
        segments = [folder / uri for uri, _ in playlist.segments]
        keyframes[v["RESOLUTION"]] = keyframe_times(folder / "init.mp4", segments, tmp_path)
        # every segment decodes
        joined = tmp_path / f"{folder.name}-joined.mp4"
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-f", "null", "-"], capture_output=True, text=True)
        assert decoded.returncode == 0 and decoded.stderr.strip() == ""
        width, height = (int(x) for x in v["RESOLUTION"].split("x"))
        stream = ffprobe_json(joined)["streams"][0]
        assert (stream["width"], stream["height"]) == (width, height)
        assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
    assert len(set(map(tuple, keyframes.values()))) == 1, keyframes
    times = list(keyframes.values())[0]
    assert [round(t - times[0], 2) for t in times] == [0.0, 2.0, 4.0]  # a fixed 2 s GOP, no scene cuts

    stored = json.loads((tmp_path / "manifest.json").read_text())
    assert stored["asset_id"] == aid and stored["status"] == "ready"
    assert stored["source"] == {"bucket": up, "key": key, "etag": etag.strip('"'), "version_id": None,
                                "size": landscape_clip.stat().st_size}
    assert [r["name"] for r in stored["renditions"]] == ["360p", "480p", "720p", "1080p"]
    assert all(r["segments"] == 2 and r["size"] > 0 for r in stored["renditions"])
    assert stored["audio"]["codecs"] == "mp4a.40.2"
    assert stored["probe"]["video"]["display_width"] == 1920

    # The storyboard: a tile every 5 s, from the 360p pictures, on one sheet mapped by its WebVTT.
    board = stored["storyboard"]
    assert (board["count"], board["interval"], board["columns"], board["tile_width"], board["tile_height"]) == (
        2, 5, 2, 160, 90)
    sheet = ffprobe_json(tmp_path / run / "storyboard.jpg", show_entries="stream=codec_name,width,height")["streams"][0]
    assert (sheet["codec_name"], sheet["width"], sheet["height"]) == ("mjpeg", 320, 90)
    vtt = (tmp_path / run / "storyboard.vtt").read_text()
    assert vtt == ("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nstoryboard.jpg#xywh=0,0,160,90\n\n"
                   "00:00:05.000 --> 00:00:06.000\nstoryboard.jpg#xywh=160,0,160,90\n")
    assert s3.head_object(Bucket=out, Key=f"{prefix}{run}/storyboard.vtt")["ContentType"].startswith("text/vtt")
    # The MP4 download: the highest rung up to 1080p and the audio, remuxed (the very packets of
    # the HLS renditions), index first, saved under the source's name.
    assert [(d["name"], d["file"]) for d in stored["downloads"]] == [("1080p", f"{run}/downloads/1080p.mp4")]
    mp4 = tmp_path / run / "downloads" / "1080p.mp4"
    assert stored["downloads"][0]["size"] == mp4.stat().st_size
    head = s3.head_object(Bucket=out, Key=f"{prefix}{run}/downloads/1080p.mp4")
    assert head["ContentType"] == "video/mp4"
    assert head["ContentDisposition"].startswith('attachment; filename="my holiday clip-1080p.mp4"')
    boxes = top_level_boxes(mp4)
    assert boxes.index("moov") < boxes.index("mdat") and "moof" not in boxes  # progressive, faststart
    probe = ffprobe_json(mp4, show_entries="stream=codec_type,codec_name,width,height:format=duration")
    assert [(s["codec_type"], s["codec_name"]) for s in probe["streams"]] == [("video", "h264"), ("audio", "aac")]
    assert float(probe["format"]["duration"]) == pytest.approx(source_duration, abs=0.1)
    assert packets_md5(mp4, "0:v:0") == packets_md5(tmp_path / "1080p-joined.mp4", "0:v:0")
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "null", "-"], capture_output=True, text=True)
    assert decoded.returncode == 0 and decoded.stderr.strip() == ""

    # One decode makes every output: the run started one FFmpeg process, which wrote the poster
    # and the storyboard besides the rungs and the audio.
    started = ffmpeg_commands(manifest["flow_run_id"])
    decodes = [line for line in started if "-c copy" not in line]  # remuxes read packets, decode nothing
    assert len(decodes) == 1 and "poster.jpg" in decodes[0] and "storyboard.jpg" in decodes[0], started
    assert len(started) == 2 and "downloads/1080p.mp4" in started[1]
    # each tile is the picture at the start of its cue, not another one
    tiles = [(0, 0, 160, 90), (160, 0, 160, 90)]
    for tile, start, other in zip(tiles, (0.0, 5.0), (5.0, 0.0)):
        assert tile_psnr(tmp_path / run / "storyboard.jpg", tile, landscape_clip, start) > 25
        assert tile_psnr(tmp_path / run / "storyboard.jpg", tile, landscape_clip, start) > tile_psnr(
            tmp_path / run / "storyboard.jpg", tile, landscape_clip, other) + 5


@pytest.mark.parametrize("name,codec", [("voice memo.m4a", "aac"), ("podcast.mp3", "libmp3lame")])
def test_an_audio_only_upload_becomes_an_audio_asset(prefect_server, buckets, media_dir, tmp_path, name, codec):
    from flows.transcode import transcode

    up, out = buckets
    source = media_dir / f"audio-only-{codec}{Path(name).suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=330:duration=5", "-c:a", codec,
                    str(source)], check=True)
    key = f"audio/{name}"
    manifest = transcode(bucket=up, key=key, etag=upload(source, up, key))
    assert manifest["status"] == "ready" and manifest["renditions"] == [] and manifest["poster"] is None
    assert "storyboard" not in manifest and manifest["probe"].get("video") is None
    prefix = f"assets/{manifest['asset_id']}/"
    keys = download_asset(out, prefix, tmp_path)
    assert not [k for k in keys if k.endswith((".jpg", ".vtt"))]
    # The master playlist's one variant is the audio rendition, which decodes and lasts the source.
    (variant,) = parse_master_playlist((tmp_path / "master.m3u8").read_text())
    run = manifest["folder"]
    assert (variant["URI"], variant["CODECS"]) == (f"{run}/audio/index.m3u8", "mp4a.40.2") and "RESOLUTION" not in variant
    playlist = parse_media_playlist((tmp_path / run / "audio" / "index.m3u8").read_text())
    assert playlist.duration == pytest.approx(5.0, abs=0.1)
    joined = tmp_path / "audio-joined.mp4"
    joined.write_bytes(b"".join((tmp_path / run / "audio" / part).read_bytes()
                                for part in [playlist.init] + [uri for uri, _ in playlist.segments]))
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-f", "null", "-"], capture_output=True, text=True)
    assert decoded.returncode == 0 and decoded.stderr.strip() == ""
    # Its download is an M4A of the same packets, index first, saved under the source's name.
    assert [(d["name"], d["file"]) for d in manifest["downloads"]] == [("audio", f"{run}/downloads/audio.m4a")]
    m4a = tmp_path / run / "downloads" / "audio.m4a"
    head = s3_client().head_object(Bucket=out, Key=f"{prefix}{run}/downloads/audio.m4a")
    assert head["ContentType"] == "audio/mp4" and f'filename="{Path(name).stem}-audio.m4a"' in head["ContentDisposition"]
    assert top_level_boxes(m4a).index("moov") < top_level_boxes(m4a).index("mdat")
    assert packets_md5(m4a, "0:a:0") == packets_md5(joined, "0:a:0")
    # One decode of the source (the audio encode, which vouched for it), then the remux.
    started = ffmpeg_commands(manifest["flow_run_id"])
    assert len(started) == 2 and "-c copy" in started[1], started


def test_rejected_source_fails_with_code_and_publishes_nothing(prefect_server, buckets, tmp_path):
    from flows.transcode import transcode
    from pixelflow.errors import PixelFlowError

    up, out = buckets
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video, just text named like one\n" * 50)
    etag = upload(bogus, up, "notes.mp4")

    with pytest.raises(PixelFlowError) as caught:
        transcode(bucket=up, key="notes.mp4", etag=etag)
    assert caught.value.code.value == "not_media"
    aid = asset_id(up, "notes.mp4", etag)
    # nothing published: the output bucket holds the rejection's record only (never served)
    assert [o["Key"] for o in s3_client().list_objects_v2(Bucket=out)["Contents"]] == [f"records/{aid}/error.json"]
    record = json.loads(s3_client().get_object(Bucket=out, Key=f"records/{aid}/error.json")["Body"].read())
    assert record["code"] == "not_media" and record["status"] == "rejected"
    # the upload is kept where it was, and a copy beside the record
    assert s3_client().head_object(Bucket=up, Key="notes.mp4")["ContentLength"] == bogus.stat().st_size
    assert s3_client().head_object(Bucket=up, Key=f"quarantine/{aid}/source")["ContentLength"] == bogus.stat().st_size


def test_transcode_command_prints_the_asset_or_exits_1_with_the_code(prefect_server, buckets, tmp_path):
    up, out = buckets
    clip = make_clip(tmp_path / "cli.mp4", seconds=2, size="640x360")
    upload(clip, up, "cli/clip one.mp4")
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"")
    upload(bogus, up, "cli/empty.mp4")

    import os
    import sys

    env = dict(os.environ)
    ok = subprocess.run([sys.executable, "-m", "pixelflow.cli", "transcode", f"s3://{up}/cli/clip one.mp4", "--json"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    manifest = json.loads(ok.stdout)
    assert manifest["status"] == "ready" and manifest["location"].endswith("/master.m3u8")
    assert s3_client().head_object(Bucket=out, Key=f"assets/{manifest['asset_id']}/manifest.json")

    rejected = subprocess.run([sys.executable, "-m", "pixelflow.cli", "transcode", f"s3://{up}/cli/empty.mp4"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert rejected.returncode == 1
    assert "error [empty_file]" in rejected.stderr
