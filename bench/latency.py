"""``python -m bench.latency``: how long a short upload waits, and where the seconds go.

For each mode it starts a local stack of its own (moto, a Prefect server, the worker, the bridge;
``cold``: each run a new Python process, as Prefect's process worker starts it; ``warm``: runs
forked from the flow starter, :mod:`pixelflow.local.flow_starter`), uploads a short 1080p clip
``--uploads`` times one after the other, and reports the median seconds after the S3 PUT of each
stage of :mod:`pixelflow.local.stack.latency`, the chain's breakdown (each stage's share), and
the bare FFmpeg command for the same ladder on the same clip, so that "published within the
bare encode time plus N seconds" can be read off.

``ecs`` times the production chain up to the container: the same stack's bridge and trigger,
prefect.yaml's ``ecs`` deployment on a pool made from its base job template, and a real
``prefect worker start --type ecs`` polling as the CloudFormation stack's worker does, against
moto's ECS (which records the task and runs nothing). It stops where Fargate would start the
container: the rest is the cold start and the flow measured by ``cold``::

    .venv/bin/python -m bench.latency                       # cold and warm, 7 uploads each
    .venv/bin/python -m bench.latency --modes warm --uploads 3 --json /tmp/latency.json

No test asserts a time; ``tests/test_bench.py`` runs it once, on a tiny clip, to keep it working.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

#: (label, from stage, to stage): the breakdown of the chain, in order.
SPANS = (
    ("S3 notification -> event -> flow run created (bridge, trigger)", "put", "flow_run_created"),
    ("worker's poll takes the run", "flow_run_created", "picked_up"),
    ("run's process up, Prefect and the flow loaded -> Running", "picked_up", "running"),
    ("Running -> first task", "running", "first_task"),
    ("inspect, download, validate -> ladder FFmpeg starts", "first_task", "first_ffmpeg"),
    ("the encode (ladder FFmpeg)", "first_ffmpeg", "encoded"),
    ("encoded -> manifest.json written (uploads, MP4, publish)", "encoded", "published"),
)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="cold,warm",
                        help="comma-separated: cold, warm, ecs (default: cold,warm)")
    parser.add_argument("--uploads", type=int, default=7, help="uploads per mode, one after the other (default 7)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the clip (default 5)")
    parser.add_argument("--size", default="1920x1080", help="frame size of the clip (default 1920x1080)")
    parser.add_argument("--ladder", default="360,720", help="PIXELFLOW_LADDER of the stacks (default 360,720)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                        help="the stacks' Prefect database (default sqlite; see the README's 'Which database')")
    parser.add_argument("--bare-repeats", type=int, default=3, help="runs of the bare command (default 3)")
    parser.add_argument("--work", type=Path, default=Path("bench/.work-latency"), help="working directory")
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown here")
    return parser.parse_args(argv)


def measure_mode(mode: str, clip: Path, work: Path, uploads: int, ladder: str, log=print,
                 database: str = "sqlite") -> list[dict]:
    """Start a stack in ``mode``, time ``uploads`` uploads of ``clip``, stop it."""
    import shutil

    from pixelflow.local.processes import free_port
    from pixelflow.local.stack import Stack, StackConfig
    from pixelflow.local.stack.latency import measure

    home = work / f"stack-{mode}"
    shutil.rmtree(home, ignore_errors=True)
    config = StackConfig(home=home.resolve(), prefect_port=free_port(), moto_port=free_port(), api_port=None,
                         warm_start=mode == "warm", reconcile_after_seconds=None, database=database,
                         env={"PIXELFLOW_LADDER": ladder, "PIXELFLOW_SCRATCH_DIR": str((home / "scratch").resolve())})
    stack = Stack(config, log=lambda line: log(f"[{mode}] {line}"))
    stack.up()
    try:
        time.sleep(5)  # let the services settle (the first polls, the automation's cache)
        return measure(stack, clip, uploads=uploads, log=lambda line: log(f"[{mode}] {line}"))
    finally:
        stack.down()


#: The ECS chain's stages, after the PUT (``submitted``: the worker's RunTask call returned).
ECS_STAGES = ("event", "flow_run_created", "picked_up", "submitted")


def measure_ecs(clip: Path, work: Path, uploads: int, ladder: str, log=print, database: str = "sqlite") -> list[dict]:
    """Time ``uploads`` uploads through the ECS worker, up to the task it starts (see the module)."""
    import os
    import re
    import shutil
    import subprocess

    from prefect.context import refresh_global_settings_context

    from pixelflow.local import ecs
    from pixelflow.local.processes import free_port
    from pixelflow.local.stack import Stack, StackConfig
    from pixelflow.local.stack.latency import epoch, event_received, run_history, seconds_after

    home = work / "stack-ecs"
    shutil.rmtree(home, ignore_errors=True)
    config = StackConfig(home=home.resolve(), prefect_port=free_port(), moto_port=free_port(), api_port=None,
                         warm_start=False, reconcile_after_seconds=None, database=database,
                         env={"PIXELFLOW_LADDER": ladder})
    stack = Stack(config, log=lambda line: log(f"[ecs] {line}"))
    stack.up()
    worker = None
    saved = dict(os.environ)
    try:
        stack.stop_worker()  # the local deployment's runs stay Scheduled: only the ECS worker works
        env = stack.env()
        os.environ.update(env)
        refresh_global_settings_context()
        settings = stack.settings()
        network = ecs.ecs_network()
        pool = ecs.create_ecs_pool()
        ecs.deploy_ecs(home, pool, ecs.IMAGE, ecs.deploy_env(
            network, PIXELFLOW_UPLOAD_BUCKET=settings.upload_bucket, PIXELFLOW_OUTPUT_BUCKET=settings.output_bucket,
            PIXELFLOW_RECORDS_TABLE=settings.records_table), triggers=True)
        worker_env = {**env, "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": network["events_queue"],
                      **_cloudformation_worker_env()}
        log(f"[ecs] ECS worker polling every {worker_env.get('PREFECT_WORKER_QUERY_SECONDS', '10 (default)')} s")
        prefect = Path(sys.executable).with_name("prefect")
        worker = subprocess.Popen([str(prefect), "worker", "start", "--type", "ecs", "--pool", pool,
                                   "--install-policy", "never"], env=worker_env,
                                  stdout=(home / "ecs-worker.log").open("w"), stderr=subprocess.STDOUT)
        deployment = stack.prefect.api("GET", "/deployments/name/transcode/ecs")["id"]
        time.sleep(5)
        rows = []
        for index in range(uploads):
            upload = stack.uploads.upload_file(clip, key=f"latency-ecs/{index}{clip.suffix}")
            put = upload["uploaded_at"]
            deadline = time.monotonic() + 120
            submitted = run = None
            while time.monotonic() < deadline and submitted is None:
                time.sleep(0.2)
                runs = stack.prefect.api("POST", "/flow_runs/filter", json={
                    "deployments": {"id": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 50})
                run = next((r for r in runs if (r.get("parameters") or {}).get("key") == upload["key"]), None)
                if run is None:
                    continue
                logs = stack.prefect.api("POST", "/logs/filter", json={
                    "logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_ASC", "limit": 50})
                submitted = next((epoch(l["timestamp"]) for l in logs
                                  if re.search(r"submitted to infrastructure", l["message"])), None)
            states, _ = run_history(stack, run["id"]) if run else ([], {})
            pending = [epoch(s["timestamp"]) for s in states if s["type"] == "PENDING"]
            row = {"key": upload["key"], "flow_run_id": run["id"] if run else None,
                   "event": seconds_after(event_received(stack, upload), put),
                   "flow_run_created": seconds_after(epoch(run["created"]) if run else None, put),
                   "picked_up": seconds_after(min(pending) if pending else None, put),
                   "submitted": seconds_after(submitted, put)}
            log("[ecs] " + " ".join(f"{k}={v}" for k, v in row.items()))
            rows.append(row)
        return rows
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        os.environ.clear()
        os.environ.update(saved)
        refresh_global_settings_context()
        stack.down()


def _cloudformation_worker_env() -> dict[str, str]:
    """The ``PREFECT_WORKER_*`` settings the CloudFormation stack gives its ECS worker."""
    import re

    text = (Path(__file__).resolve().parents[1] / "deployments" / "aws" / "pixelflow.yaml").read_text()
    return dict(re.findall(r"\{Name: (PREFECT_WORKER_[A-Z_]+), Value: \"([^\"]*)\"\}", text))


def bare_seconds(clip: Path, ladder: str, work: Path, repeats: int) -> list[float]:
    """Wall seconds of the bare FFmpeg command for PixelFlow's ladder on ``clip``."""
    import shutil
    import subprocess

    from bench import commands
    from bench.runner import ladder_config, plan_for, probe_source

    case = probe_source("clip", clip)
    config = ladder_config(ladder)
    times = []
    for _ in range(repeats):
        out = work / "bare-out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        args = commands.bare_command(clip, case.info, plan_for(case, config), config, out)
        started = time.monotonic()
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        times.append(time.monotonic() - started)
    return times


def summarize(rows: list[dict]) -> dict[str, float | None]:
    """Median seconds after the PUT of each stage, and of each span of :data:`SPANS`."""
    from pixelflow.local.stack.latency import summarize as stage_medians

    summary: dict[str, float | None] = dict(stage_medians(rows))
    for label, start, end in SPANS:
        values = [r[end] - (0.0 if start == "put" else r[start]) for r in rows
                  if r.get(end) is not None and (start == "put" or r.get(start) is not None)]
        summary[label] = round(statistics.median(values), 2) if values else None
    return summary


def ecs_report(rows: list[dict], cold: dict[str, float | None] | None) -> str:
    """The ECS chain up to the task, and the model of the rest from the cold local start."""
    medians = {stage: _median([r[stage] for r in rows if r.get(stage) is not None]) for stage in ECS_STAGES}
    lines = ["| ECS chain, median seconds after the S3 PUT | measured |", "|---|---|",
             f"| event reaches Prefect (bridge) | {_fmt(medians['event'])} |",
             f"| flow run created (trigger) | {_fmt(medians['flow_run_created'])} |",
             f"| ECS worker takes the run (its poll) | {_fmt(medians['picked_up'])} |",
             f"| RunTask returned (task definition, ECS API) | {_fmt(medians['submitted'])} |"]
    if cold is not None and medians["submitted"] is not None:
        start = cold[SPANS[2][0]]
        inside = sum(cold[label] or 0 for label, _, _ in SPANS[2:5])
        lines += [f"| + Fargate provisions the task and pulls the image | not measured here |",
                  f"| + the run's process starts and loads Prefect and the flow (cold, measured locally) | "
                  f"{_fmt(start)} |",
                  f"| = S3 PUT -> ladder FFmpeg running, without the container's start (model) | "
                  f"{_fmt(medians['submitted'] + inside)} |"]
    return "\n".join(lines)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def report(results: dict, bare: list[float]) -> str:
    """The Markdown report: the chain's breakdown per mode, the targets, and the bare encode."""
    results = {mode: rows for mode, rows in results.items() if mode != "ecs"}
    modes = list(results)
    if not modes:
        return ""
    bare_median = statistics.median(bare) if bare else None
    lines = ["| median seconds | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    summaries = {mode: summarize(rows) for mode, rows in results.items()}
    for label, _, _ in SPANS:
        lines.append(f"| {label} | " + " | ".join(_fmt(summaries[m][label]) for m in modes) + " |")
    lines.append("| **S3 PUT -> ladder FFmpeg running** (target <= 3 s) | "
                 + " | ".join(f"**{_fmt(summaries[m]['first_ffmpeg'])}**" for m in modes) + " |")
    lines.append("| **last segment encoded -> manifest.json** (target <= 1 s) | "
                 + " | ".join(f"**{_fmt(summaries[m][SPANS[-1][0]])}**" for m in modes) + " |")
    lines.append("| S3 PUT -> asset published | " + " | ".join(_fmt(summaries[m]["published"]) for m in modes) + " |")
    if bare_median is not None:
        lines.append(f"| bare FFmpeg command, same ladder and clip | " + " | ".join(_fmt(bare_median) for _ in modes) + " |")
        lines.append("| published - bare encode | "
                     + " | ".join(_fmt(summaries[m]["published"] - bare_median) if summaries[m]["published"] is not None
                                  else "-" for m in modes) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from pixelflow.local.stack.uploads import make_sample

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    width, height = args.size.split("x")
    clip = make_sample(work / f"clip-{args.size}-{args.seconds:g}s.mp4", seconds=args.seconds,
                       size=f"{width}x{height}")
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    bare = bare_seconds(clip, args.ladder, work, args.bare_repeats)
    say(f"bare FFmpeg command: {', '.join(f'{t:.2f}' for t in bare)} s")
    results = {}
    for mode in [m for m in args.modes.split(",") if m]:
        if mode not in ("cold", "warm", "ecs"):
            raise SystemExit(f"unknown mode {mode!r} (cold, warm, ecs)")
        if mode == "ecs":
            results[mode] = measure_ecs(clip, work, args.uploads, args.ladder, log=say, database=args.database)
        else:
            results[mode] = measure_mode(mode, clip, work, args.uploads, args.ladder, log=say, database=args.database)
    text = (f"{args.uploads} uploads per mode of a {args.seconds:g} s {args.size} clip, ladder {args.ladder}, "
            f"one after the other, each from an idle stack; Prefect on {args.database}\n\n" + report(results, bare))
    if "ecs" in results:
        cold = summarize(results["cold"]) if "cold" in results else None
        text += "\n\n" + ecs_report(results["ecs"], cold)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"uploads": results, "bare_seconds": bare,
                                         "summary": {m: summarize(r) for m, r in results.items() if m != "ecs"}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
