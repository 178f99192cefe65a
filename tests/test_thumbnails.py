"""Thumbnails at time t through the API and the player server, on an asset published by the real
transcode flow in moto S3: the picture is the source's at t, at the width asked for, in the format
asked for; a repeated request runs no FFmpeg; every bad request has its status and code."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pixelflow.player.server import make_server, serve_in_thread
from pixelflow.settings import PixelFlowSettings
from tests.api_helpers import env_for, make_settings, start_api
from tests.conftest import make_clip
from tests.test_flow_e2e import ffprobe_json, tile_psnr

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DURATION = 6.0


@pytest.fixture(scope="module")
def published(moto_server, prefect_server, media_dir):
    """A 6 s 1280x720 clip whose hue turns 60 degrees a second, published as 360p and 720p (2 s
    segments) into the API's buckets, and a text file the flow rejected; both sources are then
    deleted from the upload bucket."""
    from flows.transcode import transcode
    from pixelflow.aws import s3_client
    from pixelflow.core.upload import Upload
    from pixelflow.errors import PixelFlowError

    settings = make_settings(ladder=[360, 720])
    clip = make_clip(media_dir / "thumbnail-hue.mp4", seconds=DURATION, size="1280x720", vf="hue=h=t*60")
    junk = media_dir / "thumbnail-junk.mp4"
    junk.write_bytes(b"not a video\n" * 100)
    s3 = s3_client()
    found = {}
    with pytest.MonkeyPatch.context() as env:
        for name, value in env_for(settings).items():
            env.setenv(name, value)
        for path, key in ((clip, "videos/hue.mp4"), (junk, "videos/junk.mp4")):
            s3.upload_file(str(path), settings.upload_bucket, key)
            upload = Upload.from_head(settings.upload_bucket, key, s3.head_object(Bucket=settings.upload_bucket, Key=key))
            try:
                transcode(bucket=upload.bucket, key=key, etag=upload.etag)
            except PixelFlowError as error:
                assert error.code.value == "not_media"
            found[key] = upload.asset_id
            s3.delete_object(Bucket=settings.upload_bucket, Key=key)  # thumbnails never need the source
    return {"settings": settings, "ready": found["videos/hue.mp4"], "rejected": found["videos/junk.mp4"], "clip": clip}


@pytest.fixture(scope="module")
def api(published):
    api = start_api(published["settings"])
    yield api
    api.stop()


@pytest.fixture(scope="module")
def player(published):
    from pixelflow.aws import s3_client

    server = make_server(published["settings"], port=0, s3=s3_client())
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def _service(api):
    return api.server.config.app.state.thumbnails


def _save(tmp_path: Path, response: httpx.Response, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(response.content)
    return path


def _size(path: Path) -> tuple[int, int]:
    (stream,) = ffprobe_json(path)["streams"]
    return stream["width"], stream["height"]


def test_the_thumbnail_at_t_is_the_sources_picture_at_t(api, published, tmp_path):
    asset = published["ready"]
    with httpx.Client(base_url=api.url, timeout=60) as anonymous:  # playback needs no token
        for at, other in ((1.0, 4.0), (4.5, 1.5)):
            response = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": at, "width": 320})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/jpeg" and response.content[:3] == b"\xff\xd8\xff"
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            image = _save(tmp_path, response, f"at-{at}.jpg")
            assert _size(image) == (320, 180)
            here = tile_psnr(image, (0, 0, 320, 180), published["clip"], at)
            assert here > 25 and here > tile_psnr(image, (0, 0, 320, 180), published["clip"], other) + 5
        webp = anonymous.get(f"/assets/{asset}/thumbnail.webp", params={"time": "2.5", "height": "360"})
        assert webp.status_code == 200 and webp.headers["content-type"] == "image/webp"
        assert webp.content[:4] == b"RIFF" and webp.content[8:12] == b"WEBP"
        image = _save(tmp_path, webp, "at-2.5.webp")
        assert _size(image) == (640, 360) and tile_psnr(image, (0, 0, 640, 360), published["clip"], 2.5) > 25
        # Defaults: the poster's time (10 % in) at the poster rung's size (the 720p of this ladder).
        default = anonymous.get(f"/assets/{asset}/thumbnail.jpg")
        assert default.status_code == 200
        image = _save(tmp_path, default, "default.jpg")
        assert _size(image) == (1280, 720)
        assert tile_psnr(image, (0, 0, 1280, 720), published["clip"], 0.6) > tile_psnr(
            image, (0, 0, 1280, 720), published["clip"], 3.6) + 5
        # The last picture, at the duration itself.
        assert anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": DURATION, "width": 64}).status_code == 200


def test_a_repeated_request_runs_no_ffmpeg(api, published):
    asset = published["ready"]
    with httpx.Client(base_url=api.url, timeout=60) as anonymous:
        first = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "3.25", "width": "200"})
        assert first.status_code == 200
        runs = _service(api).ffmpeg_runs
        again = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "3.250", "width": "200"})
        assert again.status_code == 200 and again.content == first.content
        assert _service(api).ffmpeg_runs == runs
        # Another time is another picture: one more FFmpeg process.
        assert anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "3.5", "width": "200"}).status_code == 200
        assert _service(api).ffmpeg_runs == runs + 1


BAD_REQUESTS = [
    ("thumbnail.jpg", {"time": "-1"}, 400, "invalid_time"),
    ("thumbnail.jpg", {"time": "soon"}, 400, "invalid_time"),
    ("thumbnail.jpg", {"time": "nan"}, 400, "invalid_time"),
    ("thumbnail.jpg", {"time": "6.5"}, 400, "invalid_time"),  # beyond the duration
    ("thumbnail.jpg", {"time": "99999"}, 400, "invalid_time"),
    ("thumbnail.jpg", {"width": "0"}, 400, "invalid_size"),
    ("thumbnail.jpg", {"width": "-320"}, 400, "invalid_size"),
    ("thumbnail.jpg", {"width": "12.5"}, 400, "invalid_size"),
    ("thumbnail.jpg", {"height": "tall"}, 400, "invalid_size"),
    ("thumbnail.jpg", {"width": "100000"}, 400, "thumbnail_too_large"),  # a giant width
    ("thumbnail.jpg", {"width": "4000"}, 400, "thumbnail_too_large"),  # above PIXELFLOW_THUMBNAIL_MAX_WIDTH
    ("thumbnail.jpg", {"width": "1600"}, 400, "thumbnail_too_large"),  # above the largest rendition
    ("thumbnail.webp", {"height": "1080"}, 400, "thumbnail_too_large"),
    ("thumbnail.gif", {}, 400, "invalid_format"),
    ("thumbnail.png", {"time": "1"}, 400, "invalid_format"),
]


def _runs_unchanged(service, before):
    return service is None or service.ffmpeg_runs == before


@pytest.mark.parametrize("name, params, status, code", BAD_REQUESTS)
def test_bad_requests_are_refused_with_codes_through_the_api(api, published, name, params, status, code):
    service = getattr(api.server.config.app.state, "thumbnails", None)
    before = service.ffmpeg_runs if service else 0
    with httpx.Client(base_url=api.url, timeout=60) as anonymous:
        response = anonymous.get(f"/assets/{published['ready']}/{name}", params=params)
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    assert _runs_unchanged(getattr(api.server.config.app.state, "thumbnails", None), before)


@pytest.mark.parametrize("name, params, status, code", BAD_REQUESTS[::3])
def test_bad_requests_are_refused_with_codes_by_the_player_server(player, published, name, params, status, code):
    base = f"http://{player.server_address[0]}:{player.server_address[1]}"
    response = httpx.get(f"{base}/assets/{published['ready']}/{name}", params=params, timeout=60)
    assert response.status_code == status and response.json()["code"] == code, response.text


def test_unknown_and_unpublished_assets_are_404(api, player, published):
    base = f"http://{player.server_address[0]}:{player.server_address[1]}"
    for asset in ("0123456789abcdef01234567", published["rejected"], "not-an-asset"):
        response = httpx.get(f"{api.url}/assets/{asset}/thumbnail.jpg", params={"time": 1}, timeout=60)
        assert response.status_code == 404 and response.json()["error"]["code"] == "asset_not_found", response.text
        response = httpx.get(f"{base}/assets/{asset}/thumbnail.jpg", params={"time": 1}, timeout=60)
        assert response.status_code == 404 and response.json()["code"] == "asset_not_found", response.text
    # A player server restricted to other assets serves none of this one's thumbnails.
    from pixelflow.aws import s3_client

    other = make_server(published["settings"], port=0, s3=s3_client(), asset_ids=["0123456789abcdef01234567"])
    serve_in_thread(other)
    try:
        response = httpx.get(f"http://{other.server_address[0]}:{other.server_address[1]}/assets/"
                             f"{published['ready']}/thumbnail.jpg", timeout=60)
        assert response.status_code == 404 and response.json()["code"] == "asset_not_found"
    finally:
        other.shutdown()
        other.server_close()


def test_the_player_server_serves_thumbnails(player, published, tmp_path):
    base = f"http://{player.server_address[0]}:{player.server_address[1]}"
    response = httpx.get(f"{base}/assets/{published['ready']}/thumbnail.webp", params={"time": "5", "width": "480"},
                         timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    image = _save(tmp_path, response, "player.webp")
    assert _size(image) == (480, 270)
    assert tile_psnr(image, (0, 0, 480, 270), published["clip"], 5.0) > tile_psnr(
        image, (0, 0, 480, 270), published["clip"], 2.0) + 5


def test_beyond_the_concurrent_ffmpeg_processes_is_503_with_retry_after(api, player, published):
    asset = published["ready"]
    base = f"http://{player.server_address[0]}:{player.server_address[1]}"
    with httpx.Client(base_url=api.url, timeout=60) as anonymous:
        cached = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "0.5", "width": "100"})
        assert cached.status_code == 200
        services = [_service(api)]
        httpx.get(f"{base}/assets/{asset}/thumbnail.jpg", params={"time": "0.5", "width": "100"}, timeout=60)
        services.append(player.thumbnails)
        held = 0
        try:
            for service in services:  # every slot taken, as by long-running thumbnails
                for _ in range(service.settings.thumbnail_concurrency):
                    assert service.slots.acquire(blocking=False)
                    held += 1
            busy = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "1.75", "width": "100"})
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "thumbnails_busy"
            assert busy.headers["retry-after"] == "1"
            busy = httpx.get(f"{base}/assets/{asset}/thumbnail.jpg", params={"time": "1.75", "width": "100"}, timeout=60)
            assert busy.status_code == 503 and busy.json()["code"] == "thumbnails_busy"
            assert busy.headers["retry-after"] == "1"
            # A cached picture needs no FFmpeg, so it is still served.
            again = anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "0.5", "width": "100"})
            assert again.status_code == 200 and again.content == cached.content
        finally:
            for service in services:
                for _ in range(service.settings.thumbnail_concurrency):
                    service.slots.release()
        assert anonymous.get(f"/assets/{asset}/thumbnail.jpg", params={"time": "1.75", "width": "100"}).status_code == 200


def test_without_ffmpeg_thumbnails_are_501(published, monkeypatch, tmp_path):
    """Where FFmpeg is not installed (the API's Lambda function), thumbnails are
    ``thumbnails_unavailable`` and the rest of playback is unchanged."""
    api = start_api(PixelFlowSettings(**{**published["settings"].model_dump(), "thumbnail_cache_bytes": 0}))
    try:
        monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg on the PATH
        with httpx.Client(base_url=api.url, timeout=60) as anonymous:
            response = anonymous.get(f"/assets/{published['ready']}/thumbnail.jpg", params={"time": 1})
            assert response.status_code == 501 and response.json()["error"]["code"] == "thumbnails_unavailable"
            assert anonymous.get(f"/assets/{published['ready']}/master.m3u8").status_code == 200
    finally:
        api.stop()
