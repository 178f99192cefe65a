"""The benchmark run: contenders interleaved and repeated on each source, one quality pass per
source, the per-rendition design alternatives, and PixelFlow's memory on sources of other sizes.

Every result is a plain dict (see :mod:`bench.report` for the summary and the targets)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench import commands
from bench.measure import fresh_dir, run_group
from bench.pixelflow_run import Stack, run_pixelflow, upload_source
from bench.quality import Output, measure_size, measure_ssim
from pixelflow.pipeline import ffmpeg as pf_ffmpeg
from pixelflow.core.ladder import LadderConfig, Rendition, plan_ladder
from pixelflow.core.probe import SourceInfo, interpret_probe
from pixelflow.settings import PixelFlowSettings

LOW_LADDER = "360,480,720"


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "original" | "bare" | "pixelflow"
    ladder: str | None  # PIXELFLOW_LADDER; None: PixelFlow's default
    description: str


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("original", "original", None,
                  "the original container: 3 FFmpeg processes at once, each decoding the source; libx264/AAC "
                  "defaults; MP4 480x360, 858x480, 1280x720"),
        Contender("bare-360-720", "bare", LOW_LADDER,
                  "one FFmpeg command, PixelFlow's 360p/480p/720p rungs and settings, HLS to local disk"),
        Contender("pixelflow-360-720", "pixelflow", LOW_LADDER,
                  "PixelFlow end to end (S3 upload bucket -> published asset), PIXELFLOW_LADDER=360,480,720"),
        Contender("bare-default", "bare", None,
                  "one FFmpeg command, PixelFlow's default ladder (360p-1080p) and settings, HLS to local disk"),
        Contender("pixelflow-default", "pixelflow", None, "PixelFlow end to end, default ladder (360p-1080p)"),
    )
}
#: Contenders the benchmark runs unless told otherwise (``--contenders``).
DEFAULT_CONTENDERS = ["original", "bare-360-720", "pixelflow-360-720", "bare-default", "pixelflow-default"]


@dataclass
class SourceCase:
    name: str
    path: Path
    info: SourceInfo
    s3_key: str | None = None


def probe_source(name: str, path: Path) -> SourceCase:
    info = interpret_probe(pf_ffmpeg.probe(str(path)), size=path.stat().st_size)
    return SourceCase(name, path, info)


def ladder_config(ladder: str | None) -> LadderConfig:
    """The ladder configuration PixelFlow uses with ``PIXELFLOW_LADDER=ladder`` (else its default)."""
    default = PixelFlowSettings.model_fields["ladder"].default
    return PixelFlowSettings(ladder=ladder or ",".join(map(str, default))).ladder_config()


def plan_for(case: SourceCase, config: LadderConfig) -> list[Rendition]:
    assert case.info.video is not None and case.info.video.frame_rate is not None
    width, height = case.info.video.display_size
    return plan_ladder(width, height, case.info.video.frame_rate, config)


def _timeout(case: SourceCase) -> float:
    return 600 + 40 * max(case.info.duration, 1)


def run_contender(contender: Contender, case: SourceCase, repeat: int, work: Path, stack: Stack | None,
                  keep: Path | None) -> dict:
    """One measured run of one contender on one source; outputs kept in ``keep`` when given."""
    label = f"{case.name}-{contender.name}-r{repeat}"
    out = fresh_dir(keep if keep is not None else work / "scratch-out" / label)
    record: dict = {"source": case.name, "contender": contender.name, "repeat": repeat, "started_at": time.time()}
    if contender.kind == "original":
        m = run_group(commands.original_commands(case.path, out), work / "logs" / f"{label}.log", timeout=_timeout(case))
    elif contender.kind == "bare":
        config = ladder_config(contender.ladder)
        args = commands.bare_command(case.path, case.info, plan_for(case, config), config, out)
        m = run_group([args], work / "logs" / f"{label}.log", timeout=_timeout(case))
    else:
        assert stack is not None and case.s3_key is not None
        run = run_pixelflow(stack, case.s3_key, contender.ladder, work / "pixelflow", label,
                            keep_output=out if keep is not None else None, timeout=_timeout(case))
        m = run.measurement
        manifest = run.result.get("manifest") or {}
        record.update({
            "flow_state": run.result.get("state"),
            "flow_message": run.result.get("message"),
            "flow_process_maxrss": run.result.get("self_maxrss"),
            "flow_process_cpu": run.result.get("self_cpu"),
            "services_cpu": round(run.services_cpu, 2),
            "timeline": run.timeline,
            "asset_id": manifest.get("asset_id"),
            "renditions": [r["name"] for r in manifest.get("renditions", [])],
        })
    record["measure"] = m.to_dict()
    record["ok"] = m.ok and record.get("flow_state", "COMPLETED") == "COMPLETED"
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return record


def quality_pass(case: SourceCase, kept: dict[str, Path], work: Path, kinds: dict[str, tuple[str, str | None]]) -> list[dict]:
    """SSIM and bitrates of every kept output of ``case`` (one decode of the source).

    Args:
        kept: Output folder by contender (or variant) name.
        kinds: ``(kind, ladder)`` by the same names.
    """
    outputs: list[tuple[str, str, Output]] = []
    for name, folder in kept.items():
        kind, ladder = kinds[name]
        if kind == "original":
            for rung, w, h in commands.ORIGINAL_SIZES:
                if (folder / f"{rung}.mp4").exists():
                    outputs.append((name, rung, Output(f"{name}-{rung}", folder / f"{rung}.mp4", w, h)))
            continue
        config = ladder_config(ladder)
        for r in plan_for(case, config):
            if (folder / r.name / "index.m3u8").exists():
                outputs.append((name, r.name, Output(f"{name}-{r.name}", folder / r.name, r.width, r.height,
                                                     r.maxrate_kbps, r.bufsize_kbps, config.segment_seconds)))
    for _, _, output in outputs:
        measure_size(output)
    measure_ssim(case.path, [o for _, _, o in outputs], work / "ssim" / case.name, work / "logs" / f"ssim-{case.name}.log",
                 timeout=_timeout(case) * 2)
    return [{"source": case.name, "contender": name, "rendition": rung, "width": o.width, "height": o.height, **o.stats}
            for name, rung, o in outputs]


def run_engine_variant(variant: commands.EngineVariant, case: SourceCase, repeat: int, work: Path,
                       keep: Path | None) -> dict:
    """One measured run of PixelFlow's encoding engine in one design variant (video rungs only)."""
    label = f"{case.name}-{variant.name}-r{repeat}"
    out = fresh_dir(keep if keep is not None else work / "scratch-out" / label)
    config = ladder_config(None)
    run = commands.engine_commands(variant, case.path, case.info, plan_for(case, config), config, out)
    m = run_group(run.commands, work / "logs" / f"{label}.log", timeout=_timeout(case), stdin=run.stdin,
                  pass_fds=run.pass_fds, after_start=run.close_parent_fds, quiet_stdout=True)
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return {"source": case.name, "variant": variant.name, "repeat": repeat, "measure": m.to_dict(), "ok": m.ok,
            "started_at": time.time()}


def interleaved(names: list[str], repeats: int) -> list[tuple[int, str]]:
    """Run order: every name once per round, the order rotated each round (a slow or busy stretch
    of the machine is spread over all contenders)."""
    order = []
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            order.append((repeat, name))
    return order


def run_benchmark(cases: list[SourceCase], contender_names: list[str], repeats: int, work: Path, stack: Stack | None,
                  say: Callable[[str], None], checkpoint: Callable[[dict], None] = lambda record: None,
                  ) -> tuple[list[dict], list[dict]]:
    """Every contender ``repeats`` times per source, interleaved; then the quality pass."""
    runs: list[dict] = []
    quality: list[dict] = []
    for case in cases:
        if stack is not None and any(CONTENDERS[n].kind == "pixelflow" for n in contender_names):
            case.s3_key = f"sources/{case.path.name}"
            upload_source(stack, case.path, case.s3_key)
        kept: dict[str, Path] = {}
        for repeat, name in interleaved(contender_names, repeats):
            keep = work / "outputs" / case.name / name if repeat == 0 else None
            record = run_contender(CONTENDERS[name], case, repeat, work, stack, keep)
            runs.append(record)
            checkpoint(record)
            if keep is not None and record["ok"]:
                kept[name] = keep
            say(_run_line(record, name))
        say(f"[{case.name}] measuring SSIM and bitrates of {len(kept)} contenders' outputs ...")
        quality += quality_pass(case, kept, work,
                                {n: (CONTENDERS[n].kind, CONTENDERS[n].ladder) for n in kept})
    return runs, quality


def run_alternatives(case: SourceCase, variant_names: list[str], repeats: int, work: Path,
                     say: Callable[[str], None], checkpoint: Callable[[dict], None] = lambda record: None,
                     ) -> tuple[list[dict], list[dict]]:
    """The per-rendition design variants, interleaved and repeated, then their quality pass."""
    runs: list[dict] = []
    kept: dict[str, Path] = {}
    for repeat, name in interleaved(variant_names, repeats):
        keep = work / "outputs" / f"alt-{case.name}" / name if repeat == 0 else None
        record = run_engine_variant(commands.ENGINE_VARIANTS[name], case, repeat, work, keep)
        runs.append(record)
        checkpoint(record)
        if keep is not None and record["ok"]:
            kept[name] = keep
        say(_run_line(record, name))
    say(f"[{case.name}] measuring SSIM and bitrates of {len(kept)} variants' outputs ...")
    quality = quality_pass(case, kept, work, {n: ("engine", None) for n in kept})
    for row in quality:
        row["variant"] = row.pop("contender")
    return runs, quality


def _run_line(record: dict, name: str) -> str:
    m = record["measure"]
    status = "ok" if record["ok"] else f"FAILED {m['returncodes']} {record.get('flow_message') or ''}"
    extra = ""
    if "timeline" in record:
        extra = f", flow process peak {(record.get('flow_process_maxrss') or 0) / 2**20:.0f} MiB"
    return (f"[{record['source']}] r{record['repeat']} {name:<22} wall {m['wall']:7.1f} s  cpu {m['cpu']:7.1f} s  "
            f"peak {m['tree_peak_rss'] / 2**20:6.0f} MiB{extra}  {status}")
