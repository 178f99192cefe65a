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
