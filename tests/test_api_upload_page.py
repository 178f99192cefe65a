"""The upload page in Chromium (Playwright) against the API and moto's S3 over HTTP: a picked file
goes straight to S3 through the presigned URLs, becomes a ready asset that plays; an upload
interrupted after some parts resumes after a reload and sends only the rest."""

from __future__ import annotations

import re

import pytest

from pixelflow.core.upload import Upload
from tests.api_helpers import TOKEN, MiB, env_for, make_settings, start_api
from tests.conftest import make_clip

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings(upload_part_bytes=5 * MiB, multipart_threshold_bytes=5 * MiB))
    yield api
    api.stop()


@pytest.fixture
def page(browser, api):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{api.url}/upload#token={TOKEN}")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _transcode_when_uploaded(page, api, monkeypatch) -> str:
    """Run the transcode flow on the page's upload once it is an object (what the event chain
    does on the stack); returns the asset id."""
    from flows.transcode import transcode

    page.wait_for_selector("body[data-state=preparing]", timeout=60_000)
    upload_id = page.evaluate("JSON.parse(localStorage.getItem('pixelflow.pending')).upload")
    record = api.records.get_upload(upload_id)
    assert record["status"] == "asset_created"
    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    manifest = transcode(bucket=api.settings.upload_bucket, key=record["key"], etag=record["etag"])
    upload = Upload(api.settings.upload_bucket, record["key"], record["etag"])
    assert manifest["asset_id"] == record["asset_id"] == upload.asset_id
    return upload.asset_id


def _plays(page) -> None:
    page.wait_for_selector("body[data-state=playing]", timeout=60_000)
    page.wait_for_function("document.getElementById('video').currentTime > 1", timeout=30_000)
    assert page.eval_on_selector("#video", "v => v.videoHeight") == 360


@pytest.mark.timeout(300)
def test_a_picked_file_becomes_a_ready_playing_asset(page, api, media_dir, monkeypatch, prefect_server):
    clip = make_clip(media_dir / "page-small.mp4", seconds=3, size="640x360")
    s3_puts: list[str] = []
    page.on("request", lambda r: s3_puts.append(r.url) if r.method == "PUT" else None)
    page.set_input_files("#file", str(clip))
    asset_id = _transcode_when_uploaded(page, api, monkeypatch)
    _plays(page)
    assert len(s3_puts) == 1 and "X-Amz-Signature=" in s3_puts[0] and "partNumber" not in s3_puts[0]
    assert page.inner_text("#asset-id") == asset_id and "Ready" in page.inner_text("#status")


@pytest.mark.timeout(400)
def test_an_interrupted_upload_resumes_and_sends_only_the_rest(page, api, media_dir, monkeypatch, prefect_server):
    clip = make_clip(media_dir / "page-large.mp4", seconds=4, size="1280x720", extra_video_args=["-qp", "0"])
    assert clip.stat().st_size > 5 * MiB  # two parts of 5 MiB
    part_puts: list[int] = []

    def on_request(request):
        match = re.search(r"[?&]partNumber=(\d+)", request.url)
        if request.method == "PUT" and match:
            part_puts.append(int(match[1]))

    page.on("request", on_request)
    # The connection drops while part 2 is sent.
    page.route(re.compile(r".*[?&]partNumber=2(&.*)?$"), lambda route: route.abort("connectionreset"))
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("body[data-state=errored]")
    assert part_puts == [1, 2] and "resume" in page.inner_text("#status")
    upload_id = page.evaluate("JSON.parse(localStorage.getItem('pixelflow.pending')).upload")
    with api.client() as client:
        upload = client.get(f"/v1/uploads/{upload_id}").json()["data"]
    assert upload["status"] == "waiting" and [p["part_number"] for p in upload["parts_received"]] == [1]

    # Reload the page, pick the same file: only the rest is sent.
    page.unroute(re.compile(r".*[?&]partNumber=2(&.*)?$"))
    page.reload()
    assert "interrupted" in page.inner_text("#resume-hint")
    part_puts.clear()
    page.set_input_files("#file", str(clip))
    asset_id = _transcode_when_uploaded(page, api, monkeypatch)
    assert part_puts == [2]
    _plays(page)
    assert page.inner_text("#asset-id") == asset_id
    with api.client() as client:  # the same upload, resumed: not a second one
        assert client.get(f"/v1/uploads/{upload_id}").json()["data"]["asset_id"] == asset_id


@pytest.mark.timeout(300)
def test_a_signed_upload_plays_on_the_page_through_a_playback_token(browser, moto_server, media_dir, monkeypatch,
                                                                     prefect_server):
    """With PIXELFLOW_DEFAULT_PLAYBACK_POLICY=signed the page's uploads are signed assets: the page
    asks the API for a playback token and every playlist and segment it loads carries it."""
    api = start_api(make_settings(default_playback_policy="signed", playback_signing_key="page-key-" + "k" * 30))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        media: list[str] = []
        page.on("request", lambda r: media.append(r.url) if "/assets/" in r.url and "/v1/" not in r.url else None)
        page.goto(f"{api.url}/upload#token={TOKEN}")
        page.set_input_files("#file", str(make_clip(media_dir / "page-signed.mp4", seconds=3, size="640x360")))
        asset_id = _transcode_when_uploaded(page, api, monkeypatch)
        _plays(page)
        with api.client() as client:
            assert client.get(f"/v1/assets/{asset_id}").json()["data"]["playback_policy"] == "signed"
        assert any(url.endswith(".m4s") for url in media)
        assert all(re.search(rf"/t/[A-Za-z0-9_.-]+/assets/{asset_id}/", url) for url in media), media
    finally:
        context.close()
        api.stop()
