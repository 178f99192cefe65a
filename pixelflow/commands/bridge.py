"""``pixelflow bridge``: forward S3 upload notifications from SQS to Prefect as events."""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bridge",
        help="forward S3 upload notifications (SQS) to Prefect as pixelflow.upload.created events",
        description=(
            "Long-poll the upload queue (PIXELFLOW_QUEUE_NAME) and post one pixelflow.upload.created "
            "event per created object to the Prefect server at PREFECT_API_URL. A message is deleted "
            "only once Prefect accepted its events. Stops cleanly on SIGTERM/SIGINT."
        ),
    )
    parser.add_argument("--queue", help="queue name (default: PIXELFLOW_QUEUE_NAME)")
    parser.add_argument("--wait-seconds", type=int, help="SQS long-poll wait (default: PIXELFLOW_BRIDGE_WAIT_SECONDS)")
    parser.add_argument(
        "--visibility-timeout", type=int, help="seconds a received message stays hidden (default: PIXELFLOW_BRIDGE_VISIBILITY_TIMEOUT)"
    )
    parser.add_argument("--drain", action="store_true", help="exit once the queue is empty instead of polling forever")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelflow.pipeline.bridge import Bridge
    from pixelflow.settings import PixelFlowSettings

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    overrides = {}
    if args.queue:
        overrides["queue_name"] = args.queue
    if args.wait_seconds is not None:
        overrides["bridge_wait_seconds"] = args.wait_seconds
    if args.visibility_timeout is not None:
        overrides["bridge_visibility_timeout"] = args.visibility_timeout
    settings = PixelFlowSettings(**overrides)
    try:
        bridge = Bridge(settings)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bridge.install_signal_handlers()
    try:
        bridge.run(max_idle_polls=1 if args.drain else None)
    finally:
        bridge.close()
    return 0
