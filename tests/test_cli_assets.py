"""``pixelflow upload``, ``status`` and ``ls`` against the session's moto S3, with assets
published and rejected by the real transcode flow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.cli import main
from pixelflow.core.ids import asset_id as compute_asset_id
from tests.player_helpers import fresh_buckets, run_flow, shared_library, short_clip, upload, use_library

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def library(moto_server, prefect_server, media_dir):
    """The shared published/rejected assets, plus an upload nobody has processed yet."""
    lib = shared_library(media_dir)
    if "pending" not in lib:
        lib["pending"], _ = upload(lib["settings"], lib["clip"], "videos/later.mp4")
    return lib


@pytest.fixture(autouse=True)
def _settings(request, monkeypatch):
    if "library" in request.fixturenames:
        use_library(monkeypatch, request.getfixturevalue("library"))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_of_ready_asset(library, capsys):
    asset = library["ready"]
    code, out, _ = cli(capsys, "status", asset)
    assert code == 0
    assert f"asset      {asset}" in out and "status     ready" in out
    assert "rendition  360p   640x360" in out and "rendition  720p   1280x720" in out
    assert "duration   0:08" in out and f"pixelflow play {asset}" in out

    code, out, _ = cli(capsys, "status", asset, "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "ready" and data["asset_id"] == asset
    assert [(r["name"], r["height"]) for r in data["renditions"]] == [("360p", 360), ("720p", 720)]
    assert all(r["bandwidth"] > 0 and "files" not in r for r in data["renditions"])
    assert data["duration"] == pytest.approx(8.0, abs=0.1)
    assert data["created"] == library["manifest"]["created_at"].replace("Z", "+00:00")
    assert data["source"]["key"] == "videos/talk.mp4" and data["error"] is None


def test_status_by_key_resolves_to_asset(library, capsys):
    code, out, _ = cli(capsys, "status", "videos/talk.mp4", "--json")
    assert code == 0 and json.loads(out)["asset_id"] == library["ready"]
    code, out, _ = cli(capsys, "status", "videos/notes.mp4", "--json")
    assert code == 1 and json.loads(out)["asset_id"] == library["rejected"]


def test_status_of_rejected_asset_exits_1_with_code(library, capsys):
    code, out, _ = cli(capsys, "status", library["rejected"])
    assert code == 1
    assert "status     rejected (not_media)" in out
    assert f"error      {library['error'].message}" in out
    code, out, _ = cli(capsys, "status", library["rejected"], "--json")
    data = json.loads(out)
    assert data["status"] == "rejected" and data["error"]["code"] == "not_media" and data["renditions"] == []


def test_status_of_upload_not_yet_processed(library, capsys):
    code, out, _ = cli(capsys, "status", "videos/later.mp4", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "processing" and data["asset_id"] == library["pending"]


def test_status_of_unknown_asset_or_key_fails(library, capsys):
    code, _, err = cli(capsys, "status", "0" * 24)
    assert code == 1 and err.startswith("error [asset_not_found]:")
    code, out, _ = cli(capsys, "status", "0" * 24, "--json")
    assert code == 1 and json.loads(out)["code"] == "asset_not_found"
    code, _, err = cli(capsys, "status", "videos/missing.mp4")
    assert code == 1 and err.startswith("error [source_not_found]:")


def test_ls_lists_every_state(library, capsys):
    code, out, _ = cli(capsys, "ls", "--json")
    assert code == 0
    rows = {row["asset_id"]: row for row in json.loads(out)}
    assert set(rows) == {library["ready"], library["rejected"], library["pending"]}
    assert rows[library["ready"]]["status"] == "ready"
    assert rows[library["rejected"]]["status"] == "rejected"
    assert rows[library["rejected"]]["error"]["code"] == "not_media"
    assert rows[library["pending"]]["status"] == "processing"

    code, out, _ = cli(capsys, "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ASSET", "STATUS", "RENDITIONS", "DURATION", "CREATED", "(UTC)", "SOURCE"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert "ready" in by_id[library["ready"]] and "360p,720p" in by_id[library["ready"]]
    assert "0:08" in by_id[library["ready"]] and "videos/talk.mp4" in by_id[library["ready"]]
    assert "rejected (not_media)" in by_id[library["rejected"]]
    assert "processing" in by_id[library["pending"]]


def test_upload_is_multipart_and_prints_asset_id(moto_server, monkeypatch, capsys, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        env.setenv("PIXELFLOW_MULTIPART_CHUNK_MB", "5")
        big = tmp_path / "big.mov"
        big.write_bytes(bytes(range(256)) * (12 * 1024 * 1024 // 256))  # 12 MiB: three parts
        code, out, err = cli(capsys, "upload", str(big), "--key", "in/big.mov", "--json")
    assert code == 0
    data = json.loads(out)
    head = s3_client().head_object(Bucket=settings.upload_bucket, Key="in/big.mov")
    assert head["ETag"].strip('"').endswith("-3")  # a three-part multipart upload
    assert head["ContentLength"] == big.stat().st_size and head["ContentType"] == "video/quicktime"
    assert data["asset_id"] == compute_asset_id(settings.upload_bucket, "in/big.mov", head["ETag"])
    assert data["status"] == "processing" and data["key"] == "in/big.mov"
    assert "100%  12.0/12.0 MiB" in err and "[##############################]" in err


def test_upload_without_key_uses_file_name(moto_server, capsys, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        small = tmp_path / "clip.mp4"
        small.write_bytes(b"x" * 1000)
        code, out, _ = cli(capsys, "upload", str(small))
    head = s3_client().head_object(Bucket=settings.upload_bucket, Key="clip.mp4")
    assert code == 0
    assert f"asset    {compute_asset_id(settings.upload_bucket, 'clip.mp4', head['ETag'])}" in out
    code, _, err = cli(capsys, "upload", str(tmp_path / "nope.mp4"))
    assert code == 2 and "is not a file" in err


def test_upload_puts_caption_files_first_as_the_videos_sidecars(moto_server, capsys, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        video = tmp_path / "clip.mp4"
        video.write_bytes(b"x" * 1000)
        (tmp_path / "talk.EN.vtt").write_bytes(b"WEBVTT\n")
        (tmp_path / "talk.pt-br.srt").write_bytes(b"1\n")
        code, _, _ = cli(capsys, "upload", str(video), "--key", "in/talk.mp4", "--captions",
                         str(tmp_path / "talk.EN.vtt"), "--captions", str(tmp_path / "talk.pt-br.srt"))
        assert code == 0
        s3 = s3_client()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=settings.upload_bucket)["Contents"])
        assert keys == ["in/talk.en.vtt", "in/talk.mp4", "in/talk.pt-BR.srt"]
        # the captions were stored before the video
        heads = {k: s3.head_object(Bucket=settings.upload_bucket, Key=k)["LastModified"] for k in keys}
        assert heads["in/talk.en.vtt"] <= heads["in/talk.mp4"]
        for bad in ("notes.txt", "talk.vtt", "talk.xx.vtt", "missing.en.vtt"):
            if bad != "missing.en.vtt":
                (tmp_path / bad).write_bytes(b"WEBVTT\n")
            code, _, err = cli(capsys, "upload", str(video), "--key", "in/other.mp4", "--captions", str(tmp_path / bad))
            assert code == 2 and "invalid_captions" in err, (bad, err)
        assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=settings.upload_bucket)["Contents"]) == keys


def _upload_and_wait(settings, path: Path, key: str, timeout: float = 120) -> subprocess.Popen:
    """``pixelflow upload --wait`` as a real process, and run the flow once the object is there
    (what the bridge and a worker do in the stack)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pixelflow.cli", "upload", str(path), "--key", key, "--wait",
         "--timeout", str(timeout), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s3 = s3_client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            etag = s3.head_object(Bucket=settings.upload_bucket, Key=key)["ETag"]
            break
        except s3.exceptions.ClientError:
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("the upload never appeared")
    run_flow(settings, key, etag)
    return process


def test_upload_wait_until_ready(moto_server, prefect_server, media_dir):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        process = _upload_and_wait(settings, short_clip(media_dir), "videos/waited.mp4")
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    data = json.loads(out)
    assert data["status"] == "ready" and [r["name"] for r in data["renditions"]] == ["360p"]
    etag = s3_client().head_object(Bucket=settings.upload_bucket, Key="videos/waited.mp4")["ETag"]
    assert data["asset_id"] == compute_asset_id(settings.upload_bucket, "videos/waited.mp4", etag)
    assert "waiting for it" in err and "100%" in err


def test_upload_wait_rejected_exits_1(moto_server, prefect_server, tmp_path):
    junk = tmp_path / "slides.mp4"
    junk.write_bytes(b"%PDF-1.4 not a video\n" * 40)
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        process = _upload_and_wait(settings, junk, "videos/slides.mp4")
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    data = json.loads(out)
    assert data["status"] == "rejected" and data["error"]["code"] == "not_media"
    assert data["source"]["key"] == "videos/slides.mp4"


def test_upload_wait_times_out(moto_server, capsys, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        fresh_buckets(env)
        small = tmp_path / "clip.mp4"
        small.write_bytes(b"x" * 1000)
        started = time.monotonic()
        code, out, err = cli(capsys, "upload", str(small), "--wait", "--timeout", "1.5")
    assert code == 1 and 1.5 <= time.monotonic() - started < 10
    assert "error [wait_timeout]:" in err and "still processing after 1.5 s" in err


def test_play_serves_the_asset(library):
    """``pixelflow play`` as a real process: prints its URL and proxies the asset, nothing else."""
    import urllib.error
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "pixelflow.cli", "play", library["ready"], "--no-open"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"/?asset={library['ready']}")
        base = url.split("/?")[0]
        with urllib.request.urlopen(f"{base}/assets/{library['ready']}/master.m3u8", timeout=10) as response:
            assert response.status == 200 and b"#EXT-X-STREAM-INF" in response.read()
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:  # redirected to the asset's page
            assert response.url == url and b"/static/player.js" in response.read()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/api/assets/{library['rejected']}", timeout=10)
        assert caught.value.code == 404  # only the asset given on the command line
    finally:
        process.terminate()
        process.wait(10)
