"""End to end: an object in the (moto) upload bucket becomes a published HLS asset, through the
real flow on a real Prefect server, checked from the production bucket with ffprobe."""

from __future__ import annotations

import json
import subprocess
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
    # 6 s of 1920x1080 30 fps with audio: three rungs below it plus 1080p itself
    return make_clip(media_dir / "landscape-1080p.mp4", seconds=6, size="1920x1080")


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
    assert f"{prefix}manifest.json" in keys and f"{prefix}master.m3u8" in keys and f"{prefix}poster.jpg" in keys
    # the poster: a JPEG the size of the 720p rung
    poster = ffprobe_json(tmp_path / "poster.jpg", show_entries="stream=codec_name,width,height")["streams"][0]
    assert (poster["codec_name"], poster["width"], poster["height"]) == ("mjpeg", 1280, 720)

    s3 = s3_client()
    head = s3.head_object(Bucket=out, Key=f"{prefix}master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    seg_head = s3.head_object(Bucket=out, Key=f"{prefix}720p/seg_00000.m4s")
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
