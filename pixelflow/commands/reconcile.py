"""``pixelflow reconcile``: start the transcode of uploads whose event was lost on the way, and
retry uploads whose run failed for a service reason (with backoff, up to a limit)."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime, timezone

from pixelflow.commands._common import EXIT_OK, add_json_flag, emit


def run(args: argparse.Namespace) -> int:
    from pixelflow.ops.reconcile import reconcile, reconcile_forever
    from pixelflow.settings import PixelFlowSettings

    settings = PixelFlowSettings()
    if args.every:
        stopping = {"now": False}

        def handler(_signum, _frame):
            stopping["now"] = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        stamp = lambda m: print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} pixelflow.ops.reconcile: {m}", flush=True)  # noqa: E731
        stamp(f"checking every {args.every:g} s for uploads older than {args.older_than:g} s without a run")
        reconcile_forever(settings, args.deployment, args.every, args.older_than, args.within, log=stamp,
                          stop=lambda: stopping["now"], repair=args.records)
        return EXIT_OK

    from prefect.client.orchestration import get_client

    from pixelflow.aws import s3_client

    from pixelflow.records import Records

    from pixelflow.ops.reconcile import describe_retry
    from pixelflow.ops.retries import retry_failed

    records = Records.from_settings(settings) if args.records else None
    with get_client(sync_client=True) as client:
        orphans = reconcile(settings, s3_client(), client, args.deployment, older_than=args.older_than,
                            within=args.within, records=records)
        retries = retry_failed(settings, s3_client(), client, args.deployment, records=records)
    data = [{"asset_id": o.asset_id, "bucket": o.source["bucket"], "key": o.source["key"],
             "uploaded_at": o.uploaded_at.isoformat(), "flow_run_id": o.flow_run_id} for o in orphans]
    data += [{"asset_id": r.asset_id, "bucket": r.source["bucket"], "key": r.source["key"], "retry": r.attempt,
              "code": r.code, "flow_run_id": r.flow_run_id} for r in retries]
    lines = [f"started {o.flow_run_id}  s3://{o.source['bucket']}/{o.source['key']}  (asset {o.asset_id})"
             for o in orphans] or ["every upload has its run"]
    lines += [describe_retry(r) for r in retries]
    if args.records:
        from pixelflow.ops.reconcile import repair_records

        try:
            repairs = repair_records(settings, s3_client(), Records.from_settings(settings),
                                     older_than=args.older_than)
        except Exception as exc:  # noqa: BLE001 - e.g. a deployment without the records table
            print(f"warning: records not repaired ({type(exc).__name__}: {exc})", file=sys.stderr)
            repairs = []
        lines += [f"record of {r.asset_id}: {r.before or 'none'} -> {r.after}" for r in repairs] or \
            ["every record agrees with S3"]
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconcile", help="start runs for uploads whose event was lost (the event chain's safety net)",
        description="Find uploads that are neither published nor rejected and have no transcode run, once they are "
                    "older than a grace period, and start their run (once, whoever else reconciles).")
    parser.add_argument("--deployment", default="local", help="transcode deployment to start runs of (default: local)")
    parser.add_argument("--older-than", type=float, default=300.0, metavar="SECONDS",
                        help="grace period before an upload without a run counts as lost (default: 300)")
    parser.add_argument("--within", type=float, default=86400.0, metavar="SECONDS",
                        help="only look at uploads younger than this (default: 86400)")
    parser.add_argument("--every", type=float, metavar="SECONDS", help="keep running, checking every SECONDS")
    parser.add_argument("--no-records", dest="records", action="store_false",
                        help="do not repair the API's records (PIXELFLOW_RECORDS_TABLE) from S3")
    add_json_flag(parser)
    parser.set_defaults(func=run)
