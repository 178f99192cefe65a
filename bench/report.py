"""Summaries of a benchmark run: medians and spread, ratios, targets, Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

GIB = 2**30
MIB = 2**20

#: The targets the benchmark checks.
SPEED_VS_ORIGINAL = 0.5
SPEED_VS_BARE = 1.10
SSIM_TOLERANCE = 0.003
FLOW_MEMORY_LIMIT = 1.5 * GIB


def results_dir(work: Path | None, results: Path, name: str) -> Path:
    """The folder a benchmark writes to: ``work``, or a new ``<name>-<date>-<time>`` in ``results``
    (created)."""
    folder = (work or results / time.strftime(f"{name}-%Y%m%d-%H%M%S")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_results(work: Path, data: dict[str, Any], text: str) -> None:
    """Write a benchmark's ``results.json`` and ``report.md`` into ``work``, and print the report."""
    (work / "results.json").write_text(json.dumps(data, indent=2))
    (work / "report.md").write_text(text)
    print(text)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        version = "?"
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory / GIB, 1), "kernel": platform.release(),
            "python": platform.python_version(), "ffmpeg": version, "load_average": os.getloadavg()}


def spread(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize_runs(runs: list[dict], key: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (source, contender-or-variant): median and range of wall and CPU, peaks, PixelFlow timings."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        if run["ok"]:
            groups.setdefault((run["source"], run[key]), []).append(run)
    summary = {}
    for group, items in groups.items():
        row: dict[str, Any] = {
            "wall": spread([r["measure"]["wall"] for r in items]),
            "cpu": spread([r["measure"]["cpu"] for r in items]),
            "max_rss": max(r["measure"]["max_rss"] for r in items),
            "tree_peak_rss": max(r["measure"]["tree_peak_rss"] for r in items),
        }
        if "timeline" in items[0]:
            lowest = []
            for r in items:
                tasks = r["timeline"].get("tasks", {})
                first = r["renditions"][0] if r.get("renditions") else None
                lowest.append((tasks.get(f"upload-{first}") or {}).get("end") if first else None)
            publish = [next((t.get("end") for n, t in r["timeline"].get("tasks", {}).items()
                             if n.startswith("publish-asset")), None) for r in items]
            own = [p - e for p, e in zip(publish, (encode_seconds(r) for r in items)) if p is not None and e is not None]
            row.update({
                "own_cost": spread(own),
                "flow_process_maxrss": max(r.get("flow_process_maxrss") or 0 for r in items),
                "services_cpu": spread([r.get("services_cpu") for r in items]),
                "flow_start": spread([r["timeline"].get("flow_start") for r in items]),
                "lowest_rung_uploaded": spread(lowest),
                "published": spread(publish),
                "full_decodes": max(full_decodes(r) for r in items),
            })
        decoder = [decoder_cpu(r) for r in items]
        if any(d is not None for d in decoder):
            row["decoder_cpu"] = spread([d for d in decoder if d is not None])
        summary[group] = row
    return summary


def process_kind(argv: list[str]) -> str:
    """What a process of a PixelFlow run is, from its command line: ``flow``, ``ffprobe``,
    ``decoder`` (fanout: decode and scale into pipes), ``encoder`` (fanout: one rung from its
    pipe), ``ladder`` (single: decode, scale and encode every rendition), ``rung-from-source`` (a
    rung retried alone), ``poster``, ``audio`` or ``other``."""
    name = os.path.basename(argv[0]) if argv else "?"
    if name.startswith("python"):
        return "flow"
    if name == "ffprobe":
        return "ffprobe"
    if name != "ffmpeg":
        return "other"
    if "-filter_complex" in argv:
        return "decoder" if any(a.startswith("pipe:") and a not in ("pipe:0", "pipe:1") for a in argv) else "ladder"
    if "pipe:0" in argv:
        return "encoder"
    if "-frames:v" in argv:
        return "poster"
    if "-vn" in argv:
        return "audio"
    return "rung-from-source" if "-filter:v" in argv else "other"


#: The processes that decode the whole source's video.
FULL_DECODERS = ("decoder", "ladder", "rung-from-source")


def _processes(run: dict, *kinds: str) -> list[dict]:
    return [p for p in run["measure"].get("processes", []) if process_kind(p["argv"]) in kinds]


def encode_seconds(run: dict) -> float | None:
    """How long the FFmpeg process that decodes the source (the ladder process, or the fanout
    decoder) was alive: the encode, which a bare command also pays."""
    found = _processes(run, "ladder", "decoder")
    return found[0]["seconds"] if found else None


def decoder_cpu(run: dict) -> float | None:
    """CPU seconds of the shared decoder process of a fanout run (``None`` without one)."""
    found = _processes(run, "decoder")
    return found[0]["cpu"] if found else None


def full_decodes(run: dict) -> int:
    """FFmpeg processes of a PixelFlow run that decoded the whole source's video: the shared
    decoder or ladder process, plus any rung encoded straight from the source."""
    return len(_processes(run, *FULL_DECODERS))


def process_breakdown(run: dict) -> list[dict[str, Any]]:
    """CPU and peak memory of each process of a run, labelled by its role."""
    rows = []
    for process in run["measure"].get("processes", []):
        argv = process["argv"]
        kind = process_kind(argv)
        if kind == "ladder":
            rungs = [a.rstrip("/").split("/")[-2] for a in argv if a.endswith("index.m3u8")]
            rungs += ["poster"] if any(a.endswith(".jpg") for a in argv) else []
            role = f"ladder process (decode, scale, encode {', '.join(rungs)})"
        elif kind == "encoder":
            role = f"encoder {argv[-1].rstrip('/').split('/')[-2]}"
        elif kind == "other":
            role = " ".join(argv[:3])
        else:
            role = ROLES[kind]
        rows.append({"role": role, "cpu": process["cpu"], "peak_rss": process["peak_rss"], "seconds": process["seconds"]})
    return rows


ROLES = {"flow": "flow process (Python, Prefect, boto3)", "ffprobe": "ffprobe (validate)",
         "decoder": "decoder (decode + scale, feeds the pipes)", "rung-from-source": "rung encoded from the source",
         "poster": "poster", "audio": "audio"}


def _fmt_spread(s: dict[str, float], digits: int = 1) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _ratio(a: dict | None, b: dict | None, field: str = "wall") -> float | None:
    if not a or not b or not a.get(field) or not b.get(field):
        return None
    return a[field]["median"] / b[field]["median"]


def _peak(q: dict) -> str:
    if not q.get("peak_kbps"):
        return "-"
    if q.get("short_segments") and q.get("peak_any_kbps", 0) > q["peak_kbps"]:
        return f"{q['peak_kbps']} ({q['peak_any_kbps']} in a {q['short_segments'][-1]} s segment)"
    return str(q["peak_kbps"])


def _pair(row: dict, other: dict | None) -> str:
    wall, cpu = _ratio(row, other), _ratio(row, other, "cpu")
    if wall is None or cpu is None:
        return "-"
    return f"{wall:.2f}x / {cpu:.2f}x"


def targets(summary: dict, quality: list[dict], source: str) -> list[dict[str, Any]]:
    """Whether PixelFlow met each target on ``source``."""
    results = []
    pf3 = summary.get((source, "pixelflow-360-720"))
    pf4 = summary.get((source, "pixelflow-default"))
    original = summary.get((source, "original"))
    bare3 = summary.get((source, "bare-360-720"))
    bare4 = summary.get((source, "bare-default"))
    ratio = _ratio(pf3, original)
    if ratio is not None:
        results.append({"target": f"PixelFlow (360p-720p) wall time ≤ {SPEED_VS_ORIGINAL}x the original",
                        "value": f"{ratio:.2f}x (CPU time {_ratio(pf3, original, 'cpu'):.2f}x)",
                        "met": ratio <= SPEED_VS_ORIGINAL})
    for pf, bare, label in ((pf3, bare3, "360p-720p"), (pf4, bare4, "default ladder")):
        ratio = _ratio(pf, bare)
        if ratio is not None:
            results.append({"target": f"PixelFlow ({label}) wall time ≤ {SPEED_VS_BARE}x the bare FFmpeg command "
                                      "(flow process start to exit)",
                            "value": f"{ratio:.2f}x (CPU time {_ratio(pf, bare, 'cpu'):.2f}x)",
                            "met": ratio <= SPEED_VS_BARE})
        published = (pf or {}).get("published", {}).get("median")
        if published and bare:
            ratio = published / bare["wall"]["median"]
            results.append({"target": f"PixelFlow ({label}) upload bucket to published asset ≤ {SPEED_VS_BARE}x "
                                      "the bare FFmpeg command (flow process start to manifest.json written)",
                            "value": f"{ratio:.2f}x ({published:.1f} s vs {bare['wall']['median']:.1f} s)",
                            "met": ratio <= SPEED_VS_BARE})
        own = (pf or {}).get("own_cost", {}).get("median")
        if own is not None and bare:
            share = own / bare["wall"]["median"]
            results.append({"target": f"PixelFlow ({label}) orchestration, validation and S3 transfer ≤ "
                                      f"{SPEED_VS_BARE - 1:.0%} of the bare command (time to the published asset "
                                      "minus the encode process's lifetime)",
                            "value": f"{share:.1%} ({own:.1f} s of {bare['wall']['median']:.1f} s)",
                            "met": share <= SPEED_VS_BARE - 1})
    rows = {(q["contender"], q["height"]): q for q in quality if q["source"] == source and "contender" in q}
    for height in (360, 480, 720):
        mine, theirs = rows.get(("pixelflow-360-720", height)), rows.get(("original", height))
        if mine and theirs and "ssim" in mine and "ssim" in theirs:
            delta = mine["ssim"] - theirs["ssim"]
            results.append({"target": f"{height}p SSIM no more than {SSIM_TOLERANCE} below the original's",
                            "value": f"{mine['ssim']:.4f} vs {theirs['ssim']:.4f} ({delta:+.4f})",
                            "met": delta >= -SSIM_TOLERANCE})
    capped = [q for q in quality if q["source"] == source and q.get("contender", "").startswith("pixelflow")
              and q.get("cap_kbps")]
    if capped:
        bad = [f"{q['contender']} {q['rendition']}" for q in capped if not q.get("within_cap")]
        results.append({"target": "PixelFlow bitrates within the ladder's caps (VBV: average ≤ maxrate + "
                                  "bufsize/duration, every segment of T s ≤ maxrate·T + bufsize)",
                        "value": "all within" if not bad else "over: " + ", ".join(bad), "met": not bad})
    for pf, label in ((pf3, "360p-720p"), (pf4, "default ladder")):
        if pf and pf.get("flow_process_maxrss"):
            value = pf["flow_process_maxrss"]
            results.append({"target": f"Flow process peak memory < 1.5 GiB ({label})",
                            "value": f"{value / MIB:.0f} MiB", "met": value < FLOW_MEMORY_LIMIT})
        if pf and "full_decodes" in pf:
            results.append({"target": f"One full decode of the source per run ({label}; validation adds none)",
                            "value": str(pf["full_decodes"]), "met": pf["full_decodes"] == 1})
    return results


def markdown(data: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    lines: list[str] = []
    m = data["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
              f"{m['ffmpeg'].split(' Copyright')[0]}, Python {m['python']}. "
              f"Load average at start {data['load_start'][0]:.1f}, at end {data['load_end'][0]:.1f}.",
              f"Command: `{data['command']}` ({data['repeats']} repeat(s), contenders interleaved; "
              f"total {data['elapsed'] / 60:.1f} min).", ""]
    summary = data["summary"]
    for source in data["sources"]:
        lines += [f"### Source `{source}` ({data['source_descriptions'].get(source, '')})", "",
                  "| Contender | Wall s, median (min–max) | CPU s, median (min–max) | Peak RSS, all processes | "
                  "Largest process | vs original: wall / CPU | vs bare: wall / CPU |",
                  "|---|---|---|---|---|---|---|"]
        for name in data["contenders"]:
            row = summary.get((source, name))
            if not row:
                lines.append(f"| {name} | failed | | | | | |")
                continue
            original = summary.get((source, "original")) if name != "original" else None
            bare = "bare-360-720" if name.endswith("360-720") else "bare-default"
            bare_row = summary.get((source, bare)) if name.startswith("pixelflow") else None
            lines.append(
                f"| {name} | {_fmt_spread(row['wall'])} | {_fmt_spread(row['cpu'])} | "
                f"{row['tree_peak_rss'] / MIB:.0f} MiB | {row['max_rss'] / MIB:.0f} MiB | "
                f"{_pair(row, original)} | {_pair(row, bare_row)} |")
        lines.append("")
        pf_rows = [(n, summary.get((source, n))) for n in data["contenders"] if n.startswith("pixelflow")]
        pf_rows = [(n, r) for n, r in pf_rows if r]
        if pf_rows:
            lines += ["| PixelFlow run | Flow run started | Lowest rung uploaded | Asset published (manifest) | "
                      "Flow process peak RSS | Services CPU s (moto + Prefect server) | Full decodes |",
                      "|---|---|---|---|---|---|---|"]
            for name, row in pf_rows:
                lines.append(f"| {name} | {_fmt_spread(row['flow_start'])} s | {_fmt_spread(row['lowest_rung_uploaded'])} s | "
                             f"{_fmt_spread(row['published'])} s | {row['flow_process_maxrss'] / MIB:.0f} MiB | "
                             f"{_fmt_spread(row['services_cpu'])} | {row['full_decodes']} |")
            lines += ["", "Times are seconds from the start of the flow-run process (Python and Prefect start-up "
                          "included), read from the Prefect API's task runs.", ""]
        quality = [q for q in data["quality"] if q["source"] == source]
        if quality:
            lines += ["| Contender | Rendition | Size | SSIM (all) | SSIM (Y) | Average kbit/s | Peak segment kbit/s | "
                      "Cap kbit/s | Within cap |", "|---|---|---|---|---|---|---|---|---|"]
            for q in quality:
                lines.append(
                    f"| {q['contender']} | {q['rendition']} | {q['width']}x{q['height']} | {q.get('ssim', '-')} | "
                    f"{q.get('ssim_y', '-')} | {q['avg_kbps']} | {_peak(q)} | {q.get('cap_kbps') or '-'} | "
                    f"{'-' if q.get('within_cap') is None else ('yes' if q['within_cap'] else 'no')} |")
            lines.append("")
        checks = data["targets"].get(source, [])
        if checks:
            lines += ["| Target | Measured | Met |", "|---|---|---|"]
            for t in checks:
                lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
            lines.append("")
        breakdown = data.get("breakdown", {}).get(source)
        if breakdown:
            lines += [f"Where the CPU goes in one `{breakdown['contender']}` run (repeat {breakdown['repeat']}):", "",
                      "| Process | CPU s | Peak RSS | Alive s |", "|---|---|---|---|"]
            for p in breakdown["processes"]:
                lines.append(f"| {p['role']} | {p['cpu']:.1f} | {p['peak_rss'] / MIB:.0f} MiB | {p['seconds']:.1f} |")
            lines.append("")
    if data.get("alternatives"):
        alt = data["alternatives"]
        lines += [f"### Per-rendition design alternatives (`{alt['source']}`, default ladder, video only, "
                  f"no Prefect/S3; {alt['repeats']} repeat(s) interleaved)", "",
                  "| Variant | Wall s, median (min–max) | CPU s | Decoder CPU s | Peak RSS, all processes | Wall vs fanout | "
                  "CPU vs fanout | SSIM vs fanout (worst rung) | What it is |", "|---|---|---|---|---|---|---|---|---|"]
        base = alt["summary"].get("fanout")
        ssim = {}
        for q in alt["quality"]:
            ssim.setdefault(q["variant"], {})[q["rendition"]] = q.get("ssim")
        for name in alt["variants"]:
            row = alt["summary"].get(name)
            if not row:
                lines.append(f"| {name} | failed | | | | | | | |")
                continue
            deltas = [ssim.get(name, {}).get(r, 0) - (ssim.get("fanout", {}).get(r) or 0) for r in ssim.get(name, {})
                      if ssim.get("fanout", {}).get(r) is not None and ssim[name][r] is not None]
            worst = min(deltas) if deltas else None
            wall_ratio = "-" if name == "fanout" or not base else f"{_ratio(row, base):.2f}x"
            cpu_ratio = "-" if name == "fanout" or not base else f"{_ratio(row, base, 'cpu'):.2f}x"
            quality_delta = "-" if worst is None or name == "fanout" else f"{worst:+.4f}"
            lines.append(
                f"| {name} | {_fmt_spread(row['wall'])} | {_fmt_spread(row['cpu'])} | "
                f"{_fmt_spread(row.get('decoder_cpu') or {})} | {row['tree_peak_rss'] / MIB:.0f} MiB | {wall_ratio} | {cpu_ratio} | {quality_delta} | {alt['descriptions'][name]} |")
        lines.append("")
    if data.get("memory"):
        lines += ["### PixelFlow's memory against source size (default ladder)", "",
                  "| Source | Wall s | Flow process peak RSS | Peak RSS, all processes |", "|---|---|---|---|"]
        for row in data["memory"]:
            lines.append(f"| {row['source']} | {row['wall']:.1f} | {row['flow_process_maxrss'] / MIB:.0f} MiB | "
                         f"{row['tree_peak_rss'] / MIB:.0f} MiB |")
        lines.append("")
    return "\n".join(lines)
