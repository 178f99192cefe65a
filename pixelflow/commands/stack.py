"""``pixelflow stack up|down|status|latency|backup|restore``: the whole event-driven chain on this machine."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="run the local event-driven stack (moto S3/SQS, Prefect server, worker, bridge)",
        description=(
            "Start a moto server (S3/SQS), a Prefect server (UI; on SQLite, or on PostgreSQL with "
            "--database postgres), the upload queue and its notification, the `local` deployment with its upload trigger, a process worker, "
            "the bridge and the HTTP API (pixelflow api), all as child processes with logs under <home>/logs."
        ),
    )
    actions = parser.add_subparsers(dest="stack_command", metavar="ACTION")

    up = actions.add_parser("up", help="start the stack (Ctrl-C stops it)")
    up.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    up.add_argument("--prefect-port", type=int, default=4200, help="Prefect server/UI port (default: 4200)")
    up.add_argument("--moto-port", type=int, default=5000, help="moto server port (default: 5000)")
    up.add_argument("--aws-endpoint", help="use this S3/SQS endpoint instead of starting a moto server")
    up.add_argument("--api-port", type=int, default=8000, help="HTTP API port (default: 8000; 0: no API)")
    up.add_argument("--database", choices=["sqlite", "postgres"],
                    help="the Prefect server's database: sqlite (embedded) or postgres (a local PostgreSQL "
                         "server, data in <home>/postgres) (default: PIXELFLOW_STACK_DATABASE, else sqlite)")
    up.add_argument("--project-dir", type=Path, help="PixelFlow checkout holding prefect.yaml (default: this checkout)")
    up.add_argument("--cold-start", action="store_true",
                    help="start each flow run as a new Python process (no flow starter: each run imports Prefect "
                         "and the flow itself, 1 to 2 s more per run)")
    up.add_argument("--no-sample", action="store_true", help="do not upload and transcode a sample video")
    up.add_argument("--detach", action="store_true", help="leave the stack running in the background and exit")
    up.add_argument("--timeout", type=float, default=900, help="seconds to wait for the sample's manifest")
    up.set_defaults(func=run_up)

    down = actions.add_parser("down", help="stop a stack started with --detach (or running elsewhere)")
    down.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    down.set_defaults(func=run_down)

    status = actions.add_parser("status", help="show the processes and URLs of a running stack")
    status.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    status.set_defaults(func=run_status)
    latency = actions.add_parser("latency", help="time upload -> event -> flow run -> first FFmpeg on a running stack")
    latency.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    latency.add_argument("--uploads", type=int, default=5, help="uploads to time, one after the other (default: 5)")
    latency.add_argument("--file", type=Path, help="video to upload (default: the generated 1080p sample)")
    latency.add_argument("--json", action="store_true", help="print every measurement as JSON")
    latency.set_defaults(func=run_latency)
    backup = actions.add_parser("backup", help="pg_dump the stack's Prefect database (PostgreSQL) to a file")
    backup.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    backup.add_argument("--output", "-o", type=Path, required=True, help="file to write (pg_dump custom format)")
    backup.set_defaults(func=run_backup)
    restore = actions.add_parser("restore", help="replace a stopped stack's Prefect database with a backup")
    restore.add_argument("backup", type=Path, help="a file written by `pixelflow stack backup` (or pg_dump -Fc)")
    restore.add_argument("--home", type=Path, default=Path(".pixelflow"), help="state directory (default: .pixelflow)")
    restore.set_defaults(func=run_restore)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"pixelflow: {message}", flush=True)


def run_up(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pixelflow.local.stack import Stack, StackConfig, StackError, make_sample
    from pixelflow.settings import PixelFlowSettings

    try:
        database = args.database or PixelFlowSettings().stack_database
    except ValidationError as exc:
        problems = "; ".join(f"PIXELFLOW_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    config = StackConfig(
        home=args.home.resolve(),
        moto_port=args.moto_port,
        prefect_port=args.prefect_port,
        aws_endpoint=args.aws_endpoint,
        api_port=args.api_port or None,
        database=database,
        warm_start=not args.cold_start,
    )
    if args.project_dir:
        config.project_dir = args.project_dir.resolve()
    if not (config.project_dir / "prefect.yaml").is_file():
        print(f"error: no prefect.yaml in {config.project_dir}; pass --project-dir", file=sys.stderr)
        return 2
    stack = Stack(config, log=_say)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM too, even while starting
    try:
        stack.up()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        settings = stack.settings()
        print()
        print(f"  Prefect UI      {stack.ui_url}")
        print(f"  S3/SQS endpoint {stack.aws_endpoint}")
        if stack.postgres_port:
            print(f"  Prefect DB      PostgreSQL on 127.0.0.1:{stack.postgres_port} (data in {config.home / 'postgres'})")
        print(f"  upload bucket   s3://{settings.upload_bucket}   output bucket s3://{settings.output_bucket}")
        print(f"  logs            {config.log_dir}")
        print()
        if not args.no_sample:
            _sample(stack, make_sample(config.home / "samples" / "sample-1080p.mp4"), args.timeout)
        print("Upload more videos (each upload becomes a flow run):")
        print("  " + stack.uploads.how_to_upload().replace("\n", "\n  "))
        print()
        if stack.http_api_url:
            _api_banner(stack)
        if args.detach:
            stack.detach()
            print(f"Stack left running in the background; stop it with `pixelflow stack down --home {args.home}`.")
            return 0
        print("Stack running; press Ctrl-C to stop every process it started.", flush=True)
        stack.wait()
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        stack.down()
        return 1
    except BaseException:
        stack.down()
        raise


def _api_banner(stack) -> None:
    """Where the HTTP API is, its token, and the first request to make (docs/api.md has the rest)."""
    url, token = stack.http_api_url, stack.api_token
    print("The HTTP API (uploads, assets, deletion; see docs/api.md):")
    print(f"  API URL         {url}   (interactive docs {url}/docs)")
    print(f"  API token       {token}")
    print(f"  upload page     {url}/upload#token={token}")
    print(f"  try             curl -H 'Authorization: Bearer {token}' {url}/v1/assets")
    print("  signed playback pixelflow playback-token ASSET_ID   (or POST /v1/assets/ASSET_ID/playback-tokens)")
    print()


def _sample(stack, path: Path, timeout: float) -> None:
    uploads, prefect = stack.uploads, stack.prefect
    upload = uploads.upload_file(path, key=f"samples/sample-{time.strftime('%Y%m%dT%H%M%S')}.mp4")
    _say(f"uploaded s3://{upload['bucket']}/{upload['key']} (asset {upload['asset_id']}); waiting for the transcode")
    manifest = uploads.wait_for_manifest(
        upload["asset_id"], timeout=timeout,
        on_wait=lambda elapsed: _say(f"... still transcoding ({elapsed:.0f} s)"),
    )
    elapsed = time.time() - upload["uploaded_at"]
    settings = uploads.settings
    run = prefect.flow_run_for(upload["key"], upload["etag"])
    master = settings.layout(upload["asset_id"]).master_key
    print()
    print(f"Sample transcoded in {elapsed:.1f} s: {len(manifest.get('renditions', []))} renditions.")
    if run:
        print(f"  flow run        {prefect.flow_run_url(run['id'])}")
    print(f"  master playlist s3://{settings.output_bucket}/{master}")
    print(f"                  {uploads.object_url(settings.output_bucket, master)}")
    print()


def run_down(args: argparse.Namespace) -> int:
    from pixelflow.local.stack import stop_from_state

    state_file = args.home.resolve() / "stack.json"
    stopped = stop_from_state(state_file, log=_say)
    _say(f"stopped {stopped} process(es)" if stopped else f"no running stack recorded in {state_file}")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    from pixelflow.local.stack import StackError
    from pixelflow.local.stack.backup import backup

    try:
        written = backup(args.home, args.output.resolve(), log=_say)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _say(f"wrote the Prefect database to {written} ({written.stat().st_size} bytes); "
         f"restore it with `pixelflow stack restore {written} --home HOME`")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from pixelflow.local.stack import StackError
    from pixelflow.local.stack.backup import restore

    try:
        restore(args.home, args.backup.resolve(), log=_say)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _say(f"restored {args.backup} into {args.home.resolve() / 'postgres'}; start the stack with "
         f"`pixelflow stack up --database postgres --home {args.home}`")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from pixelflow.local.stack import process_alive, read_state

    state = read_state(args.home.resolve() / "stack.json")
    if not state:
        _say("no stack recorded")
        return 1
    for proc in state.get("processes", []):
        proc["running"] = process_alive(proc)
    print(json.dumps(state, indent=2))
    return 0 if all(p["running"] for p in state.get("processes", [])) else 1


def run_latency(args: argparse.Namespace) -> int:
    from pixelflow.local.stack import Stack, StackConfig, StackError, make_sample
    from pixelflow.local.stack.latency import STAGES, measure, summarize

    config = StackConfig(home=args.home.resolve())
    try:
        stack = Stack.attach(config, log=_say)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sample = args.file or make_sample(config.home / "samples" / "sample-1080p.mp4")
    results = measure(stack, sample, uploads=args.uploads, log=_say if not args.json else lambda _m: None)
    summary = summarize(results)
    if args.json:
        print(json.dumps({"uploads": results, "median_seconds": summary}, indent=2))
    else:
        print(f"median seconds after the S3 PUT over {len(results)} upload(s):")
        for stage in STAGES:
            value = summary[stage]
            print(f"  {stage:<17} {'n/a' if value is None else f'{value:.2f}'}")
    return 0
