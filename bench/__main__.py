"""``python -m bench``: PixelFlow against the original container and the best bare FFmpeg command.

Examples:
    The full benchmark (60 s 4K source, 3 repeats interleaved, design alternatives, memory
    against source size)::

        ./dev.sh bench            # or: .venv/bin/python -m bench

    A quick look (10 s 4K source, 1 repeat)::

        .venv/bin/python -m bench --quick --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from bench import commands, report, runner  # noqa: E402
from bench.sources import CACHE, SOURCES, ensure_source  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10 s 4K source, 1 repeat, no memory-scaling runs (a few minutes)")
    parser.add_argument("--sources", type=_csv, default=None,
                        help=f"comma-separated sources for the contenders (default 4k60; --quick: 4k10); "
                             f"known: {', '.join(SOURCES)}")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each contender per source (default 3; --quick: 1)")
    parser.add_argument("--contenders", type=_csv, default=list(runner.DEFAULT_CONTENDERS),
                        help=f"comma-separated, from: {', '.join(runner.CONTENDERS)} (default: "
                             f"{', '.join(runner.DEFAULT_CONTENDERS)}); 'none' to skip")
    parser.add_argument("--alternatives", type=_csv, default=None,
                        help=f"design variants to compare (default: {', '.join(commands.DEFAULT_VARIANTS)}; "
                             f"known: {', '.join(commands.ENGINE_VARIANTS)}); 'none' to skip")
    parser.add_argument("--alt-source", default="4k10", help="source of the design alternatives (default 4k10)")
    parser.add_argument("--alt-repeats", type=int, default=None,
                        help="runs of each variant (default: --repeats, at most 2)")
    parser.add_argument("--memory-sources", type=_csv, default=None,
                        help="extra sources for one PixelFlow run each, to compare its memory across source sizes "
                             "(default 4k10,1080p60; --quick: none; 'none' to skip)")
    parser.add_argument("--no-quality", action="store_true", help="skip the SSIM and bitrate pass")
    parser.add_argument("--json", type=Path, default=None, help="also write every result as JSON to this file")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report as Markdown to this file")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for outputs and logs (default bench/results/<time>/)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only redo the report from a results.json a previous run wrote")
    parser.add_argument("--s3-endpoint-url", default=None, help="use this S3 endpoint instead of starting moto")
    parser.add_argument("--prefect-api-url", default=None, help="use this Prefect API instead of starting a server")
    args = parser.parse_args(argv)
    args.sources = args.sources or (["4k10"] if args.quick else ["4k60"])
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.alt_repeats = args.alt_repeats or min(args.repeats, 2)
    if args.contenders == ["none"]:
        args.contenders = []
    if args.alternatives is None:
        args.alternatives = list(commands.DEFAULT_VARIANTS)
    elif args.alternatives == ["none"]:
        args.alternatives = []
    if args.memory_sources is None:
        args.memory_sources = [] if args.quick else [s for s in ("4k10", "1080p60") if s not in args.sources]
    elif args.memory_sources == ["none"]:
        args.memory_sources = []
    for name in args.sources + args.memory_sources + ([args.alt_source] if args.alternatives else []):
        if name not in SOURCES:
            parser.error(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    for name in args.contenders:
        if name not in runner.CONTENDERS:
            parser.error(f"unknown contender {name!r}; known: {', '.join(runner.CONTENDERS)}")
    for name in args.alternatives:
        if name not in commands.ENGINE_VARIANTS:
            parser.error(f"unknown variant {name!r}; known: {', '.join(commands.ENGINE_VARIANTS)}")
    if args.repeats < 1 or args.alt_repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def say(text: str) -> None:
    print(text, flush=True)


def _stop(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Checkpoint:
    """Saves every result as soon as it is measured (``partial.json`` in the work folder), so
    an interrupted run still leaves its numbers."""

    def __init__(self, path: Path):
        self.path = path
        self.runs: list[dict] = []

    def __call__(self, record: dict) -> None:
        self.runs.append(record)
        self.path.write_text(json.dumps(self.runs, indent=1, default=str))


def analyse(data: dict) -> None:
    """Add the summary, targets, memory table and CPU breakdown to collected results."""
    runs, sources = data["runs"], data["sources"]
    summary = report.summarize_runs(runs, "contender")
    data["summary"] = summary
    data["targets"] = {source: report.targets(summary, data["quality"], source) for source in sources}
    memory = [m for m in data.get("memory") or [] if m["source"] not in sources]
    for source in sources:
        for name in ("pixelflow-default", "pixelflow-360-720"):
            row = summary.get((source, name))
            if row:
                memory.insert(0, {"source": source, "wall": row["wall"]["median"],
                                  "flow_process_maxrss": row["flow_process_maxrss"], "tree_peak_rss": row["tree_peak_rss"]})
                break
    data["memory"] = memory
    breakdown = {}
    for source in sources:
        pf_runs = [r for r in runs if r["source"] == source and r["contender"] == "pixelflow-default" and r["ok"]]
        pf_runs = pf_runs or [r for r in runs if r["source"] == source and r["contender"].startswith("pixelflow") and r["ok"]]
        if pf_runs:
            chosen = sorted(pf_runs, key=lambda r: r["measure"]["wall"])[len(pf_runs) // 2]
            breakdown[source] = {"contender": chosen["contender"], "repeat": chosen["repeat"],
                                 "processes": report.process_breakdown(chosen)}
    data["breakdown"] = breakdown
    if data.get("alternatives"):
        alt = data["alternatives"]
        alt["summary"] = {name: row for (_, name), row in report.summarize_runs(alt["runs"], "variant").items()}


def publish(data: dict, work: Path, args: argparse.Namespace) -> str:
    """Print the report and write it (Markdown, JSON) to ``work`` and where asked."""
    text = report.markdown(data)
    say("")
    say(text)
    (work / "report.md").write_text(text)
    serializable = dict(data, summary=[{"source": s, "contender": c, **row} for (s, c), row in data["summary"].items()])
    payload = json.dumps(serializable, indent=2, default=str)
    (work / "results.json").write_text(payload)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(payload)
    if args.markdown:
        args.markdown.write_text(text)
    return text


def from_partial(records: list[dict]) -> dict:
    """Results in the shape :func:`analyse` expects, from an interrupted run's records."""
    runs = [r for r in records if "contender" in r]
    variants = [r for r in records if "variant" in r]
    alternatives = None
    if variants:
        names = list(dict.fromkeys(r["variant"] for r in variants))
        alternatives = {"source": variants[0]["source"], "repeats": max(r["repeat"] for r in variants) + 1,
                        "variants": names, "runs": variants, "quality": [],
                        "descriptions": {n: commands.ENGINE_VARIANTS[n].description for n in names}}
    return {
        "command": "python -m bench (interrupted; no quality pass)", "machine": report.machine(),
        "load_start": (0.0, 0.0, 0.0), "load_end": os.getloadavg(), "elapsed": 0.0,
        "sources": list(dict.fromkeys(r["source"] for r in runs)),
        "source_descriptions": {name: spec.description for name, spec in SOURCES.items()},
        "repeats": max((r["repeat"] for r in runs), default=0) + 1,
        "contenders": list(dict.fromkeys(r["contender"] for r in runs)),
        "runs": runs, "quality": [], "alternatives": alternatives, "memory": [],
    }


def rerender(args: argparse.Namespace) -> int:
    """Recompute the summary and the report from a saved ``results.json``."""
    data = json.loads(args.from_json.read_text())
    if isinstance(data, list):  # the partial.json of an interrupted run
        data = from_partial(data)
    analyse(data)
    publish(data, args.from_json.resolve().parent, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started in the background, where SIGINT is ignored
    started = time.monotonic()
    load_start = os.getloadavg()
    work = (args.work or RESULTS / time.strftime("%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    say(f"PixelFlow benchmark: outputs and logs in {work}; sources cached in {CACHE}")

    checkpoint = Checkpoint(work / "partial.json")
    needed = dict.fromkeys(args.sources + args.memory_sources + ([args.alt_source] if args.alternatives else []))
    cases = {name: runner.probe_source(name, ensure_source(name, log=say)) for name in needed}

    need_stack = args.memory_sources or any(runner.CONTENDERS[c].kind == "pixelflow" for c in args.contenders)
    stack = None
    if need_stack:
        say("starting the local services (moto S3, Prefect server) ...")
        from bench.pixelflow_run import start_stack

        stack = start_stack(work, args.s3_endpoint_url, args.prefect_api_url)
    try:
        runs, quality = runner.run_benchmark([cases[s] for s in args.sources], args.contenders, args.repeats, work, stack,
                                             say, checkpoint) if args.contenders else ([], [])
        if args.no_quality:
            quality = []
        alternatives = None
        if args.alternatives:
            case = cases[args.alt_source]
            alt_runs, alt_quality = runner.run_alternatives(case, args.alternatives, args.alt_repeats, work, say,
                                                            checkpoint)
            alternatives = {"source": case.name, "repeats": args.alt_repeats, "variants": args.alternatives,
                            "runs": alt_runs, "quality": alt_quality,
                            "descriptions": {n: commands.ENGINE_VARIANTS[n].description for n in args.alternatives}}
        memory = []
        if args.memory_sources and stack is not None:
            contender = runner.CONTENDERS["pixelflow-default"]
            for name in args.memory_sources:
                case = cases[name]
                case.s3_key = f"sources/{case.path.name}"
                from bench.pixelflow_run import upload_source

                upload_source(stack, case.path, case.s3_key)
                record = runner.run_contender(contender, case, 0, work, stack, None)
                checkpoint(record)
                say(runner._run_line(record, contender.name))
                if record["ok"]:
                    memory.append({"source": name, "wall": record["measure"]["wall"],
                                   "flow_process_maxrss": record["flow_process_maxrss"],
                                   "tree_peak_rss": record["measure"]["tree_peak_rss"]})
    finally:
        if stack is not None:
            stack.stop()

    data = {
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": report.machine(),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "elapsed": time.monotonic() - started,
        "sources": args.sources,
        "source_descriptions": {name: SOURCES[name].description for name in needed},
        "repeats": args.repeats,
        "contenders": args.contenders,
        "contender_descriptions": {n: runner.CONTENDERS[n].description for n in args.contenders},
        "runs": runs,
        "quality": quality,
        "alternatives": alternatives,
        "memory": memory,
    }
    analyse(data)
    publish(data, work, args)
    failed = [r for r in runs if not r["ok"]] + [r for r in (alternatives or {}).get("runs", []) if not r["ok"]]
    if failed:
        say(f"{len(failed)} run(s) failed; see the logs in {work / 'logs'} and {work / 'pixelflow'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
