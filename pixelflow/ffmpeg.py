"""Run FFmpeg and ffprobe: argument lists only, progress parsed from ``-progress pipe:1``,
wall-clock limits, and failures mapped to :class:`~pixelflow.errors.PixelFlowError` codes."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pixelflow.core.ffmpeg_args import file_url, measure_duration_args, probe_args
from pixelflow.core.validation import PLAYLIST_DEMUXERS
from pixelflow.errors import ErrorCode, PixelFlowError

logger = logging.getLogger("pixelflow.ffmpeg")

#: Decoder and demuxer messages (lower case) that mean the input itself is damaged. Messages a
#: decoder prints while it waits for the first keyframe of a stream cut mid-GOP (a TV or camera
#: recording: "non-existing PPS", "no frame!", "decode_slice_header error", "missing reference
#: picture") are left out on purpose: such files play, and the frames before the keyframe are
#: simply dropped.
CORRUPT_MARKERS = (
    "error while decoding",
    "concealing",
    "invalid nal unit",
    "error splitting the input into nal units",
    "corrupt",
    "invalid data found when processing input",
    "damaged at",
    "error at mb",
    "invalid mb type",
    "error parsing nal unit",
)
#: Messages (lower case) that mean the input ends before its streams do.
TRUNCATED_MARKERS = ("moov atom not found", "partial file", "prematurely", "truncat", "end of file")
#: The subset a demuxer prints even when FFmpeg then exits normally ("stream 0, offset 0x1bb65:
#: partial file" from MP4/MOV, "File ended prematurely" from Matroska/WebM): still a truncated input.
INPUT_ENDED_MARKERS = ("partial file", "prematurely")

#: Demuxers ffprobe may recognise that are not video files at all, by what PixelFlow answers.
IMAGE_DEMUXERS = frozenset({"image2", "apng", "webp_pipe", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe",
                            "gif_pipe", "svg_pipe", "qoi_pipe", "jpegxl_pipe", "dpx_pipe", "exr_pipe", "pam_pipe",
                            "pbm_pipe", "pgm_pipe", "ppm_pipe", "psd_pipe", "xpm_pipe", "j2k_pipe", "photocd_pipe"})
AUDIO_DEMUXERS = frozenset({"mp3", "wav", "w64", "flac", "aac", "ac3", "eac3", "dts", "dtshd", "truehd", "mlp",
                            "aiff", "amr", "amrnb", "amrwb", "ape", "wv", "tta", "caf", "au", "voc", "mpc", "mpc8",
                            "gsm", "spdif", "tak", "dsf", "shorten", "sox", "loas", "latm", "xwma", "wsaud"})
TEXT_DEMUXERS = frozenset({"srt", "ass", "webvtt", "microdvd", "subviewer", "subviewer1", "sami", "realtext",
                           "stl", "pjs", "jacosub", "mpl2", "mpsub", "vplayer", "aqtitle", "lrc", "scc",
                           "tedcaptions", "tty", "sup", "vobsub"})
#: Demuxers that open further files or URLs named in the input (playlists, descriptors): never
#: let through ffprobe's ``format_whitelist``, whatever the configured allow-list says.
REFERENCE_DEMUXERS = PLAYLIST_DEMUXERS

_ADDRESS = re.compile(r" @ 0x[0-9a-f]+")
_PATH = re.compile(r"(?<![\w.])(?:file:)?/[^\s'\"]*[^\s'\":,.]")


def clean_stderr(lines: list[str]) -> list[str]:
    """FFmpeg's messages without local paths or memory addresses, fit for error records.

    >>> clean_stderr(["[mov,mp4 @ 0x55d0] file:/tmp/pixelflow/a-1/source: Invalid data"])
    ['[mov,mp4] <file>: Invalid data']
    """
    return [_PATH.sub("<file>", _ADDRESS.sub("", line)) for line in lines]


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
) -> FFmpegResult:
    """Run one FFmpeg command (an argument list, never a shell).

    Args:
        args: The command, as built by :mod:`pixelflow.core.ffmpeg_args`.
        timeout: Wall-clock limit in seconds; the process is killed past it.
        on_progress: Called with the media time reached (seconds) as FFmpeg reports it.
        log: Where to log the command and FFmpeg's errors.

    Raises:
        PixelFlowError: ``transcode_timeout`` past the limit, ``corrupt_stream`` /
            ``truncated`` when FFmpeg's errors say the input is damaged, else ``transcode_failed``.
    """
    log = log or logger
    log.info("ffmpeg: %s", shlex.join(args))
    started = time.monotonic()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", bufsize=1)
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
    ended = input_ended(result.errors)
    if ended:
        log.error("ffmpeg reached the end of the input early:\n%s", "\n".join(ended[:5]))
        raise PixelFlowError(ErrorCode.TRUNCATED, "The file ends before its streams do: the upload looks truncated.",
                             {"errors": clean_stderr(ended[:5])})
    if result.errors:
        log.warning("ffmpeg reported:\n%s", "\n".join(result.errors[-8:]))
    return result


def classify_failure(result: FFmpegResult) -> PixelFlowError:
    """The error a failed FFmpeg run means: a damaged input (``truncated``, ``corrupt_stream``,
    never retried) or a service failure (``transcode_failed``)."""
    text = "\n".join(result.errors).lower()
    detail = {"returncode": result.returncode, "stderr_tail": clean_stderr(result.errors[-5:])}
    if result.returncode < 0:
        return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg was killed by signal {-result.returncode}.", detail)
    if any(marker in text for marker in TRUNCATED_MARKERS):
        return PixelFlowError(ErrorCode.TRUNCATED, "The file ends before its streams do: the upload looks truncated.", detail)
    if any(marker in text for marker in CORRUPT_MARKERS):
        return PixelFlowError(ErrorCode.CORRUPT_STREAM, "The video stream could not be decoded: the file is damaged.", detail)
    return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg failed with exit code {result.returncode}.", detail)


def input_ended(errors: list[str]) -> list[str]:
    """The lines of FFmpeg's error output that say the input ended before its streams did."""
    return [line for line in errors if any(marker in line.lower() for marker in INPUT_ENDED_MARKERS)]


def decode_errors(errors: list[str]) -> list[str]:
    """The lines of FFmpeg's error output that report damaged input.

    >>> decode_errors(["[h264 @ 0x1] error while decoding MB 14 1", "[h264 @ 0x1] no frame!"])
    ['[h264 @ 0x1] error while decoding MB 14 1']
    """
    return [line for line in errors if any(marker in line.lower() for marker in CORRUPT_MARKERS)]


def truncation_tolerance(duration: float) -> float:
    """How far short of its stated ``duration`` a decode or a rendition may end before the file
    counts as truncated: 2 % of it, at least 0.5 s (containers round, and audio may outlast video).

    >>> truncation_tolerance(10.0), truncation_tolerance(600.0)
    (0.5, 12.0)
    """
    return max(0.5, duration * 0.02)


def ends_short(reached: float, duration: float) -> bool:
    """Whether media that ends at ``reached`` seconds stops short of the stated ``duration``
    by more than the :func:`truncation_tolerance`.

    >>> ends_short(0.9, 3.0), ends_short(2.5, 3.0)
    (True, False)
    """
    return duration > 0 and reached + truncation_tolerance(duration) < duration


def check_duration(what: str, reached: float, expected: float) -> None:
    """Raise ``truncated`` when ``what`` (a decoded stream, a rendition) :func:`ends_short` of
    the ``expected`` duration the file claims."""
    if ends_short(reached, expected):
        raise PixelFlowError(
            ErrorCode.TRUNCATED,
            f"The {what} ends at {reached:.1f} s but the file claims {expected:.1f} s: the upload is truncated or damaged.",
            {"decoded_seconds": round(reached, 3), "duration": round(expected, 3)},
        )


def input_damage(errors: list[str], reached: float | None = None, duration: float | None = None) -> PixelFlowError | None:
    """The verdict on a decode that exited normally (through :func:`run_ffmpeg`, which already
    raises ``truncated`` when the input ended early): ``corrupt_stream`` when the decoder
    reported damaged data, else ``None``.

    A decode that reported damage and also stopped short of the stated ``duration`` (at
    ``reached`` seconds, :func:`ends_short`) is ``truncated``: cutting a file mid-frame damages
    its last frame.

    >>> input_damage(["[mpeg4 @ 0x1] Error at MB: 157"], reached=0.9, duration=3.0).code.value
    'truncated'
    >>> input_damage(["[mpeg4 @ 0x1] Error at MB: 157"], reached=3.0, duration=3.0).code.value
    'corrupt_stream'
    >>> input_damage(["[h264 @ 0x1] non-existing PPS 0 referenced"]) is None
    True
    """
    damaged = decode_errors(errors)
    if not damaged:
        return None
    if reached is not None and duration and ends_short(reached, duration):
        return PixelFlowError(ErrorCode.TRUNCATED,
                              f"The video stream breaks off at {reached:.1f} s of the {duration:.1f} s the file claims: "
                              "the upload looks truncated.",
                              {"decoded_seconds": round(reached, 3), "duration": round(duration, 3),
                               "errors": clean_stderr(damaged[:5])})
    return PixelFlowError(ErrorCode.CORRUPT_STREAM, "The video stream has decoding errors: the file is damaged.",
                          {"errors": clean_stderr(damaged[:5])})


def _unreadable(demuxer: str) -> PixelFlowError:
    """Why a file ffprobe recognised as ``demuxer`` (outside the allow-list) is rejected."""
    detail = {"container": demuxer}
    if demuxer in IMAGE_DEMUXERS or demuxer.endswith("_pipe") and demuxer != "yuv4mpegpipe":
        return PixelFlowError(ErrorCode.NOT_MEDIA, f"The file is a still image ({demuxer}), not a video.",
                              {**detail, "kind": "image"})
    if demuxer in AUDIO_DEMUXERS:
        return PixelFlowError(ErrorCode.NO_VIDEO_STREAM,
                              f"The file is audio only ({demuxer}); PixelFlow transcodes video (audio-only files are rejected).",
                              {**detail, "kind": "audio"})
    if demuxer in TEXT_DEMUXERS:
        return PixelFlowError(ErrorCode.NOT_MEDIA, f"The file is text ({demuxer} subtitles or similar), not a video.",
                              {**detail, "kind": "text"})
    if demuxer in REFERENCE_DEMUXERS:
        return PixelFlowError(ErrorCode.UNSUPPORTED_CONTAINER,
                              f"The file is a '{demuxer}' playlist or descriptor that points at other files or URLs; "
                              "upload the video itself.", {**detail, "kind": "playlist"})
    return PixelFlowError(ErrorCode.UNSUPPORTED_CONTAINER,
                          f"The file is a '{demuxer}' file, which PixelFlow does not accept as a video source.", detail)


def probe(path: str, demuxer: str | None = None, formats: list[str] | None = None, timeout: float = 120.0) -> dict:
    """ffprobe a local file: the file protocol only and, when given, only the demuxers in
    ``formats`` (``format_whitelist``: playlists, images and other formats are refused before
    they are opened) or exactly ``demuxer``.

    Returns ffprobe's ``-show_format -show_streams`` JSON, plus ``"stderr"``: its error lines
    (paths removed), which :func:`pixelflow.core.probe.interpret_probe` reads for headers FFmpeg
    refused (``Picture size 30000x30000 is invalid``). When the container states no duration (a
    live-recorded WebM or Matroska file) and the video stream none either, the duration is
    measured by reading the packets once (no decoding) and stored as ``format.duration`` with
    ``format.duration_measured``.

    Raises:
        PixelFlowError: ``not_media``, ``no_video_stream`` (audio formats),
            ``unsupported_container``, ``truncated`` or ``corrupt_stream`` when ffprobe cannot
            read it; ``transcode_timeout`` past ``timeout``.
    """
    if demuxer in REFERENCE_DEMUXERS:
        raise ValueError(f"the {demuxer} demuxer reads other files or URLs")
    allowed = [f for f in formats if f not in REFERENCE_DEMUXERS] if formats and not demuxer else None
    args = probe_args(path, demuxer, allowed)
    logger.info("ffprobe: %s", shlex.join(args))
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PixelFlowError(ErrorCode.TRANSCODE_TIMEOUT, f"ffprobe did not finish within {timeout:.0f} s.",
                             {"timeout": timeout}) from None
    stderr = done.stderr.decode("utf-8", "replace").replace(file_url(path), "<file>").replace(str(path), "<file>")
    lines = clean_stderr([line for line in stderr.splitlines() if line.strip()])
    if done.returncode != 0:
        raise _probe_failure(done.returncode, stderr, lines)
    try:
        data = json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        raise PixelFlowError(ErrorCode.NOT_MEDIA, "The file is not a readable audio or video file.",
                             {"stderr_tail": lines[-5:]}) from None
    data["stderr"] = lines if len(lines) <= 50 else lines[:25] + lines[-25:]  # where a header was refused, and how it ended
    _measure_missing_duration(path, data, timeout)
    return data


def _probe_failure(returncode: int, stderr: str, lines: list[str]) -> PixelFlowError:
    lowered = stderr.lower()
    detail = {"stderr_tail": lines[-5:]}
    if returncode < 0:
        return PixelFlowError(ErrorCode.CORRUPT_STREAM, f"ffprobe could not read the file (killed by signal {-returncode}).",
                              detail)
    if "not on whitelist" in lowered:
        found = re.search(r"\[([^\]@]+?) @ 0x[0-9a-f]+\] format not on whitelist", lowered)
        return _unreadable(found.group(1).split(",")[0] if found else "unknown")
    if "moov atom not found" in lowered:
        return PixelFlowError(ErrorCode.TRUNCATED, "The MP4/MOV index (moov) is missing: the upload is truncated or unfinished.",
                              detail)
    return PixelFlowError(ErrorCode.NOT_MEDIA, "The file is not a readable audio or video file.", detail)


def _measure_missing_duration(path: str, data: dict, timeout: float) -> None:
    fmt = data.get("format") or {}
    videos = [s for s in data.get("streams") or [] if s.get("codec_type") == "video"]
    if not videos or _positive(fmt.get("duration")) is not None or _positive(videos[0].get("duration")) is not None:
        return
    if fmt.get("duration") not in (None, "N/A"):
        return  # a stated zero or negative duration is the file's claim: validation judges it
    demuxer = (fmt.get("format_name") or "").split(",")[0]
    if not demuxer:
        return
    args = measure_duration_args(path, demuxer)
    # reading every packet once: allow for the file's size (20 MB/s) on top of the probe's limit
    result = run_ffmpeg(args, timeout=timeout + os.path.getsize(path) / 20e6)
    if result.out_time > 0:
        fmt["duration"] = f"{result.out_time:.6f}"
        fmt["duration_measured"] = True
        data["format"] = fmt


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
