"""``pixelflow notify remove``: delete the unsigned webhook automations earlier versions installed.

``pixelflow notify install`` is retired (it refuses, naming the replacement): apps get signed
webhooks from ``pixelflow webhooks create`` / ``POST /v1/webhooks`` (docs/webhooks.md).
"""

from __future__ import annotations

import argparse
import sys

from pixelflow.commands._common import EXIT_OK, EXIT_USAGE, add_json_flag, emit


def _usage(message: str) -> int:
    print(f"pixelflow notify: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_install(args: argparse.Namespace) -> int:
    from pixelflow.ops.notifications import RETIRED

    return _usage(RETIRED)


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
        "notify", help="remove the unsigned webhook automations of earlier versions (use `pixelflow webhooks`)",
        description="`install` is retired: register signed webhooks with `pixelflow webhooks create URL`. "
                    "`remove` deletes the Prefect automations and webhook block earlier versions installed.")
    commands = parser.add_subparsers(dest="notify_command", metavar="COMMAND", required=True)
    from pixelflow.ops.notifications import DEFAULT_NAME

    install = commands.add_parser("install", help="retired: use `pixelflow webhooks create URL`")
    for option in ("--webhook", "--events", "--name", "--header", "--template"):  # the old options, refused below
        install.add_argument(option, action="append", help=argparse.SUPPRESS)
    add_json_flag(install)
    install.set_defaults(func=run_install)

    remove = commands.add_parser("remove", help="delete the automations and the webhook block of earlier versions")
    remove.add_argument("--name", default=DEFAULT_NAME, help=f"as given to install (default: {DEFAULT_NAME})")
    add_json_flag(remove)
    remove.set_defaults(func=run_remove)
