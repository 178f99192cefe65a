"""``pixelflow api [--host H] [--port P]``: serve the HTTP API (uploads, assets, the upload page).

Tokens come from ``PIXELFLOW_API_TOKENS`` (and ``PIXELFLOW_API_TOKENS_SECRET_ID``); with
``--create-table`` the records table is created first when missing (the local stack does this
itself). The OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pixelflow.commands._common import EXIT_USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api", help="serve the HTTP API: direct uploads, assets, deletion, the upload page",
        description="Serve PixelFlow's HTTP API (docs at /docs, schema at /openapi.json, upload page at /upload). "
                    "Requests to /v1 need Authorization: Bearer <a token of PIXELFLOW_API_TOKENS>.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--create-table", action="store_true",
                        help="create the records table (PIXELFLOW_RECORDS_TABLE) when it does not exist")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pixelflow.ops.api import create_app
    from pixelflow.records import Records
    from pixelflow.settings import PixelFlowSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("botocore", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = PixelFlowSettings()
    if args.create_table:
        Records.from_settings(settings).ensure_table()
    app = create_app(settings)
    if not app.state.tokens:
        print("warning: no API token configured (PIXELFLOW_API_TOKENS): every /v1 request is refused",
              file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
