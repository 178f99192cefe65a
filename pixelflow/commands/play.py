"""``pixelflow play ASSET_ID [--port N] [--no-open]``: watch an asset in the browser.

Starts the local player server (:mod:`pixelflow.player.server`) on loopback. It serves the
player page and streams the asset's files from the (private) output bucket; nothing is made
public. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
import webbrowser

from pixelflow.ops import assets
from pixelflow.commands._common import EXIT_OK, EXIT_USAGE
from pixelflow.commands.playback_token import with_stack_key
from pixelflow.player.server import make_server, server_url
from pixelflow.settings import PixelFlowSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "play", help="play an asset in the browser through a local player",
        description="Serve the player page and the asset's files (proxied from the private output bucket) "
                    "on 127.0.0.1 and open it in the browser. Ctrl-C stops it.",
    )
    parser.add_argument("asset_id", metavar="ASSET_ID", help="the asset to play (24 hex characters)")
    parser.add_argument("--port", type=int, default=0, metavar="N", help="port to listen on (default: a free one)")
    parser.add_argument("--token", default=None, metavar="TOKEN",
                        help="a playback token of a signed asset (pixelflow playback-token ASSET_ID)")
    parser.add_argument("--home", type=Path, default=Path(".pixelflow"),
                        help="the local stack's state directory, for its playback signing key (default: .pixelflow)")
    parser.add_argument("--no-open", dest="open", action="store_false", help="only print the URL, do not open a browser")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    asset_id = args.asset_id.strip().lower()
    if not assets.is_asset_id(asset_id):
        print(f"error [invalid_asset_id]: {args.asset_id!r} is not an asset id (24 hex characters).", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = with_stack_key(PixelFlowSettings(), args.home)
        server = make_server(settings, "127.0.0.1", args.port, asset_ids=[asset_id], default_asset=asset_id)
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    url = server_url(server, asset_id) + (f"&token={args.token}" if args.token else "")
    print(url, flush=True)
    print("Serving the player; press Ctrl-C to stop.", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK
