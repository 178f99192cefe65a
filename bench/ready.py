"""``python -m bench.ready``: time to playable and to ready through the whole flow, for a short
and a long source, the long one in one pass and in chunks with 1, 2, 4... workers.

Each run is the ``transcode`` flow in its own process (``bench.flow_child``, as ``pixelflow
transcode`` runs it) against a real Prefect server and moto's S3 over HTTP, from the object in
the upload bucket: download, probe, encode, uploads, publication. Chunked runs are progressive
(``PIXELFLOW_PROGRESSIVE=true``, docs/chunks.md): the asset is **playable** when its master
playlist appears in the output bucket (after chunk 0 and the audio), **ready** when its
``manifest.json`` does (one listing every 0.1 s times both). A one-pass asset is playable when it
is ready. Times count from the run's process start; on the local stack the event chain adds about
1.9 s before it (``python -m bench.latency``).

The machine's cores bound what the chunk workers can gain here (on 2 cores, 2 workers at most);
the report adds a model of N machines (Fargate tasks) from the measured per-chunk times of the
1-worker run, the rest of that run as measured, and an assumed task start-up: a model, stated
as one.

Example:
    >>> first_and_ready({"/master.m3u8": 12.5, "/manifest.json": 40.0})
    (12.5, 40.0)
    >>> modelled_ready(ready=100.0, chunk_seconds=[20.0, 20.0, 20.0, 10.0], tasks=2, task_start=30.0)
    100.0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.chunks import model_seconds
from bench.pixelflow_run import run_pixelflow, start_stack, upload_source
from bench.report import results_dir, write_results
from bench.sources import SOURCES, ensure_source

RESULTS = Path(__file__).resolve().parent / "results"
WATCH = ("/master.m3u8", "/manifest.json")


def first_and_ready(seen: dict[str, float]) -> tuple[float | None, float | None]:
    """When the master playlist and the manifest first appeared (seconds from the run's start)."""
    return seen.get("/master.m3u8"), seen.get("/manifest.json")


def modelled_ready(ready: float, chunk_seconds: list[float], tasks: int, task_start: float) -> float:
    """Time to ready with ``tasks`` machines (one chunk at a time each): the 1-worker run's
    ``ready`` with its chunks' encode (one after another) replaced by waves of ``tasks`` chunks,
    plus one task's start-up. A model: it assumes each machine is the one measured."""
    return round(ready - sum(chunk_seconds) + model_seconds(chunk_seconds, fixed=task_start, tasks=tasks), 1)


def _chunk_times(timeline: dict) -> list[float]:
    tasks = timeline.get("tasks", {})
    return [round(t["end"] - t["start"], 2) for name, t in sorted(tasks.items())
            if name.startswith("encode-chunk-") and t.get("start") is not None and t.get("end") is not None]


def measure(stack, key: str, ladder: str, work: Path, label: str, settings: dict[str, str], say=print) -> dict:
    """One run of the flow on ``key``; its times, chunks and CPU."""
    say(f"{label} ...")
    run = run_pixelflow(stack, key, ladder, work, label, settings=settings, watch=WATCH)
    if run.result.get("state") != "COMPLETED":
        raise RuntimeError(f"{label}: the run ended {run.result.get('state')}: {run.result.get('message')}")
    playable, ready = first_and_ready(run.seen)
    manifest = run.result.get("manifest") or {}
    return {"label": label, "playable": playable, "ready": ready, "wall": round(run.measurement.wall, 2),
            "cpu": round(run.measurement.cpu, 2), "chunks": len(manifest.get("chunks") or []),
            "chunk_seconds": _chunk_times(run.timeline), "settings": settings}


def run(short: str, long: str, ladder: str, chunk_seconds: float, workers: list[int], work: Path,
        task_start: float, first_chunk_seconds: float = 0, say=print) -> dict:
    """The short source in one pass; the long one in one pass, then chunked with each worker count."""
    stack = start_stack(work)
    try:
        for name in (short, long):
            upload_source(stack, ensure_source(name, log=say), f"sources/{name}.mp4")
        one_pass = {"PIXELFLOW_CHUNK_SECONDS": "0"}
        runs = [measure(stack, f"sources/{short}.mp4", ladder, work, f"{short}-one-pass", one_pass, say),
                measure(stack, f"sources/{long}.mp4", ladder, work, f"{long}-one-pass", one_pass, say)]
        for count in workers:
            runs.append(measure(stack, f"sources/{long}.mp4", ladder, work, f"{long}-chunks-{count}",
                                {"PIXELFLOW_CHUNK_SECONDS": f"{chunk_seconds:g}", "PIXELFLOW_CHUNK_WORKERS": str(count),
                                 "PIXELFLOW_PROGRESSIVE": "true",
                                 "PIXELFLOW_PROGRESSIVE_FIRST_CHUNK_SECONDS": f"{first_chunk_seconds:g}"}, say))
    finally:
        stack.stop()
    result = {"short": short, "long": long, "ladder": ladder, "chunk_seconds": chunk_seconds, "runs": runs,
              "task_start": task_start, "first_chunk_seconds": first_chunk_seconds}
    single = next((r for r in runs if r["label"] == f"{long}-chunks-1"), None)
    if single and single["chunk_seconds"]:
        counts = sorted({1, 2, 4, 8, len(single["chunk_seconds"])})
        result["model"] = {str(n): modelled_ready(single["ready"], single["chunk_seconds"], n, task_start)
                           for n in counts}
    return result


def markdown(result: dict) -> str:
    """The results as docs/bench.md's tables."""
    runs = result["runs"]
    long_one = next(r for r in runs if r["label"] == f"{result['long']}-one-pass")
    first = f", the first {result['first_chunk_seconds']:g} s" if result.get("first_chunk_seconds") else ""
    lines = [f"Sources `{result['short']}` and `{result['long']}`, rungs {result['ladder']}, chunks of "
             f"{result['chunk_seconds']:g} s{first} (progressive), seconds from the run's start.", "",
             "| Run | Chunks | Playable (s) | Ready (s) | Ready against the long one-pass | CPU (s) |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        against = f"{r['ready'] / long_one['ready']:.2f}x" if r["label"].startswith(result["long"]) else ""
        lines.append(f"| {r['label']} | {r['chunks'] or '-'} | {r['playable']} | {r['ready']} | {against} | {r['cpu']} |")
    if result.get("model"):
        single = next(r for r in runs if r["label"] == f"{result['long']}-chunks-1")
        lines += ["", f"Per chunk, one at a time: {', '.join(f'{s:g}' for s in single['chunk_seconds'])} s.", "",
                  f"| Fargate tasks (model, {result['task_start']:g} s start-up assumed) | Ready (s) |", "|---|---|"]
        lines += [f"| {n} | {s} |" for n, s in result["model"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ready", description=__doc__.split("\n")[0])
    parser.add_argument("--short", default="1080p10", help=f"the short source (known: {', '.join(SOURCES)})")
    parser.add_argument("--long", default="720p120", help="the long source")
    parser.add_argument("--ladder", default="360,720", help="PIXELFLOW_LADDER of every run")
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--workers", default="1,2,4", help="PIXELFLOW_CHUNK_WORKERS of the chunked runs")
    parser.add_argument("--first-chunk-seconds", type=float, default=0.0,
                        help="PIXELFLOW_PROGRESSIVE_FIRST_CHUNK_SECONDS of the chunked runs (0: as long as the others)")
    parser.add_argument("--task-start", type=float, default=40.0,
                        help="assumed start-up of one Fargate task, for the model (seconds)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = results_dir(args.work, RESULTS, "ready")
    result = run(args.short, args.long, args.ladder, args.chunk_seconds,
                 [int(n) for n in args.workers.split(",")], work, args.task_start, args.first_chunk_seconds)
    write_results(work, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
