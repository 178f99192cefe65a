"""``pixelflow notify install|remove``: a webhook called on asset events, as Prefect automations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixelflow.commands._common import EXIT_OK, EXIT_USAGE, add_json_flag, emit


def _usage(message: str) -> int:
    print(f"pixelflow notify: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_install(args: argparse.Namespace) -> int:
    from pixelflow.ops import notifications

    try:
        kinds = notifications.parse_events(args.events)
        headers = dict(notifications.parse_header(h) for h in args.header)
        name = notifications.check_name(args.name)
        template = notifications.check_template(Path(args.template).read_text()) if args.template else None
    except (ValueError, OSError) as exc:
        return _usage(str(exc))
    if not args.webhook.startswith(("http://", "https://")):
        return _usage(f"--webhook must be an http(s) URL, got {args.webhook!r}")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        installed = notifications.install(client, args.webhook, kinds, name, headers, template)
    human = [f"webhook block  {installed.block} ({installed.block_document_id})"]
    human += [f"automation     {a}  ({notifications.EVENTS[a.removeprefix(name + '-')]})" for a in installed.automations]
    human += [f"removed        {r}" for r in installed.removed]
    emit(args, installed.to_dict(), "\n".join(human))
    return EXIT_OK


def run_remove(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from pixelflow.ops import notifications

    try:
        name = notifications.check_name(args.name)
    except ValueError as exc:
        return _usage(str(exc))
    with get_client(sync_client=True) as client:
        removed = notifications.remove(client, name)
    emit(args, {"removed": removed}, "removed: " + (", ".join(removed) or "nothing"))
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "notify", help="call a webhook when an asset is ready or rejected",
        description="Installs Prefect automations on pixelflow.asset.* events that POST a JSON body "
                    "(asset_id, key, status, master_playlist, code, ...) to a webhook.")
    commands = parser.add_subparsers(dest="notify_command", metavar="COMMAND", required=True)
    from pixelflow.ops.notifications import DEFAULT_NAME

    install = commands.add_parser("install", help="create or update the webhook block and its automations")
    install.add_argument("--webhook", required=True, metavar="URL", help="where to POST the notifications")
    install.add_argument("--events", default="ready,errored",
                         help="comma-separated: ready, errored, alert (default: ready,errored)")
    install.add_argument("--name", default=DEFAULT_NAME,
                         help=f"block name and automation prefix, to keep several targets apart (default: {DEFAULT_NAME})")
    install.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                         help="an extra request header, e.g. 'Authorization: Bearer ...' (repeatable; stored as a secret)")
    install.add_argument("--template", metavar="FILE",
                         help="a Jinja template of the request body instead of the default JSON object")
    add_json_flag(install)
    install.set_defaults(func=run_install)

    remove = commands.add_parser("remove", help="delete the automations and the webhook block")
    remove.add_argument("--name", default=DEFAULT_NAME, help=f"as given to install (default: {DEFAULT_NAME})")
    add_json_flag(remove)
    remove.set_defaults(func=run_remove)
