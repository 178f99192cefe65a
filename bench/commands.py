"""The FFmpeg commands the benchmark runs outside PixelFlow's flow.

* :func:`original_commands`: what the original PixelFlow container did: three FFmpeg processes
  at once, one per size, each decoding the whole source, FFmpeg's default libx264 and AAC
  settings, aspect-distorting MP4 outputs.
* :func:`bare_command`: the best single FFmpeg command for PixelFlow's own ladder: one decode,
  ``split`` in a filter graph, the same per-rung filters and libx264 settings as PixelFlow
  (built with :mod:`pixelflow.core.ffmpeg_args`), audio encoded once, the same HLS outputs.
* :func:`engine_commands`: PixelFlow's encoding (its ladder process) without Prefect or S3, and
  the design alternatives measured against it: ``fanout`` (one decoder process piping raw frames
  to one encoder process per rung, PixelFlow's engine before the ladder process; kept here only,
  to go on measuring the idea), and one process per rung decoding the source itself.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pixelflow.core import ffmpeg_args
from pixelflow.core.ffmpeg_args import (
    audio_output_args, base_args, encode_args, input_args, prefilters, rung_filters, rung_output_args,
)
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.probe import SourceInfo

#: The original container's three outputs: (name, width, height).
ORIGINAL_SIZES = [("360p", 480, 360), ("480p", 858, 480), ("720p", 1280, 720)]

QUIET = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


def original_commands(source: Path, out_dir: Path) -> list[list[str]]:
    """Three independent FFmpeg processes, as the original container ran them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        QUIET + ["-i", str(source), "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-c:a", "aac", str(out_dir / f"{name}.mp4")]
        for name, w, h in ORIGINAL_SIZES
    ]


def split_graph(info: SourceInfo, plan: list[Rendition]) -> tuple[str, list[str]]:
    """One ``split`` of the decoded picture, then each rung scaled from the source (PixelFlow's
    graph before two-stage scaling)."""
    assert info.video is not None
    n = len(plan)
    head = f"[0:{info.video.index}]" + ",".join(prefilters(info) + [f"split={n}" if n > 1 else "null"])
    graph = head + "".join(f"[s{i}]" for i in range(n)) + ";"
    graph += ";".join(f"[s{i}]" + ",".join(rung_filters(r)) + f"[v{i}]" for i, r in enumerate(plan))
    return graph, [f"v{i}" for i in range(n)]


def cascade_graph(info: SourceInfo, plan: list[Rendition], sws_threads: int = 0,
                  chain: bool = True) -> tuple[str, list[str]]:
    """Cascaded scaling: the source is scaled once, to the largest rung, and the other rungs are
    scaled from smaller pictures, so only one scaler reads full-size frames.

    Args:
        chain: Each rung from the one above it (4K -> 1080p -> 720p -> 480p -> 360p); else
            two stages: every lower rung from the largest one (4K -> 1080p -> 720p, 480p, 360p).
    """
    assert info.video is not None
    order = sorted(range(len(plan)), key=lambda i: -(plan[i].width * plan[i].height))
    threads = f":threads={sws_threads}" if sws_threads else ""
    pre = prefilters(info)
    source = f"[0:{info.video.index}]" + (",".join(pre) + "," if pre else "")

    def step(r: Rendition) -> str:
        return f"fps={r.fps_text},scale={r.width}:{r.height}:flags=bicubic{threads}"

    top, rest = order[0], order[1:]
    if not rest:
        return f"{source}{step(plan[top])},setsar=1,format=yuv420p[v{top}]", [f"v{top}"]
    if not chain:
        chains = [f"{source}{step(plan[top])},split={len(order)}[o{top}]" + "".join(f"[n{i}]" for i in rest),
                  f"[o{top}]setsar=1,format=yuv420p[v{top}]"]
        chains += [f"[n{i}]{step(plan[i])},setsar=1,format=yuv420p[v{i}]" for i in rest]
        return ";".join(chains), [f"v{i}" for i in range(len(plan))]
    chains = []
    upstream = source
    for position, i in enumerate(order):
        if position == len(order) - 1:
            chains.append(f"{upstream}{step(plan[i])},setsar=1,format=yuv420p[v{i}]")
        else:
            chains.append(f"{upstream}{step(plan[i])},split=2[o{i}][n{i}]")
            chains.append(f"[o{i}]setsar=1,format=yuv420p[v{i}]")
            upstream = f"[n{i}]"
    return ";".join(chains), [f"v{i}" for i in range(len(plan))]


def pixelflow_graph(info: SourceInfo, plan: list[Rendition]) -> tuple[str, list[str]]:
    """The filter graph PixelFlow's ladder process runs, so the bare command makes the same
    pictures: ``ladder_graph`` when :mod:`pixelflow.core.ffmpeg_args` has one, else one ``split``
    and each rung scaled from the source (:func:`split_graph`)."""
    build = getattr(ffmpeg_args, "ladder_graph", None)
    return build(info, plan) if build is not None else split_graph(info, plan)


def scaling_graph(info: SourceInfo, plan: list[Rendition], scaling: str, sws_threads: int = 0) -> tuple[str, list[str]]:
    """The filter graph for a scaling strategy: ``pixelflow`` (whatever PixelFlow's decoder does),
    ``direct`` (split, each rung from the source), ``chain`` or ``two-stage`` (see
    :func:`cascade_graph`)."""
    if scaling == "pixelflow":
        return pixelflow_graph(info, plan)
    if scaling == "direct":
        return split_graph(info, plan)
    return cascade_graph(info, plan, sws_threads, chain=scaling == "chain")


def bare_command(source: Path, info: SourceInfo, plan: list[Rendition], config: LadderConfig, out_dir: Path,
                 scaling: str = "pixelflow") -> list[str]:
    """One FFmpeg process writing every rung and the audio rendition as HLS to ``out_dir``, with
    the same filter graph as PixelFlow's decoder (``scaling="pixelflow"``) unless told otherwise."""
    graph, labels = scaling_graph(info, plan, scaling)
    args = QUIET + ["-i", str(source), "-filter_complex", graph]
    for label, rendition in zip(labels, plan):
        folder = out_dir / rendition.name
        folder.mkdir(parents=True, exist_ok=True)
        args += ["-map", f"[{label}]"] + rung_output_args(rendition, config, str(folder))
    if info.audio is not None:
        folder = out_dir / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        args += ["-map", f"0:{info.audio.index}"] + audio_output_args(config, str(folder))
    return args


@dataclass(frozen=True)
class EngineVariant:
    """One way of running PixelFlow's per-rendition encoding, without Prefect or S3."""

    name: str
    description: str
    mode: str = "fanout"  # "fanout" | "per-rung" | "single"
    scaling: str = "pixelflow"  # "pixelflow" (what PixelFlow's ladder process does) | "direct" | "chain" | "two-stage"
    decoder_threads: int = 0
    encoder_threads: int = 0
    sws_threads: int = 0
    pipe_size: int = 1 << 20  # 1 MiB, what PixelFlow's fanout engine used; 0 leaves the kernel default (64 KiB)
    extra_decoder_args: tuple[str, ...] = field(default_factory=tuple)


ENGINE_VARIANTS: dict[str, EngineVariant] = {
    v.name: v
    for v in (
        EngineVariant("fanout", "bench only (PixelFlow's former engine): one decoder process (two-stage scaling: "
                                "source -> largest rung -> each smaller rung), 1 MiB pipes, one libx264 process per rung"),
        EngineVariant("fanout-direct", "fanout, each rung scaled from the source (split)", scaling="direct"),
        EngineVariant("per-rung-decode", "each rung's process decodes and scales the source itself "
                                         "(what a rung's retry runs)", mode="per-rung"),
        EngineVariant("single-process", "PixelFlow's ladder process: one FFmpeg process for every rung, "
                                        "PixelFlow's graph (the bare command's video)", mode="single"),
        EngineVariant("single-process-cascade", "one FFmpeg process, chained scaling", mode="single",
                      scaling="chain"),
        EngineVariant("single-process-2stage", "one FFmpeg process, two-stage scaling", mode="single",
                      scaling="two-stage"),
        EngineVariant("fanout-cascade", "fanout, chained scaling: source -> 1080p -> 720p -> 480p -> 360p",
                      scaling="chain"),
        EngineVariant("fanout-2stage", "fanout, two-stage scaling: source -> 1080p -> each of 720p, 480p, 360p",
                      scaling="two-stage"),
        EngineVariant("fanout-cascade-x264t2", "fanout, chained scaling, 2 libx264 threads per encoder",
                      scaling="chain", encoder_threads=2),
        EngineVariant("fanout-2stage-x264t2", "fanout, two-stage scaling, 2 libx264 threads per encoder",
                      scaling="two-stage", encoder_threads=2),
        EngineVariant("fanout-x264t2", "fanout, 2 libx264 threads per encoder (default: automatic)", encoder_threads=2),
        EngineVariant("fanout-dec1", "fanout, decoder limited to 1 thread (default: automatic)", decoder_threads=1),
        EngineVariant("fanout-pipe64k", "fanout with the kernel's default 64 KiB pipes", pipe_size=0),
    )
}


#: Variants the benchmark runs unless told otherwise (the others are opt-in: ``--alternatives``).
DEFAULT_VARIANTS = ["fanout", "fanout-direct", "per-rung-decode", "single-process", "fanout-cascade",
                    "fanout-x264t2"]


@dataclass
class EngineRun:
    """Processes to start for one engine variant run: commands, and for each the pipe ends it
    reads as stdin or writes as extra file descriptors."""

    commands: list[list[str]]
    stdin: list[int | None]
    pass_fds: list[tuple[int, ...]]
    parent_fds: list[int]

    def close_parent_fds(self) -> None:
        for fd in self.parent_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.parent_fds = []


def _pipe(size: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    if size:
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass
    return read_fd, write_fd


def fanout_decoder_args(source: Path, info: SourceInfo, plan: list[Rendition], fds: list[int],
                        variant: EngineVariant) -> list[str]:
    """The fanout decoder process: one decode writing each rung's raw frames (NUT, rawvideo) to
    the inherited file descriptors ``fds``, with the variant's graph and thread settings."""
    graph, labels = scaling_graph(info, plan, variant.scaling, variant.sws_threads)
    args = base_args(progress=False) + ["-threads", str(variant.decoder_threads), *variant.extra_decoder_args]
    args += input_args(str(source), info.demuxer) + ["-filter_complex", graph]
    for label, fd in zip(labels, fds):
        args += ["-map", f"[{label}]", "-c:v", "rawvideo", "-fps_mode", "passthrough", "-f", "nut", f"pipe:{int(fd)}"]
    return args


def pipe_encoder_args(rendition: Rendition, config: LadderConfig, out_dir: str) -> list[str]:
    """A fanout encoder process: one rung's raw frames, already scaled, from the decoder's pipe on
    standard input, encoded as PixelFlow encodes the rung."""
    return (base_args() + ["-protocol_whitelist", "pipe", "-f", "nut", "-i", "pipe:0", "-map", "0"]
            + rung_output_args(rendition, config, out_dir))


def engine_commands(variant: EngineVariant, source: Path, info: SourceInfo, plan: list[Rendition],
                    config: LadderConfig, out_dir: Path) -> EngineRun:
    """The processes of one engine variant (video rungs only; audio and poster are the same in
    every variant and left out)."""
    config = replace(config, threads=variant.encoder_threads)
    for r in plan:
        (out_dir / r.name).mkdir(parents=True, exist_ok=True)
    if variant.mode == "single":
        info_no_audio = replace(info, audio=None)
        return EngineRun([bare_command(source, info_no_audio, plan, config, out_dir, variant.scaling)], [None], [()], [])
    if variant.mode == "per-rung":
        commands = [encode_args(str(source), info, r, config, str(out_dir / r.name)) for r in plan]
        return EngineRun(commands, [None] * len(plan), [()] * len(plan), [])
    pipes = [_pipe(variant.pipe_size) for _ in plan]
    write_fds = [w for _, w in pipes]
    commands = [fanout_decoder_args(source, info, plan, write_fds, variant)]
    stdin: list[int | None] = [None]
    pass_fds: list[tuple[int, ...]] = [tuple(write_fds)]
    for (read_fd, _), r in zip(pipes, plan):
        commands.append(pipe_encoder_args(r, config, str(out_dir / r.name)))
        stdin.append(read_fd)
        pass_fds.append(())
    return EngineRun(commands, stdin, pass_fds, [fd for pair in pipes for fd in pair])
