"""``pixelflow automations install``: the crash-recovery automations on the Prefect server."""

from __future__ import annotations

import argparse

from pixelflow.commands._common import EXIT_OK, add_json_flag, emit


def run_install(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from pixelflow.ops.automations import install

    with get_client(sync_client=True) as client:
        names = install(client, args.heartbeat_seconds)
    emit(args, {"installed": names}, "installed automations: " + ", ".join(names))
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser("automations", help="install the crash-recovery automations",
                                   description="Crashed transcode runs are detected by missing heartbeats and "
                                               "scheduled again, a bounded number of times.")
    commands = parser.add_subparsers(dest="automations_command", metavar="COMMAND", required=True)
    install = commands.add_parser("install", help="create or replace the automations on the current Prefect API")
    install.add_argument("--heartbeat-seconds", type=int, default=30,
                         help="the workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (a run is crashed after 2.5x this)")
    add_json_flag(install)
    install.set_defaults(func=run_install)
