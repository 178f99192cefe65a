"""A signed asset in the player server (the code behind ``pixelflow play``) and the player page in
Chromium: its playlists, segments, poster and state are 403 with the reason's code without a
valid playback token, and it plays with one (``?token=``), the token travelling in the path of
every relative URL hls.js resolves. The asset is published by the real transcode flow; its policy
is in a records table of the session's moto server."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urljoin

import pytest

from pixelflow.core.playback_token import sign_token
from pixelflow.ops.playback import PlaybackGate
from pixelflow.player import make_server, serve_in_thread, server_url
from pixelflow.records import READY, Records
from tests.test_player import _get, _save_screenshot, _wait_time_past, library, page  # noqa: F401 - fixtures

KEY = b"player-signing-key-" + b"z" * 24


@pytest.fixture(scope="module")
def signed(library):
    """The library's ready asset made ``signed`` in a records table of its own, served by a player
    server that reads its policy there; the public player is the test_player module's."""
    settings = library["settings"].model_copy(update={"records_table": f"records-{uuid.uuid4().hex[:8]}"})
    records = Records.from_settings(settings)
    records.ensure_table()
    asset = library["ready"]
    records.record_asset(asset, READY, {"progress": 100})
    records.set_playback_policy(asset, "signed")
    server = make_server(settings, port=0, s3=library["s3"], gate=PlaybackGate(settings, records, KEY))
    serve_in_thread(server)
    yield {"server": server, "asset": asset, "records": records}
    server.shutdown()
    server.server_close()


def _token(asset: str, seconds: int = 600) -> str:
    now = int(time.time())
    return sign_token(KEY, asset, expires_at=now + seconds, issued_at=now)


@pytest.mark.integration
def test_a_signed_asset_is_403_without_a_valid_token_and_200_with_one(signed, library):
    base = server_url(signed["server"]).rstrip("/")
    asset = signed["asset"]
    files = ("master.m3u8", "720p/index.m3u8", "720p/init.mp4", "poster.jpg", "audio/index.m3u8")
    for name in files:
        status, _, body = _get(f"{base}/assets/{asset}/{name}")
        assert (status, json.loads(body)["code"]) == (403, "playback_token_required"), name
    status, _, body = _get(f"{base}/api/assets/{asset}")
    assert (status, json.loads(body)["code"]) == (403, "playback_token_required")

    token = _token(asset)
    master_url = f"{base}/t/{token}/assets/{asset}/master.m3u8"
    status, _, master = _get(master_url)
    assert status == 200 and b"720p/index.m3u8" in master
    media_url = urljoin(master_url, next(line for line in master.decode().splitlines() if line.endswith("720p/index.m3u8")))
    status, _, media = _get(media_url)
    segment = next(line for line in media.decode().splitlines() if line.endswith(".m4s"))
    status, headers, body = _get(urljoin(media_url, segment))
    assert status == 200 and len(body) > 1000 and "max-age" in headers["Cache-Control"]
    status, _, body = _get(f"{base}/api/assets/{asset}?token={token}")
    assert status == 200 and json.loads(body)["playback_policy"] == "signed"

    now = int(time.time())
    bad = {"playback_token_expired": sign_token(KEY, asset, expires_at=now - 1, issued_at=now - 600),
           "playback_token_wrong_asset": _token(library["rejected"]),
           "playback_token_invalid": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")}
    for code, bad_token in bad.items():
        for url in (f"{base}/t/{bad_token}/assets/{asset}/master.m3u8", f"{base}/api/assets/{asset}?token={bad_token}"):
            status, _, body = _get(url)
            assert (status, json.loads(body)["code"]) == (403, code), url


@pytest.mark.browser
def test_a_signed_asset_plays_in_chromium_with_a_token_only(page, signed):  # noqa: F811 - fixture
    server, asset = signed["server"], signed["asset"]
    token = _token(asset)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server_url(server, asset) + f"&token={token}")
    page.wait_for_selector("body[data-state=playing]")
    _wait_time_past(page, 2.0)
    assert page.eval_on_selector("#video", "v => !v.paused && v.videoHeight > 0")
    media = [url for url in requests if "/assets/" in url and "/api/assets/" not in url]
    assert any(url.endswith(".m4s") for url in media) and any(url.endswith("/audio/index.m3u8") for url in media)
    assert all(f"/t/{token}/assets/{asset}/" in url for url in media), media  # every relative URL kept it
    assert page.locator("#renditions button .name").all_inner_texts() == ["Auto", "720p", "360p"]
    _save_screenshot(page, "player-signed.png")


@pytest.mark.browser
@pytest.mark.parametrize("token,code,title", [
    (None, "playback_token_required", "This video is private"),
    ("expired", "playback_token_expired", "The playback token has expired"),
    ("other", "playback_token_wrong_asset", "The playback token is for another video"),
])
def test_the_player_says_why_a_signed_asset_does_not_play(page, signed, library, token, code, title):  # noqa: F811
    asset = signed["asset"]
    now = int(time.time())
    given = {None: None, "expired": sign_token(KEY, asset, expires_at=now - 1, issued_at=now - 600),
             "other": _token(library["rejected"])}[token]
    page.goto(server_url(signed["server"], asset) + (f"&token={given}" if given else ""))
    page.wait_for_selector("body[data-state=error]")
    assert (page.inner_text("#message-code"), page.inner_text("#message-title")) == (code, title)
    assert page.eval_on_selector("#video", "v => !v.currentSrc")
    if token == "expired":
        _save_screenshot(page, "player-token-expired.png")
