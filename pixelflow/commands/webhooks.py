"""``pixelflow webhooks``: signed webhook endpoints, their deliveries, and the dispatcher.

``create URL`` (prints the secret, once), ``list``, ``delete ID``, ``deliveries`` (recent ones
with their status codes), ``resend DELIVERY_ID``, and ``dispatch``, the long-running service
that delivers them (the local stack runs it next to the bridge).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pixelflow.commands._common import EXIT_OK, add_json_flag, emit, fail
from pixelflow.errors import PixelFlowError


def _endpoints():
    from pixelflow.ops.webhook_endpoints import Endpoints
    from pixelflow.outbox import Outbox
    from pixelflow.settings import PixelFlowSettings

    return Endpoints(Outbox(PixelFlowSettings()))


def run_create(args: argparse.Namespace) -> int:
    try:
        created = _endpoints().create(args.url, args.description)
    except PixelFlowError as error:
        return fail(args, error)
    emit(args, created, f"endpoint  {created['id']}\nurl       {created['url']}\nsecret    {created['secret']}\n"
                        "(the secret is shown this once: verify deliveries with pixelflow.webhooks.verify)")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    found = _endpoints().list()
    lines = [f"{'ENDPOINT':<24}  {'CREATED (UTC)':<19}  URL"]
    lines += [f"{e['id']:<24}  {(e['created_at'] or '')[:19].replace('T', ' '):<19}  {e['url']}" for e in found]
    emit(args, found, "\n".join(lines))
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    try:
        _endpoints().delete(args.id)
    except PixelFlowError as error:
        return fail(args, error)
    emit(args, {"deleted": args.id}, f"deleted endpoint {args.id}")
    return EXIT_OK


def _delivery_line(d: dict) -> str:
    codes = ",".join(str(a.get("status_code") or a.get("error", "?").split(":")[0]) for a in d["attempts"]) or "-"
    return f"{d['id']:<61}  {d['type']:<26}  {d['status']:<9}  {codes}"


def run_deliveries(args: argparse.Namespace) -> int:
    try:
        found = _endpoints().deliveries(args.limit, args.endpoint)
    except PixelFlowError as error:
        return fail(args, error)
    lines = [f"{'DELIVERY':<61}  {'TYPE':<26}  {'STATUS':<9}  ATTEMPTS (status codes)"] + [_delivery_line(d) for d in found]
    emit(args, found, "\n".join(lines))
    return EXIT_OK


def run_resend(args: argparse.Namespace) -> int:
    try:
        resent = _endpoints().resend(args.id)
    except PixelFlowError as error:
        return fail(args, error)
    emit(args, resent, f"queued again: {resent['id']} ({resent['type']})")
    return EXIT_OK


def run_dispatch(args: argparse.Namespace) -> int:
    from pixelflow.ops.webhook_dispatch import Dispatcher
    from pixelflow.settings import PixelFlowSettings

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("botocore", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    dispatcher = Dispatcher(PixelFlowSettings())
    dispatcher.install_signal_handlers()
    dispatcher.run(max_idle_polls=1 if args.drain else None)
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "webhooks", help="signed webhook endpoints, their deliveries, and the dispatcher",
        description="Register endpoints that receive signed events (video.asset.ready, ...), see recent deliveries "
                    "with their status codes, resend one, or run the dispatcher. See docs/webhooks.md.")
    commands = parser.add_subparsers(dest="webhooks_command", metavar="COMMAND", required=True)

    create = commands.add_parser("create", help="register an endpoint; prints its secret (once)")
    create.add_argument("url", help="https:// URL events are POSTed to")
    create.add_argument("--description", help="a note for you")
    add_json_flag(create)
    create.set_defaults(func=run_create)

    listing = commands.add_parser("list", help="the endpoints, oldest first")
    add_json_flag(listing)
    listing.set_defaults(func=run_list)

    delete = commands.add_parser("delete", help="remove an endpoint (its pending deliveries are cancelled)")
    delete.add_argument("id")
    add_json_flag(delete)
    delete.set_defaults(func=run_delete)

    deliveries = commands.add_parser("deliveries", help="recent deliveries with each attempt's status code")
    deliveries.add_argument("--limit", type=int, default=25, help="how many (default 25)")
    deliveries.add_argument("--endpoint", help="only this endpoint's")
    add_json_flag(deliveries)
    deliveries.set_defaults(func=run_deliveries)

    resend = commands.add_parser("resend", help="deliver a failed (or delivered) event again, same event id")
    resend.add_argument("id", help="the delivery id (from pixelflow webhooks deliveries)")
    add_json_flag(resend)
    resend.set_defaults(func=run_resend)

    dispatch = commands.add_parser("dispatch", help="deliver queued events (a long-running service)")
    dispatch.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    dispatch.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    dispatch.set_defaults(func=run_dispatch)
