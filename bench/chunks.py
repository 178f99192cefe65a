"""``python -m bench.chunks``: chunked encoding (docs/chunks.md) against one pass on a long source.

The commands are PixelFlow's own (``ladder_encode_args``, ``chunk_encode_args``, ``audio_args``),
run on local files without the flow around them: one pass (the ladder process with the audio),
then the chunks with 1 and with 2 workers (the chunks started in waves of that many processes,
the audio's process beside the first wave, as the flow runs them). Reported per run: wall time
(the time the encode adds to time to ready), CPU time, and the peak memory of each chunk's
process; then the chunks' peak memory on a source twice as long (it should not grow), and a
model of N Fargate tasks built from the measured per-chunk times.

Example:
    >>> waves(["a", "b", "c"], 2)
    [['a', 'b'], ['c']]
    >>> model_seconds([30.0, 31.0, 29.0, 12.0], fixed=5.0, tasks=2)
    65.0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.measure import fresh_dir, run_group
from bench.runner import plan_for, probe_source
from bench.report import results_dir, write_results
from bench.sources import SOURCES, ensure_source
from pixelflow.core.chunks import plan_chunks
from pixelflow.core.ffmpeg_args import audio_args, chunk_encode_args, ladder_encode_args
from pixelflow.core.ladder import LadderConfig

RESULTS = Path(__file__).resolve().parent / "results"


def waves(items: list, size: int) -> list[list]:
    """``items`` in consecutive groups of ``size``."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def model_seconds(chunk_seconds: list[float], fixed: float, tasks: int) -> float:
    """A model of the encode's wall time on ``tasks`` separate machines (Fargate tasks), each
    encoding one chunk at a time: the chunks in waves of ``tasks``, each wave as long as its
    slowest chunk, plus ``fixed`` (a task's start, the source's download). A model, not a
    measurement: it assumes each task is the machine the chunk times were measured on."""
    ordered = sorted(chunk_seconds, reverse=True)
    return fixed + sum(max(wave) for wave in waves(ordered, tasks))


def _nice(args: list[str]) -> list[str]:
    return ["nice", "-n", "10", *args]


def _prepare(source_name: str, ladder: tuple[int, ...], say=print):
    """Source ``source_name`` (generated if missing, probed), its ladder configuration and plan."""
    case = probe_source(source_name, ensure_source(source_name, log=say))
    config = LadderConfig(heights=ladder)
    return case, config, plan_for(case, config)


def run(source_name: str, ladder: tuple[int, ...], chunk_seconds: float, work: Path, say=print) -> dict:
    """One pass, then the chunks with 1 and 2 workers, on source ``source_name``."""
    case, config, plan = _prepare(source_name, ladder, say)
    source = str(case.path)
    log = work / "ffmpeg.log"
    result: dict = {"source": source_name, "duration": case.info.duration, "ladder": [r.name for r in plan],
                    "chunk_seconds": chunk_seconds}

    out = fresh_dir(work / "one-pass")
    say(f"{source_name}: one pass ...")
    one = run_group([_nice(ladder_encode_args(source, case.info, plan, config, [str(fresh_dir(out / r.name)) for r in plan],
                                              str(fresh_dir(out / "audio"))))], log)
    result["one_pass"] = {"wall": round(one.wall, 2), "cpu": round(one.cpu, 2), "max_rss": one.max_rss}

    chunks = plan_chunks(case.info.duration, plan, config, chunk_seconds)
    for workers in (1, 2):
        say(f"{source_name}: {len(chunks)} chunks, {workers} at once ...")
        out = fresh_dir(work / f"chunks-{workers}")
        commands = [_nice(chunk_encode_args(source, case.info, plan, config,
                                            [str(fresh_dir(out / str(c.index) / r.name)) for r in plan], c)) for c in chunks]
        audio = _nice(audio_args(source, case.info, config, str(fresh_dir(out / "audio"))))
        started, per_chunk, cpu, audio_wall = time.monotonic(), [], 0.0, 0.0
        for number, wave in enumerate(waves(commands, workers)):
            measured = run_group(wave + ([audio] if number == 0 else []), log)
            cpu += measured.cpu
            for sample in measured.processes:
                if "-start_number" in sample.argv:
                    per_chunk.append({"seconds": round(sample.last_seen - sample.first_seen, 2),
                                      "peak_rss": sample.peak_rss})
                elif "-c:a" in sample.argv:
                    audio_wall = round(sample.last_seen - sample.first_seen, 2)
        wall = time.monotonic() - started
        result[f"chunks_{workers}"] = {"wall": round(wall, 2), "cpu": round(cpu, 2), "audio_wall": audio_wall,
                                       "chunks": per_chunk,
                                       "wall_overhead": round(wall / one.wall - 1, 3),
                                       "cpu_overhead": round(cpu / one.cpu - 1, 3)}
    times = [c["seconds"] for c in result["chunks_1"]["chunks"]]
    result["model"] = {str(n): round(model_seconds(times, fixed=0.0, tasks=n), 1) for n in (1, 2, 4, len(times))}
    return result


def memory_flat(source_names: list[str], ladder: tuple[int, ...], chunk_seconds: float, work: Path, say=print) -> list[dict]:
    """The peak memory of one chunk's process (its first and its last) on sources of different
    lengths: flat when each process holds its range only."""
    rows = []
    for name in source_names:
        case, config, plan = _prepare(name, ladder, say)
        chunks = plan_chunks(case.info.duration, plan, config, chunk_seconds)
        for chunk in (chunks[0], chunks[-2]):
            out = fresh_dir(work / f"memory-{name}-{chunk.index}")
            say(f"{name}: chunk {chunk.index} alone, for its memory ...")
            measured = run_group([_nice(chunk_encode_args(str(case.path), case.info, plan, config,
                                                          [str(fresh_dir(out / r.name)) for r in plan], chunk))],
                                 work / "ffmpeg.log")
            rows.append({"source": name, "duration": case.info.duration, "chunk": chunk.index,
                         "start": chunk.start, "max_rss": measured.max_rss, "seconds": round(measured.wall, 2)})
    return rows


def markdown(result: dict, memory: list[dict]) -> str:
    """The results as the tables of docs/bench.md."""
    one = result["one_pass"]
    lines = [f"Source `{result['source']}` ({result['duration']:.0f} s), rungs {', '.join(result['ladder'])}, "
             f"chunks of {result['chunk_seconds']:g} s.", "",
             "| Encode | Wall (s) | CPU (s) | Against one pass (wall, CPU) |", "|---|---|---|---|",
             f"| one pass (ladder process, audio in it) | {one['wall']} | {one['cpu']} | |"]
    for workers in (1, 2):
        row = result[f"chunks_{workers}"]
        lines.append(f"| chunks, {workers} at once (+ audio once) | {row['wall']} | {row['cpu']} | "
                     f"{row['wall_overhead']:+.1%}, {row['cpu_overhead']:+.1%} |")
    chunk_times = ", ".join(f"{c['seconds']:g}" for c in result["chunks_1"]["chunks"])
    peaks = ", ".join(f"{c['peak_rss'] / 2**20:.0f}" for c in result["chunks_1"]["chunks"])
    lines += ["", f"Per chunk, one at a time: {chunk_times} s; peak memory {peaks} MiB "
                  f"(one pass: {one['max_rss'] / 2**20:.0f} MiB).", "",
              "| Chunk process | Source length (s) | Chunk | Starts at (s) | Peak memory (MiB) |", "|---|---|---|---|---|"]
    lines += [f"| {m['source']} | {m['duration']:.0f} | {m['chunk']} | {m['start']:g} | {m['max_rss'] / 2**20:.0f} |"
              for m in memory]
    lines += ["", "| Fargate tasks (model) | Encode wall (s) |", "|---|---|"]
    lines += [f"| {n} | {s} |" for n, s in result["model"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chunks", description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="720p120", help=f"the long source (known: {', '.join(SOURCES)})")
    parser.add_argument("--memory-sources", default="720p60,720p120",
                        help="sources of two lengths for the chunks' memory ('none' to skip)")
    parser.add_argument("--ladder", default="360,720", help="rung heights")
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = results_dir(args.work, RESULTS, "chunks")
    ladder = tuple(int(h) for h in args.ladder.split(","))
    result = run(args.source, ladder, args.chunk_seconds, work)
    memory = [] if args.memory_sources == "none" else memory_flat(args.memory_sources.split(","), ladder,
                                                                  args.chunk_seconds, work)
    write_results(work, {"run": result, "memory": memory}, markdown(result, memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
