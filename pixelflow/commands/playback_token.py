"""``pixelflow playback-token ASSET_ID [--expires-in S] [--viewer-id V]``: a playback token of a
signed asset, made with the signing key itself (as ``POST /v1/assets/{id}/playback-tokens``
does), and the URLs that play with it.

The key is ``PIXELFLOW_PLAYBACK_SIGNING_KEY`` (or its Secrets Manager secret), else the one the
local stack keeps in ``<home>/playback-key``. The asset's policy is read from the records table:
a public asset needs no token (exit 1, ``asset_not_signed``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from pixelflow.commands._common import EXIT_OK, EXIT_USAGE, add_json_flag, emit, fail
from pixelflow.errors import ErrorCode, PixelFlowError

#: Where the local stack keeps its signing key (``pixelflow stack up --home``).
KEY_FILE = "playback-key"
#: Where the local stack's API serves playback files.
LOCAL_PLAYBACK_BASE = "http://127.0.0.1:8000/assets/"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "playback-token", help="make a playback token of a signed asset and print the URLs that play with it",
        description="Sign a short-lived playback token (JWT, HS256) of a signed asset with the playback signing key "
                    "(PIXELFLOW_PLAYBACK_SIGNING_KEY, its secret, or the local stack's <home>/playback-key) and print "
                    "it with the master playlist and player URLs that carry it.")
    parser.add_argument("asset_id", metavar="ASSET_ID", help="a signed asset (24 hex characters)")
    parser.add_argument("--expires-in", type=int, default=None, metavar="SECONDS",
                        help="lifetime (default PIXELFLOW_PLAYBACK_TOKEN_DEFAULT_SECONDS, 3600)")
    parser.add_argument("--viewer-id", default=None, help="the viewer the token is for (carried in the token)")
    parser.add_argument("--home", type=Path, default=Path(".pixelflow"),
                        help="the local stack's state directory, for its signing key (default: .pixelflow)")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def with_stack_key(settings, home: Path):
    """``settings`` with the local stack's kept signing key (``<home>/playback-key``) when they
    configure none."""
    kept = home / KEY_FILE
    if settings.playback_signing_key is None and not settings.playback_signing_key_secret_id and kept.exists():
        return settings.model_copy(update={"playback_signing_key": SecretStr(kept.read_text().strip())})
    return settings


def _api_assets_url(api_public_url: str | None, home: Path) -> str:
    """Where the API serves playback files: ``PIXELFLOW_API_PUBLIC_URL``, else the running local
    stack's API, else the stack's default port."""
    from pixelflow.local.stack.state import running_state

    url = api_public_url or (running_state(home.resolve() / "stack.json") or {}).get("http_api_url")
    return url.rstrip("/") + "/assets/" if url else LOCAL_PLAYBACK_BASE


def run(args: argparse.Namespace) -> int:
    from pixelflow.ops.assets import is_asset_id
    from pixelflow.ops.playback import PlaybackGate, playback_urls, signed_playback_base
    from pixelflow.records import SIGNED
    from pixelflow.settings import PixelFlowSettings

    asset_id = args.asset_id.strip().lower()
    if not is_asset_id(asset_id):
        fail(args, PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"{args.asset_id!r} is not an asset id."))
        return EXIT_USAGE
    settings = with_stack_key(PixelFlowSettings(), args.home)
    try:
        gate = PlaybackGate.from_settings(settings)
        record = gate.records.get_asset(asset_id)
        if record is None or record.get("deleted_at"):
            raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"No asset {asset_id} in the records "
                                 f"({settings.records_table}).")
        if gate.policy_of(record) != SIGNED:
            raise PixelFlowError(ErrorCode.ASSET_NOT_SIGNED, f"Asset {asset_id} is public: it plays without a token.")
        issued = gate.issue(asset_id, args.expires_in, args.viewer_id)
    except PixelFlowError as error:
        return fail(args, error)
    except (ClientError, BotoCoreError) as exc:
        return fail(args, PixelFlowError(ErrorCode.RECORDS_UNAVAILABLE, f"The records table did not answer: "
                                         f"{type(exc).__name__}."))
    public_base = settings.playback_base_url or _api_assets_url(settings.api_public_url, args.home)
    base = signed_playback_base(public_base, issued["token"])
    urls = playback_urls(base, asset_id, record)
    data = {"asset_id": asset_id, **issued, "playback": {"hls": urls["hls"], "poster": urls["poster"]}}
    emit(args, data, "\n".join([
        f"token      {issued['token']}",
        f"expires    {issued['expires_at']}",
        f"playlist   {data['playback']['hls']}",
        f"player     pixelflow play {asset_id} --token {issued['token']}",
    ]))
    return EXIT_OK
