"""The player page in a real browser (Debian's chromium driven by Playwright) against assets in
the session's moto S3, served by the player server (the code behind ``pixelflow play``)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from pixelflow.player import make_server, serve_in_thread, server_url
from tests.conftest import ARTIFACTS, ROOT
from tests.player_helpers import fresh_buckets, run_flow, shared_library, short_clip, upload

SCREENSHOTS = ROOT / "docs" / "screenshots"


def _save_screenshot(page, name: str) -> None:
    """Screenshots go to tests/_artifacts; PIXELFLOW_UPDATE_SCREENSHOTS=1 also refreshes docs/screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("PIXELFLOW_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / name, SCREENSHOTS / name)


@pytest.fixture(scope="module")
def library(moto_server, prefect_server, media_dir):
    """One asset published by the real transcode flow (360p + 720p + audio group) and one
    upload it rejected (``not_media``)."""
    return shared_library(media_dir)


@pytest.fixture(scope="module")
def player(library):
    server = make_server(library["settings"], port=0, s3=library["s3"])
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 740})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _wait_time_past(page, seconds: float) -> None:
    page.wait_for_function(f"document.getElementById('video').currentTime > {seconds}", timeout=20_000)


# --- browser tests ---------------------------------------------------------------------------

@pytest.mark.browser
def test_browser_plays_h264_aac_through_mse(browser):
    page = browser.new_page()
    try:
        supported = page.evaluate("""() => [
            MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"'),
            MediaSource.isTypeSupported('video/mp4; codecs="avc1.4d401f"'),
            MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"')]""")
    finally:
        page.close()
    assert supported == [True, True, True], "this chromium lacks H.264/AAC in Media Source Extensions"


@pytest.mark.browser
def test_player_plays_asset_and_lists_renditions(page, player, library):
    asset = library["ready"]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server_url(player, asset))

    page.wait_for_selector("body[data-state=playing]")
    _wait_time_past(page, 2.0)
    assert page.eval_on_selector("#video", "v => !v.paused && v.readyState >= 3 && v.videoHeight > 0")

    # The poster is shown while loading, served through the proxy.
    poster = page.eval_on_selector("#video", "v => v.poster")
    assert poster.endswith(f"/assets/{asset}/{library['manifest']['poster']}")
    # Every rendition of the manifest is offered, tallest first, plus Auto (selected).
    names = page.locator("#renditions button .name").all_inner_texts()
    assert names == ["Auto", "720p", "360p"]
    labels = page.locator("#renditions button").all_inner_texts()
    assert "1280×720" in labels[1] and "640×360" in labels[2]
    assert page.get_attribute("#renditions button[data-level='-1']", "aria-pressed") == "true"
    assert "Ready" in page.inner_text("#status") and "2 renditions" in page.inner_text("#status")
    # The MP4 download of the highest rung is offered, served with the name it is saved under.
    link = page.locator("#downloads a")
    assert link.inner_text().startswith("Download 720p MP4")
    status, headers, body = _get(link.evaluate("a => a.href"))
    assert status == 200 and headers["Content-Type"] == "video/mp4" and body[4:8] == b"ftyp"
    assert headers["Content-Disposition"].startswith('attachment; filename="talk-720p.mp4"')
    # Everything came from the local server: hls.js is vendored, no CDN, no direct S3.
    base = server_url(player)
    foreign = [url for url in requests if not url.startswith((base, "blob:", "data:"))]
    assert requests and not foreign, foreign
    assert any(url.endswith("/audio/index.m3u8") for url in requests)
    _save_screenshot(page, "player.png")


@pytest.mark.browser
def test_seek_bar_previews_come_from_the_storyboard_and_seek(page, player, library):
    # The 8 s talk has a tile every 5 s: 0-5 s on the sheet's first tile, 5-8 s on its second.
    asset = library["ready"]
    page.goto(server_url(player, asset))
    page.wait_for_selector("body[data-state=playing]")
    bar = page.locator("#timeline")
    bar.wait_for(state="visible")
    box = bar.bounding_box()
    middle = box["y"] + box["height"] / 2

    with page.expect_response(lambda r: r.url.endswith(f"/assets/{asset}/{library['manifest']['storyboard']['image']}")) as sheet:
        page.mouse.move(box["x"] + box["width"] * 0.1, middle)
    assert sheet.value.status == 200 and sheet.value.headers["content-type"] == "image/jpeg"
    assert page.locator("#preview").is_visible()
    assert page.get_attribute("#preview", "data-tile") == "0,0,160,90"
    assert page.inner_text("#preview span") == "0:00"
    page.mouse.move(box["x"] + box["width"] * 0.75, middle)
    assert page.get_attribute("#preview", "data-tile") == "160,0,160,90"
    assert page.inner_text("#preview span") == "0:06"
    style = page.get_attribute("#preview", "style")
    assert f"/assets/{asset}/{library['manifest']['storyboard']['image']}" in style and "-160px 0px" in style.replace("-0px", "0px")

    page.mouse.click(box["x"] + box["width"] * 0.75, middle)
    page.wait_for_function("Math.abs(document.getElementById('video').currentTime - 6) < 0.6")
    _save_screenshot(page, "player-storyboard.png")
    page.mouse.move(0, 0)
    assert page.locator("#preview").is_hidden()


_SHOWN_CUE = """(() => {
  const v = document.getElementById("video");
  for (const track of v.textTracks) {
    if (track.mode !== "showing" || !track.activeCues) continue;
    for (const cue of track.activeCues) return {text: cue.text, lang: track.language, time: v.currentTime};
  }
  return null;
})()"""


@pytest.mark.browser
def test_sidecar_captions_are_shown_in_time_and_can_be_turned_off(page, player, library):
    # The library talk was uploaded with videos/talk.en.vtt: 0.5-3 s "Hello from PixelFlow",
    # 5-7.5 s "Second caption". English is the default, shown from the start.
    page.goto(server_url(player, library["ready"]))
    page.wait_for_selector("body[data-state=playing]")
    page.wait_for_selector("#captions button[data-lang='en']")
    assert page.locator("#captions button").all_inner_texts() == ["Off", "English"]
    assert page.get_attribute("#captions button[data-lang='en']", "aria-pressed") == "true"
    first = page.wait_for_function(_SHOWN_CUE).json_value()
    assert first["text"] == "Hello from PixelFlow" and first["lang"] == "en"
    assert 0.5 - 0.1 <= first["time"] <= 3.0 + 0.1  # on the video's timeline (X-TIMESTAMP-MAP)

    page.eval_on_selector("#video", "v => { v.currentTime = 5.5; }")
    second = page.wait_for_function(f"(() => {{ const c = {_SHOWN_CUE}; return c && c.text === 'Second caption' && c; }})()")
    assert 5.0 - 0.1 <= second.json_value()["time"] <= 7.5 + 0.1

    page.click("#captions button[data-track='-1']")  # Off: no track shows anything
    page.wait_for_function("[...document.getElementById('video').textTracks].every(t => t.mode !== 'showing')")
    assert page.get_attribute("#captions button[data-track='-1']", "aria-pressed") == "true"
    assert page.evaluate(_SHOWN_CUE) is None
    page.click("#captions button[data-lang='en']")  # and back on
    page.eval_on_selector("#video", "v => { v.currentTime = 5.5; v.play(); }")
    assert page.wait_for_function(_SHOWN_CUE).json_value()["text"] == "Second caption"


@pytest.mark.browser
def test_forcing_each_rendition_plays_it(page, player, library):
    page.goto(server_url(player, library["ready"]))
    page.wait_for_selector("body[data-state=playing]")
    for rendition in sorted(library["manifest"]["renditions"], key=lambda r: r["height"]):
        height = rendition["height"]
        page.click(f"#renditions button[data-height='{height}']")
        assert page.get_attribute(f"#renditions button[data-height='{height}']", "aria-pressed") == "true"
        page.wait_for_function(f"document.getElementById('video').videoHeight === {height}")
        start = page.eval_on_selector("#video", "v => v.currentTime")
        page.wait_for_function(
            f"(() => {{ const v = document.getElementById('video');"
            f" return v.videoHeight === {height} && !v.paused && (v.currentTime > {start} + 0.5 || v.ended); }})()")
        assert page.get_attribute("#now-playing", "data-height") == str(height)
    page.click("#renditions button[data-level='-1']")
    assert page.get_attribute("#renditions button[data-level='-1']", "aria-pressed") == "true"


@pytest.mark.browser
def test_rejected_asset_shows_its_error(page, player, library):
    page.goto(server_url(player, library["rejected"]))
    page.wait_for_selector("body[data-state=error]")
    assert page.is_visible("#message")
    assert page.inner_text("#message-code") == "not_media"
    assert page.inner_text("#message-title") == "This upload was rejected"
    assert page.inner_text("#message-text") == library["error"].message
    assert page.eval_on_selector("#video", "v => !v.poster && !v.currentSrc")
    _save_screenshot(page, "player-rejected.png")


@pytest.mark.browser
def test_unknown_asset_shows_not_found(page, player):
    page.goto(server_url(player, "0" * 24))
    page.wait_for_selector("body[data-state=error]")
    assert page.inner_text("#message-code") == "asset_not_found"
    assert page.inner_text("#message-title") == "Asset not found"


@pytest.mark.browser
def test_processing_asset_starts_playing_once_published(page, moto_server, prefect_server, media_dir):
    """An upload still processing shows its state; the page starts playback once the flow publishes it."""
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        asset, etag = upload(settings, short_clip(media_dir), "videos/fresh.mp4")
        server = make_server(settings, port=0, asset_ids=[asset])
        serve_in_thread(server)
        try:
            page.goto(server_url(server, asset))
            page.wait_for_selector("body[data-state=processing]")
            assert page.inner_text("#status").startswith("Processing")
            assert isinstance(run_flow(settings, "videos/fresh.mp4", etag), dict)
            page.wait_for_selector("body[data-state=playing]")
            page.wait_for_function("document.getElementById('video').videoHeight === 360")
            assert page.locator("#renditions button .name").all_inner_texts() == ["Auto", "360p"]
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.browser
def test_an_audio_only_asset_plays(page, moto_server, prefect_server, media_dir):
    """An MP3 upload is an audio-only asset: the page plays it (no poster, no renditions to pick)."""
    import subprocess

    source = media_dir / "memo.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=330:duration=6",
                    "-c:a", "libmp3lame", str(source)], check=True)
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        asset, etag = upload(settings, source, "audio/memo.mp3")
        assert isinstance(run_flow(settings, "audio/memo.mp3", etag), dict)
        server = make_server(settings, port=0, asset_ids=[asset])
        serve_in_thread(server)
        try:
            page.goto(server_url(server, asset))
            page.wait_for_selector("body[data-state=playing]")
            _wait_time_past(page, 1.0)
            assert page.eval_on_selector("#video", "v => !v.paused && v.videoHeight === 0 && !v.poster")
            assert "audio only" in page.inner_text("#status")
            assert page.locator("#downloads a").inner_text().startswith("Download audio M4A")
        finally:
            server.shutdown()
            server.server_close()


# --- the proxy without a browser -------------------------------------------------------------

def _get(url: str, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.integration
def test_proxy_serves_only_asset_files(player, library):
    base = server_url(player).rstrip("/")
    asset = library["ready"]
    status, headers, body = _get(f"{base}/assets/{asset}/master.m3u8")
    assert status == 200 and headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert b'TYPE=AUDIO,GROUP-ID="audio"' in body and b"720p/index.m3u8" in body
    status, headers, body = _get(f"{base}/assets/{asset}/{library['manifest']['folder']}/720p/init.mp4", headers={"Range": "bytes=0-7"})
    assert status == 206 and len(body) == 8 and body[4:8] == b"ftyp"
    status, _, body = _get(f"{base}/api/assets/{asset}")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _, body = _get(f"{base}/api/assets/{library['rejected']}")
    assert json.loads(body)["error"]["code"] == "not_media"

    refused = [
        f"/assets/{asset}/../../{asset}/manifest.json",        # normalised by nobody: refused
        f"/assets/{asset}/%2e%2e/manifest.json",
        f"/assets/{asset}/..%2fmanifest.json",
        f"/assets/{asset}/manifest.json",                      # the page reads /api/assets instead
        f"/assets/{asset}/a/b/c/d/e.m3u8",                     # deeper than <attempt>/subtitles/<language>/<file>
        f"/assets/{asset}/master.m3u8.py",                     # unknown file type
        f"/assets/{asset.upper()}/master.m3u8",                # not lowercase hex
        "/assets/notanassetid/master.m3u8",
        "/static/../server.py",
        f"/api/assets/..%2f..%2f{asset}",
    ]
    for path in refused:
        status, _, _ = _get(base + path)
        assert status == 404, path
    # The upload bucket (sources, quarantine) is never reachable through the proxy.
    status, _, _ = _get(f"{base}/assets/{library['rejected']}/error.json")
    assert status == 404
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        status, headers, _ = _get(f"{base}/assets/{asset}/master.m3u8", method=method)
        assert status == 405 and headers["Allow"] == "GET"
    status, headers, body = _get(f"{base}/static/hls.min.js")
    assert status == 200 and b"Hls" in body[-400:]


@pytest.mark.integration
def test_server_limited_to_one_asset(library):
    server = make_server(library["settings"], port=0, s3=library["s3"], asset_ids=[library["ready"]],
                         default_asset=library["ready"])
    serve_in_thread(server)
    try:
        base = server_url(server).rstrip("/")
        assert _get(f"{base}/assets/{library['ready']}/{library['manifest']['poster']}")[0] == 200
        assert _get(f"{base}/api/assets/{library['rejected']}")[0] == 404
        status, _, body = _get(f"{base}/")  # redirected to the default asset
        assert status == 200 and b'<video id="video"' in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_prefect_ui_shows_the_transcode_run(page, prefect_server, library):
    """The Prefect UI (served by the local Prefect server, offline) shows the run by its name as
    Completed, and among its task runs one per rendition for the encode and for the upload, each
    Completed."""
    from playwright.sync_api import expect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    flow_run_id = library["manifest"]["flow_run_id"]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    ui = prefect_server.removesuffix("/api")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}")

    expect(page.get_by_text("transcode: videos/talk.mp4", exact=True).first).to_be_visible(timeout=20_000)
    expect(page.locator(".state-badge").first).to_have_text("Completed")  # the run's state, in its header
    expect(page.get_by_text(f"{len(task_runs)} Task runs", exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    _save_screenshot(page, "prefect-run.png")

    page.get_by_text("Task Runs", exact=True).first.click()
    expect(page.locator(".task-run-list-item").first).to_be_visible(timeout=20_000)
    expect(page.get_by_text(f"{len(task_runs)} Completed").first).to_be_visible()  # "15 Task runs (15 Completed)"
    shown = {}
    for row in page.locator(".task-run-list-item").all():
        shown[row.locator(".state-list-item__name").inner_text().strip()] = row.locator(".state-badge").inner_text().strip()
    for rendition in library["manifest"]["renditions"]:
        for task in ("transcode", "upload"):
            assert shown.get(f"{task}-{rendition['name']}") == "Completed", (task, rendition["name"], shown)
    assert set(shown.values()) == {"Completed"}, shown
    assert set(shown) <= {run.name for run in task_runs}
