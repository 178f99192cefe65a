"""``pixelflow playback-token``: a token of a signed asset (its policy read from the records table
of the session's moto server) with the URLs that play with it; public, unknown and malformed
assets and absurd lifetimes are refused with their codes; the key is never printed."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from pixelflow.cli import main
from pixelflow.core.playback_token import verify_token
from pixelflow.records import READY, Records

pytestmark = pytest.mark.integration

KEY = "cli-playback-key-" + "p" * 24
SIGNED, PUBLIC = "d" * 24, "e" * 24


@pytest.fixture
def records(moto_server, monkeypatch):
    table = f"records-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PIXELFLOW_RECORDS_TABLE", table)
    monkeypatch.delenv("PIXELFLOW_PLAYBACK_BASE_URL", raising=False)
    records = Records(table)
    records.ensure_table()
    for asset in (SIGNED, PUBLIC):
        records.record_asset(asset, READY, {"progress": 100})
    records.set_playback_policy(SIGNED, "signed")
    return records


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_playback_token_signs_a_token_of_a_signed_asset(records, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELFLOW_PLAYBACK_SIGNING_KEY", KEY)
    monkeypatch.setenv("PIXELFLOW_API_PUBLIC_URL", "https://video.example.com/")
    code, out, err = cli(capsys, "playback-token", SIGNED, "--expires-in", "120", "--viewer-id", "v-9", "--json",
                         "--home", str(tmp_path))
    assert code == 0, err
    data = json.loads(out)
    claims = verify_token(data["token"], KEY.encode(), SIGNED, now=time.time())
    assert (claims.viewer_id, claims.expires_at - claims.issued_at, data["expires_in"]) == ("v-9", 120, 120)
    assert data["playback"]["hls"] == f"https://video.example.com/t/{data['token']}/assets/{SIGNED}/master.m3u8"
    code, out, _ = cli(capsys, "playback-token", SIGNED, "--home", str(tmp_path))
    assert code == 0 and f"pixelflow play {SIGNED} --token " in out and KEY not in out

    # Without a configured key it takes the local stack's (<home>/playback-key).
    monkeypatch.delenv("PIXELFLOW_PLAYBACK_SIGNING_KEY")
    code, out, err = cli(capsys, "playback-token", SIGNED, "--json", "--home", str(tmp_path))
    assert (code, json.loads(out)["code"]) == (1, "playback_not_configured")
    (tmp_path / "playback-key").write_text("stack-kept-key-" + "s" * 30 + "\n")
    code, out, err = cli(capsys, "playback-token", SIGNED, "--json", "--home", str(tmp_path))
    assert code == 0, err
    verify_token(json.loads(out)["token"], b"stack-kept-key-" + b"s" * 30, SIGNED, now=time.time())


def test_playback_token_refuses_what_it_cannot_sign(records, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELFLOW_PLAYBACK_SIGNING_KEY", KEY)
    for argv, exit_code, code in [
        ((PUBLIC,), 1, "asset_not_signed"),
        (("f" * 24,), 1, "asset_not_found"),
        (("not-an-asset",), 2, "asset_not_found"),
        ((SIGNED, "--expires-in", "0"), 1, "expiry_out_of_range"),
        ((SIGNED, "--expires-in", str(10**9)), 1, "expiry_out_of_range"),
        ((SIGNED, "--viewer-id", "x" * 300), 1, "invalid_request"),
    ]:
        status, out, err = cli(capsys, "playback-token", *argv, "--json", "--home", str(tmp_path))
        assert (status, json.loads(out)["code"]) == (exit_code, code), argv
        assert KEY not in out + err
    records.tombstone_asset(SIGNED)
    status, out, _ = cli(capsys, "playback-token", SIGNED, "--json", "--home", str(tmp_path))
    assert (status, json.loads(out)["code"]) == (1, "asset_not_found")


def test_play_with_a_token_plays_a_signed_asset_with_the_stacks_key(records, monkeypatch, tmp_path):
    """``pixelflow play ASSET --token T`` as a real process, with no key configured but the local
    stack's kept one: the signed asset's playlist is 403 without the token and 200 with it."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from pixelflow.aws import s3_client
    from pixelflow.core.playback_token import sign_token

    bucket = f"out-{uuid.uuid4().hex[:8]}"
    s3_client().create_bucket(Bucket=bucket)
    s3_client().put_object(Bucket=bucket, Key=f"assets/{SIGNED}/master.m3u8", Body=b"#EXTM3U\n")
    (tmp_path / "playback-key").write_text(KEY + "\n")
    now = int(time.time())
    token = sign_token(KEY.encode(), SIGNED, expires_at=now + 600, issued_at=now)
    env = {**os.environ, "PIXELFLOW_OUTPUT_BUCKET": bucket}
    env.pop("PIXELFLOW_PLAYBACK_SIGNING_KEY", None)
    process = subprocess.Popen([sys.executable, "-m", "pixelflow.cli", "play", SIGNED, "--token", token, "--no-open",
                                "--home", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        url = process.stdout.readline().strip()
        assert url.endswith(f"/?asset={SIGNED}&token={token}")
        base = url.split("/?")[0]
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/assets/{SIGNED}/master.m3u8", timeout=10)
        assert caught.value.code == 403 and json.loads(caught.value.read())["code"] == "playback_token_required"
        with urllib.request.urlopen(f"{base}/t/{token}/assets/{SIGNED}/master.m3u8", timeout=10) as response:
            assert response.status == 200 and response.read() == b"#EXTM3U\n"
    finally:
        process.terminate()
        process.wait(10)
