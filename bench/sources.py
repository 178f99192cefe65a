"""Standard benchmark sources, generated with FFmpeg and cached under ``bench/.cache/``.

Every source is ``testsrc2`` (moving patterns, text, a gradient) with temporal noise on every
frame (``noise=alls=20:allf=t``), so each frame has fresh detail and the encoders cannot coast
on flat colour, plus a stereo AAC tone: H.264 High profile, 30 fps, 2 s keyframe interval, the
video bitrate of a camera recording of that size. A file is regenerated only when its recipe
changes (the recipe's hash is part of the file name). An audio-only source (pink noise, AAC in
M4A: :func:`ensure_audio_source`) is cached the same way.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class SourceSpec:
    """How to make one source."""

    name: str
    width: int
    height: int
    seconds: float
    video_kbps: int
    fps: int = 30
    description: str = ""
    piece: str | None = None  # loop this (shorter) source instead of generating from scratch
    loops: int = 1

    def args(self, out: Path, piece_path: Path | None = None) -> list[str]:
        """The FFmpeg command that generates this source into ``out``."""
        if self.piece:  # the video looped as is; the audio made anew, so it has no seams
            return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                    "-stream_loop", str(self.loops - 1), "-i", str(piece_path or self.piece),
                    "-f", "lavfi", "-i", self._tone(),
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
                    "-movflags", "+faststart", "-shortest", str(out)]
        size = f"{self.width}x{self.height}"
        return [
            "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={self.fps}:duration={self.seconds:g}",
            "-f", "lavfi", "-i", self._tone(),
            "-filter:v", "noise=alls=20:allf=t",
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
            "-b:v", f"{self.video_kbps}k", "-maxrate", f"{self.video_kbps}k", "-bufsize", f"{self.video_kbps * 2}k",
            "-g", str(self.fps * 2), "-keyint_min", str(self.fps * 2),
            "-c:a", "aac", "-b:a", "128k", "-ac", "2",
            "-movflags", "+faststart", "-shortest", str(out),
        ]

    def _tone(self) -> str:
        return f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={self.seconds:g}"

    @property
    def recipe(self) -> str:
        text = " ".join(self.args(Path("out.mp4")))
        if self.piece:
            text += SOURCES[self.piece].recipe
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def path(self, cache: Path = CACHE) -> Path:
        return cache / f"{self.name}-{self.recipe}.mp4"


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("4k60", 3840, 2160, 60, 20000, description="3840x2160 30 fps, 60 s, H.264 20 Mbit/s + AAC",
                   piece="4k10", loops=6),
        SourceSpec("4k10", 3840, 2160, 10, 20000, description="3840x2160 30 fps, 10 s, H.264 20 Mbit/s + AAC"),
        SourceSpec("1080p60", 1920, 1080, 60, 8000, description="1920x1080 30 fps, 60 s, H.264 8 Mbit/s + AAC",
                   piece="1080p10", loops=6),
        SourceSpec("1080p10", 1920, 1080, 10, 8000, description="1920x1080 30 fps, 10 s, H.264 8 Mbit/s + AAC"),
        # the long sources of the chunked-encoding benchmark (python -m bench.chunks)
        SourceSpec("720p120", 1280, 720, 120, 4000, description="1280x720 30 fps, 120 s, H.264 4 Mbit/s + AAC",
                   piece="720p10", loops=12),
        SourceSpec("720p60", 1280, 720, 60, 4000, description="1280x720 30 fps, 60 s, H.264 4 Mbit/s + AAC",
                   piece="720p10", loops=6),
        SourceSpec("720p10", 1280, 720, 10, 4000, description="1280x720 30 fps, 10 s, H.264 4 Mbit/s + AAC"),
        SourceSpec("tiny", 1280, 720, 1, 3000, description="1280x720 30 fps, 1 s, H.264 3 Mbit/s + AAC (smoke test)"),
    )
}


def ensure_source(name: str, cache: Path = CACHE, log=print) -> Path:
    """The cached file of source ``name``, generated first if missing.

    Args:
        name: A key of :data:`SOURCES`.
        cache: Cache folder.
        log: Where to report progress.

    Returns:
        The path of the MP4 file.
    """
    spec = SOURCES[name]
    out = spec.path(cache)
    if out.exists() and out.stat().st_size > 0:
        return out
    piece = ensure_source(spec.piece, cache, log) if spec.piece else None
    return _generate(out, lambda partial: spec.args(partial, piece), f"{name} ({spec.description})", log)


def audio_source_args(seconds: float, out: Path) -> list[str]:
    """The FFmpeg command generating an audio-only source into ``out``: ``seconds`` of pink noise
    (broadband, as speech or music is to a loudness meter), stereo AAC 128 kbit/s in an M4A file.

    >>> args = audio_source_args(60, Path("a.m4a"))
    >>> args[args.index("-i") + 1]
    'anoisesrc=color=pink:amplitude=0.1:sample_rate=48000:duration=60'
    """
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.1:sample_rate=48000:duration={seconds:g}",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "mp4", "-movflags", "+faststart", str(out)]


def ensure_audio_source(seconds: float, cache: Path = CACHE, log=print) -> Path:
    """The cached audio-only source of ``seconds`` seconds (:func:`audio_source_args`), generated first if missing."""
    recipe = hashlib.sha256(" ".join(audio_source_args(seconds, Path("out.m4a"))).encode()).hexdigest()[:10]
    out = cache / f"audio{seconds:g}-{recipe}.m4a"
    if out.exists() and out.stat().st_size > 0:
        return out
    return _generate(out, lambda partial: audio_source_args(seconds, partial), f"audio-only, {seconds:g} s", log)


def _generate(out: Path, args, description: str, log) -> Path:
    """Run the command ``args(partial)`` and move the file it made to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".part" + out.suffix)
    log(f"generating source {description} -> {out} ...")
    started = time.monotonic()
    subprocess.run(args(partial), check=True)
    partial.rename(out)
    log(f"generated {out.name} in {time.monotonic() - started:.0f} s ({out.stat().st_size / 1e6:.1f} MB)")
    return out
