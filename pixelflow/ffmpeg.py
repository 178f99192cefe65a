"""Run FFmpeg and ffprobe: argument lists only, progress parsed from ``-progress pipe:1``,
wall-clock limits, and failures mapped to :class:`~pixelflow.errors.PixelFlowError` codes."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import ffmpeg as ffmpeg_python

from pixelflow.core.ffmpeg_args import file_url, probe_args
from pixelflow.errors import ErrorCode, PixelFlowError

logger = logging.getLogger("pixelflow.ffmpeg")

#: stderr fragments that mean the input itself is damaged.
CORRUPT_MARKERS = (
    "invalid data found when processing input",
    "error while decoding",
    "corrupt",
    "invalid nal unit",
    "no frame!",
    "missing reference picture",
    "concealing",
    "error splitting the input into nal units",
    "decode_slice_header error",
)
TRUNCATED_MARKERS = ("moov atom not found", "truncat", "partial file", "end of file", "stream ends prematurely")


@dataclass
class FFmpegResult:
    args: list[str]
    returncode: int
    elapsed: float
    out_time: float
    errors: list[str] = field(default_factory=list)


def parse_progress_line(line: str, state: dict[str, str]) -> float | None:
    """Feed one ``-progress`` line; returns the encoded media time in seconds at each block end.

    >>> state = {}
    >>> parse_progress_line("out_time_us=1500000", state)
    >>> parse_progress_line("progress=continue", state)
    1.5
    """
    key, sep, value = line.strip().partition("=")
    if not sep:
        return None
    state[key] = value
    if key == "progress":
        raw = state.get("out_time_us") or state.get("out_time_ms") or ""
        try:
            return max(0.0, int(raw) / 1_000_000)
        except ValueError:
            return None
    return None


def run_ffmpeg(
    args: list[str],
    *,
    timeout: float,
    on_progress: Callable[[float], None] | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    stdin: int | None = None,
    pass_fds: tuple[int, ...] = (),
) -> FFmpegResult:
    """Run one FFmpeg command (an argument list, never a shell).

    Args:
        args: The command, as built by :mod:`pixelflow.core.ffmpeg_args`.
        timeout: Wall-clock limit in seconds; the process is killed past it.
        on_progress: Called with the media time reached (seconds) as FFmpeg reports it.
        log: Where to log the command and FFmpeg's errors.
        on_start: Called with the process once started.
        stdin: A file descriptor to read as standard input (a pipe from the decoder).
        pass_fds: File descriptors the process inherits (the decoder's output pipes).

    Raises:
        PixelFlowError: ``transcode_timeout`` past the limit, ``corrupt_stream`` /
            ``truncated`` when FFmpeg's errors say the input is damaged, else ``transcode_failed``.
    """
    log = log or logger
    log.info("ffmpeg: %s", shlex.join(args))
    started = time.monotonic()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1, pass_fds=pass_fds)
    if on_start:
        on_start(process)
    errors: deque[str] = deque(maxlen=200)
    timed_out = threading.Event()

    def read_stderr():
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip()
            if line:
                errors.append(line)

    def watchdog():
        if process.poll() is None:
            timed_out.set()
            process.kill()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    out_time = 0.0
    state: dict[str, str] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            reached = parse_progress_line(line, state)
            if reached is not None:
                out_time = max(out_time, reached)
                if on_progress:
                    try:
                        on_progress(out_time)
                    except Exception:  # progress reporting must never break an encode
                        log.debug("progress callback failed", exc_info=True)
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
    elapsed = time.monotonic() - started
    result = FFmpegResult(args=args, returncode=process.returncode, elapsed=elapsed, out_time=out_time, errors=list(errors))
    if timed_out.is_set():
        raise PixelFlowError(ErrorCode.TRANSCODE_TIMEOUT, f"FFmpeg did not finish within {timeout:.0f} s.",
                             {"timeout": timeout})
    if process.returncode != 0:
        tail = "\n".join(result.errors[-8:])
        log.error("ffmpeg exited with %s:\n%s", process.returncode, tail)
        raise classify_failure(result)
    if result.errors:
        log.warning("ffmpeg reported:\n%s", "\n".join(result.errors[-8:]))
    return result


def classify_failure(result: FFmpegResult) -> PixelFlowError:
    text = "\n".join(result.errors).lower()
    detail = {"returncode": result.returncode, "stderr_tail": result.errors[-5:]}
    if result.returncode < 0:
        return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg was killed by signal {-result.returncode}.", detail)
    if any(marker in text for marker in TRUNCATED_MARKERS):
        return PixelFlowError(ErrorCode.TRUNCATED, "The file ends before its streams do: the upload looks truncated.", detail)
    if any(marker in text for marker in CORRUPT_MARKERS):
        return PixelFlowError(ErrorCode.CORRUPT_STREAM, "The video stream could not be decoded: the file is damaged.", detail)
    return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg failed with exit code {result.returncode}.", detail)


def decode_errors(errors: list[str]) -> list[str]:
    """The lines of FFmpeg's error output that report damaged input."""
    return [line for line in errors if any(marker in line.lower() for marker in CORRUPT_MARKERS)]


def probe(path: str, demuxer: str | None = None, formats: list[str] | None = None) -> dict:
    """ffprobe a local file through ffmpeg-python, restricted to the file protocol and, when
    given, to an allow-list of demuxers (``format_whitelist``).

    Raises:
        PixelFlowError: ``truncated`` or ``not_media`` when ffprobe cannot read it.
    """
    options = probe_args(path, demuxer)
    if formats and not demuxer:
        options["format_whitelist"] = ",".join(formats)
    logger.info("ffprobe %s %s", file_url(path), options)
    try:
        return ffmpeg_python.probe(file_url(path), **options)
    except ffmpeg_python.Error as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        lowered = stderr.lower()
        detail = {"stderr_tail": stderr.strip().splitlines()[-5:]}
        if "not on whitelist" in lowered:
            found = re.search(r"\[(\w+) @", stderr)
            name = found.group(1) if found else "unknown"
            raise PixelFlowError(ErrorCode.UNSUPPORTED_CONTAINER, f"The file is a '{name}' file, which PixelFlow does not accept as a video source.", {"container": name}) from None
        if "moov atom not found" in lowered:
            raise PixelFlowError(ErrorCode.TRUNCATED, "The MP4/MOV index (moov) is missing: the upload is truncated or unfinished.", detail) from None
        raise PixelFlowError(ErrorCode.NOT_MEDIA, "The file is not a readable audio or video file.", detail) from None
