"""``pixelflow retry``: schedule failed transcodes again; published renditions are not redone."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone

from pixelflow.commands._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_json_flag, emit


def parse_since(text: str) -> datetime:
    """``2h``, ``30m``, ``1d`` ago, or an ISO time.

    >>> parse_since("2h") < datetime.now(timezone.utc)
    True
    >>> parse_since("2026-11-24T10:00:00+00:00").hour
    10
    """
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def run(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from pixelflow.ops.runs import failed_transcode_runs, retry_flow_run

    if bool(args.flow_run_id) == bool(args.failed_since):
        print("error: give one FLOW_RUN_ID, or --failed-since TIME", file=sys.stderr)
        return EXIT_USAGE
    with get_client(sync_client=True) as client:
        if args.flow_run_id:
            ids = [args.flow_run_id]
        else:
            try:
                since = parse_since(args.failed_since)
            except ValueError:
                print(f"error: cannot read the time {args.failed_since!r}", file=sys.stderr)
                return EXIT_USAGE
            ids = [str(r.id) for r in failed_transcode_runs(client, since, args.deployment)]
        results = [retry_flow_run(client, flow_run_id) for flow_run_id in ids]
    lines = [f"{'scheduled' if r.scheduled else 'skipped'}  {r.flow_run_id}  {r.name}  (was {r.previous_state})"
             + (f": {r.reason}" if r.reason else "") for r in results] or ["no failed or crashed transcode runs"]
    emit(args, [r.__dict__ for r in results], "\n".join(lines))
    return EXIT_OK if all(r.scheduled for r in results) else EXIT_FAILED


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "retry", help="retry failed transcode runs (only what failed is redone)",
        description="Schedule a finished transcode run again, like the Prefect UI's Retry button. Renditions an "
                    "earlier attempt published are not encoded again.")
    parser.add_argument("flow_run_id", nargs="?", help="the flow run to retry")
    parser.add_argument("--failed-since", metavar="TIME",
                        help="retry every failed or crashed transcode run started since TIME (e.g. 2h, 1d, or ISO time)")
    parser.add_argument("--deployment", help="only runs of this deployment (e.g. local, ecs)")
    add_json_flag(parser)
    parser.set_defaults(func=run)
