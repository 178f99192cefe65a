"""Run FFmpeg and ffprobe: argument lists only, progress parsed from ``-progress pipe:1``,
wall-clock limits, and failures mapped to :class:`~pixelflow.errors.PixelFlowError` codes.

Every FFmpeg and ffprobe process runs with a minimal environment (:func:`child_env`: ``PATH``,
the locale, a ``HOME``/``TMPDIR``; no credential of the worker), on Linux without network
(:func:`sandbox_prefix`: a network namespace of its own through util-linux ``unshare``, which
execs FFmpeg, so the process id and command line are FFmpeg's) and, when given, under an address
space limit (``RLIMIT_AS``, set in the child before it execs).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import resource
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pixelflow.core.ffmpeg_args import file_url, measure_duration_args, probe_args
from pixelflow.core.ffmpeg_log import ERROR_LEVELS, level_of
from pixelflow.core.validation import PLAYLIST_DEMUXERS
from pixelflow.errors import ErrorCode, PixelFlowError

logger = logging.getLogger("pixelflow.pipeline.ffmpeg")

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
#: Messages (lower case) that mean FFmpeg ran out of memory: an allocation refused under the
#: address space limit (``RLIMIT_AS``), or ``-max_pixels`` refusing a frame larger than allowed.
MEMORY_MARKERS = ("cannot allocate memory", "out of memory", "failed to allocate", "malloc of size",
                  "failed to map segment", "pthread_create failed")
#: What a decoder says (lower case) when ``-max_pixels`` refuses a frame: the stream changed to a
#: frame size beyond the accepted area after its headers were validated.
MAX_PIXELS_MARKER = "exceeds specified max pixel count"
#: Messages (lower case) of an output that could not be written because the disk is full.
DISK_FULL_MARKERS = ("no space left on device", "disk quota exceeded")
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


#: Sandbox modes (``PIXELFLOW_FFMPEG_SANDBOX``): ``auto`` isolates FFmpeg from the network when
#: this machine allows it (else runs it without and logs a warning once), ``required`` refuses to
#: run FFmpeg without isolation, ``off`` never isolates.
SANDBOX_MODES = ("auto", "required", "off")
#: Wrappers tried in order: a new network namespace as root (``CAP_SYS_ADMIN``), else inside an
#: unprivileged user namespace. ``unshare`` execs the command (no ``--fork``): the process that
#: runs is FFmpeg itself.
SANDBOX_WRAPPERS = (["unshare", "--net", "--"], ["unshare", "--user", "--map-root-user", "--net", "--"])


def child_env() -> dict[str, str]:
    """The whole environment FFmpeg and ffprobe get: ``PATH``, a UTF-8 locale, ``HOME`` and
    ``TMPDIR`` (the temporary directory), and ``MALLOC_ARENA_MAX`` (fewer malloc arenas: far less
    address space per thread under the memory limit). No AWS or Prefect variable, nothing else.

    >>> sorted(child_env())
    ['HOME', 'LANG', 'LC_ALL', 'MALLOC_ARENA_MAX', 'PATH', 'TMPDIR']
    """
    temp = tempfile.gettempdir()
    return {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": temp, "TMPDIR": temp, "MALLOC_ARENA_MAX": "2"}


@functools.lru_cache(maxsize=None)
def _working_wrapper() -> tuple[str, ...] | None:
    """The first of :data:`SANDBOX_WRAPPERS` that works on this machine (tried once), or ``None``."""
    for wrapper in SANDBOX_WRAPPERS:
        try:
            done = subprocess.run([*wrapper, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                                  env=child_env())
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return tuple(wrapper)
    logger.warning("FFmpeg runs without network isolation: no network namespace can be created here "
                   "(unshare --net, or an unprivileged user namespace); inputs stay limited to local files")
    return None


def sandbox_prefix(mode: str = "auto") -> list[str]:
    """What FFmpeg's argument list is prefixed with to run it without network, for ``mode``
    (one of :data:`SANDBOX_MODES`).

    Raises:
        PixelFlowError: ``internal`` when ``mode`` is ``required`` and no isolation is possible.
    """
    if mode not in SANDBOX_MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; use one of {', '.join(SANDBOX_MODES)}")
    if mode == "off":
        return []
    wrapper = _working_wrapper()
    if wrapper is None:
        if mode == "required":
            raise PixelFlowError(ErrorCode.INTERNAL, "FFmpeg must run without network (PIXELFLOW_FFMPEG_SANDBOX="
                                 "required) but no network namespace can be created on this machine.")
        return []
    return list(wrapper)


def _limit_memory(memory_bytes: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` setting the child's address space limit, or ``None`` for no limit."""
    if not memory_bytes:
        return None

    def apply() -> None:  # runs in the forked child: one C call, no import, no lock
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def _spawn(args: list[str], *, sandbox: str, memory_bytes: int | None, text: bool) -> subprocess.Popen:
    """Start FFmpeg or ffprobe: minimal environment, network sandbox, memory limit."""
    options = {"text": True, "errors": "replace", "bufsize": 1} if text else {}
    return subprocess.Popen(sandbox_prefix(sandbox) + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), preexec_fn=_limit_memory(memory_bytes),
                            **options)


@dataclass
class FFmpegResult:
    args: list[str]
    returncode: int
    elapsed: float
    out_time: float
    errors: list[str] = field(default_factory=list)
    #: The last lines FFmpeg printed below the error level (only a command asking for them with
    #: ``-loglevel level+info`` has any: ``loudnorm``'s measurement).
    info: list[str] = field(default_factory=list)


class StderrLines:
    """FFmpeg's stderr, line by line, split by the level of each message: its errors, and the tail
    of everything less severe (kept apart, so that a warning or the description of an input
    never reads as an error). A line without a level tag continues the message before it (a
    message of several lines, like ``loudnorm``'s JSON); lines before any tag are errors.

    >>> lines = StderrLines()
    >>> for line in ["[h264 @ 0x1] [error] bad", "[x @ 0x2] [info] ", "{", "}", "[warning] meh", "[fatal] end"]:
    ...     lines.add(line)
    >>> list(lines.errors), list(lines.info)
    (['[h264 @ 0x1] [error] bad', '[fatal] end'], ['[x @ 0x2] [info]', '{', '}', '[warning] meh'])
    """

    def __init__(self, errors: int = 200, info: int = 500):
        self.errors: deque[str] = deque(maxlen=errors)
        self.info: deque[str] = deque(maxlen=info)
        self._is_error = True

    def add(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        level = level_of(line)
        if level is not None:  # errors are what classify_failure and the damage checks read
            self._is_error = level in ERROR_LEVELS
        (self.errors if self._is_error else self.info).append(line)


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
    timeout_error: Callable[[float], PixelFlowError] | None = None,
    memory_bytes: int | None = None,
    sandbox: str = "auto",
    output_dir: str | None = None,
) -> FFmpegResult:
    """Run one FFmpeg command (an argument list, never a shell), with :func:`child_env` as its
    whole environment and, as ``sandbox`` says, without network (:func:`sandbox_prefix`).

    Args:
        args: The command, as built by :mod:`pixelflow.core.ffmpeg_args`.
        timeout: Wall-clock limit in seconds; the process is killed past it.
        on_progress: Called with the media time reached (seconds) as FFmpeg reports it.
        log: Where to log the command and FFmpeg's errors.
        timeout_error: The error past ``timeout`` (given the limit); ``transcode_timeout`` by default.
        memory_bytes: Address space limit of the process (``RLIMIT_AS``); ``None``: no limit.
        sandbox: One of :data:`SANDBOX_MODES`.
        output_dir: Where the command writes: once it ends, a file system found full there is
            ``insufficient_disk`` (FFmpeg's HLS muxer truncates segments on a full disk and
            exits 0 without a word, which would otherwise look like a truncated source).

    Raises:
        PixelFlowError: ``transcode_timeout`` (or ``timeout_error``'s) past the limit,
            ``memory_limit_exceeded`` when it ran out of memory, ``insufficient_disk`` when an
            output could not be written for want of space, ``corrupt_stream`` / ``truncated``
            when FFmpeg's errors say the input is damaged, else ``transcode_failed``.
    """
    log = log or logger
    log.info("ffmpeg: %s", shlex.join(args))
    started = time.monotonic()
    process = _spawn(args, sandbox=sandbox, memory_bytes=memory_bytes, text=True)
    lines = StderrLines()
    timed_out = threading.Event()

    def read_stderr():
        assert process.stderr is not None
        for line in process.stderr:
            lines.add(line)

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
    result = FFmpegResult(args=args, returncode=process.returncode, elapsed=elapsed, out_time=out_time,
                          errors=list(lines.errors), info=list(lines.info))
    if timed_out.is_set():
        if timeout_error is not None:
            raise timeout_error(timeout)
        raise PixelFlowError(ErrorCode.TRANSCODE_TIMEOUT, f"FFmpeg did not finish within {timeout:.0f} s.",
                             {"timeout": timeout})
    if output_dir is not None and disk_full(output_dir):
        log.error("the scratch file system of %s is full after ffmpeg wrote there", output_dir)
        raise PixelFlowError(ErrorCode.INSUFFICIENT_DISK, "Scratch space ran out while FFmpeg wrote the renditions "
                             "(the file system is full).", {"during": "encode", "returncode": result.returncode})
    if process.returncode != 0:
        tail = "\n".join(result.errors[-8:])
        log.error("ffmpeg exited with %s:\n%s", process.returncode, tail)
        raise classify_failure(result, memory_bytes)
    if any(marker in line.lower() for line in result.errors for marker in DISK_FULL_MARKERS):
        # FFmpeg may exit 0 when only its trailer or the closing of an output failed
        log.error("ffmpeg could not write its outputs:\n%s", "\n".join(result.errors[-5:]))
        raise classify_failure(result, memory_bytes)
    ended = input_ended(result.errors)
    if ended:
        log.error("ffmpeg reached the end of the input early:\n%s", "\n".join(ended[:5]))
        raise PixelFlowError(ErrorCode.TRUNCATED, "The file ends before its streams do: the upload looks truncated.",
                             {"errors": clean_stderr(ended[:5])})
    if result.errors:
        log.warning("ffmpeg reported:\n%s", "\n".join(result.errors[-8:]))
    return result


@dataclass(frozen=True)
class ProcessLimits:
    """What each FFmpeg process of one run may use: time, memory, network.

    Each process gets ``min(duration_limit, what remains until deadline)`` seconds. Past a limit
    derived from the source's duration, the source is the cause (``source_too_slow``); past the
    run's absolute cap, ``run_time_exceeded``. Both are rejections: a retry would decode the same
    source again, for as long.

    Args:
        duration_limit: ``base + factor x duration`` seconds (:meth:`for_source`).
        deadline: When the run's cap ends (``time.time()`` seconds), or ``None`` for no cap.
        memory_bytes: Address space limit of each process, or ``None``.
        sandbox: One of :data:`SANDBOX_MODES`.
        max_run_seconds: The cap's length, for messages.
        max_pixels: ``-max_pixels`` of the poster's decode.

    >>> limits = ProcessLimits(100.0, deadline=1000.0 + 50, max_run_seconds=60)
    >>> limits.timeout(now=1000.0)
    (50.0, <ErrorCode.RUN_TIME_EXCEEDED: 'run_time_exceeded'>)
    >>> ProcessLimits(100.0, deadline=1000.0 + 500).timeout(now=1000.0)
    (100.0, <ErrorCode.SOURCE_TOO_SLOW: 'source_too_slow'>)
    """

    duration_limit: float
    deadline: float | None = None
    memory_bytes: int | None = None
    sandbox: str = "auto"
    max_run_seconds: float | None = None
    #: FFmpeg's ``-max_pixels`` of the decodes built outside the ladder configuration (the poster's).
    max_pixels: int | None = None

    @classmethod
    def for_source(cls, duration: float, *, base: float, factor: float, started: float, max_run_seconds: float | None,
                   memory_bytes: int | None = None, sandbox: str = "auto",
                   max_pixels: int | None = None) -> "ProcessLimits":
        """The limits of a run that ``started`` (``time.time()``) on a source of ``duration`` s."""
        return cls(base + max(duration, 1.0) * factor,
                   started + max_run_seconds if max_run_seconds else None, memory_bytes or None, sandbox,
                   max_run_seconds, max_pixels)

    def timeout(self, now: float | None = None) -> tuple[float, ErrorCode]:
        """The next process's wall-clock limit, and the code of running past it."""
        if self.deadline is not None:
            remaining = self.deadline - (time.time() if now is None else now)
            if remaining < self.duration_limit:
                return max(remaining, 0.0), ErrorCode.RUN_TIME_EXCEEDED
        return self.duration_limit, ErrorCode.SOURCE_TOO_SLOW

    def error(self, code: ErrorCode, seconds: float) -> PixelFlowError:
        """The rejection of a process stopped at its limit of ``seconds``."""
        if code == ErrorCode.RUN_TIME_EXCEEDED:
            return PixelFlowError(code, f"The run used up its {self.max_run_seconds:.0f} s (PIXELFLOW_MAX_RUN_SECONDS) "
                                        "before FFmpeg finished.", {"max_run_seconds": self.max_run_seconds,
                                                                    "timeout": round(seconds, 3)})
        return PixelFlowError(code, f"FFmpeg did not finish within {seconds:.0f} s, the limit derived from the "
                                    "source's duration: this source takes too long to decode.",
                              {"timeout": round(seconds, 3)})

    def run(self, args: list[str], **kwargs) -> FFmpegResult:
        """:func:`run_ffmpeg` under these limits."""
        seconds, code = self.timeout()
        if seconds <= 0:
            raise self.error(code, 0.0)
        return run_ffmpeg(args, timeout=seconds, timeout_error=lambda limit: self.error(code, limit),
                          memory_bytes=self.memory_bytes, sandbox=self.sandbox, **kwargs)

    def wait_seconds(self) -> float:
        """How long a task waits for the shared ladder process: its limit, and a little more, so
        that the process's own limit (with its code) comes first."""
        return self.timeout()[0] + 30.0


#: Free space (bytes) below which a file system FFmpeg wrote to counts as full.
FULL_BELOW = 1024 * 1024


def disk_full(path: str) -> bool:
    """Whether the file system holding ``path`` has less than :data:`FULL_BELOW` bytes left."""
    try:
        return shutil.disk_usage(path).free < FULL_BELOW
    except OSError:
        return False


def classify_failure(result: FFmpegResult, memory_bytes: int | None = None) -> PixelFlowError:
    """The error a failed FFmpeg run means: out of memory under its limit
    (``memory_limit_exceeded``), a full scratch disk (``insufficient_disk``), a damaged input
    (``truncated``, ``corrupt_stream``, never retried) or a service failure (``transcode_failed``)."""
    text = "\n".join(result.errors).lower()
    detail = {"returncode": result.returncode, "stderr_tail": clean_stderr(result.errors[-5:])}
    if MAX_PIXELS_MARKER in text:
        return _oversized_frame(result.errors)
    if any(marker in text for marker in DISK_FULL_MARKERS):
        return PixelFlowError(ErrorCode.INSUFFICIENT_DISK, "Scratch space ran out while FFmpeg wrote the renditions "
                              "(No space left on device).", {**detail, "during": "encode"})
    if any(marker in text for marker in MEMORY_MARKERS) or (memory_bytes and result.returncode in (-6, -11)):
        limit = f"its memory limit of {memory_bytes} bytes (PIXELFLOW_FFMPEG_MEMORY_BYTES)" if memory_bytes else "memory"
        return PixelFlowError(ErrorCode.MEMORY_LIMIT_EXCEEDED,
                              f"Decoding the source needed more than {limit}: FFmpeg was stopped.",
                              {**detail, "memory_bytes": memory_bytes})
    if result.returncode < 0:
        return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg was killed by signal {-result.returncode}.", detail)
    if any(marker in text for marker in TRUNCATED_MARKERS):
        return PixelFlowError(ErrorCode.TRUNCATED, "The file ends before its streams do: the upload looks truncated.", detail)
    if any(marker in text for marker in CORRUPT_MARKERS):
        return PixelFlowError(ErrorCode.CORRUPT_STREAM, "The video stream could not be decoded: the file is damaged.", detail)
    return PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg failed with exit code {result.returncode}.", detail)


def _oversized_frame(errors: list[str]) -> PixelFlowError:
    lines = [line for line in errors if MAX_PIXELS_MARKER in line.lower()]
    return PixelFlowError(ErrorCode.DIMENSIONS_TOO_LARGE,
                          "The video changes to a frame size above the limit part way through (FFmpeg's -max_pixels "
                          "refused it).", {"errors": clean_stderr(lines[:3])})


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
    raises ``truncated`` when the input ended early): ``dimensions_too_large`` when ``-max_pixels``
    refused a frame, ``corrupt_stream`` when the decoder reported damaged data, else ``None``.

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
    if any(MAX_PIXELS_MARKER in line.lower() for line in errors):
        return _oversized_frame(errors)
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
        return PixelFlowError(ErrorCode.UNSUPPORTED_CONTAINER,
                              f"The file is audio in a format not accepted ({demuxer}); upload MP3, WAV, FLAC, AAC or M4A.",
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


#: The most of ffprobe's output read (its JSON, and separately its error lines): it names only
#: the fields PixelFlow uses, so a normal file needs a few KiB; a file with thousands of streams
#: is refused once past this.
MAX_PROBE_OUTPUT = 1024 * 1024


def _read_capped(stream, limit: int, into: bytearray, over: threading.Event, process: subprocess.Popen | None) -> None:
    """Read ``stream`` into ``into`` up to ``limit`` bytes; past it, set ``over`` and kill
    ``process`` (or, without one, read on and drop the rest)."""
    while True:
        chunk = stream.read(65536)
        if not chunk:
            return
        room = limit - len(into)
        if room > 0:
            into += chunk[:room]
        if len(chunk) > room:
            over.set()
            if process is not None:
                process.kill()
                return


def probe(path: str, demuxer: str | None = None, formats: list[str] | None = None, timeout: float = 120.0, *,
          max_output: int = MAX_PROBE_OUTPUT, memory_bytes: int | None = None, sandbox: str = "auto") -> dict:
    """ffprobe a local file: the file protocol only and, when given, only the demuxers in
    ``formats`` (``format_whitelist``: playlists, images and other formats are refused before
    they are opened) or exactly ``demuxer``; only the fields PixelFlow reads
    (:func:`pixelflow.core.ffmpeg_args.probe_args`), and at most ``max_output`` bytes of them.

    Returns ffprobe's JSON (``format`` and ``streams``), plus ``"stderr"``: its error lines
    (paths removed), which :func:`pixelflow.core.probe.interpret_probe` reads for headers FFmpeg
    refused (``Picture size 30000x30000 is invalid``). When the container states no duration (a
    live-recorded WebM or Matroska file) and the video stream none either, the duration is
    measured by reading the packets once (no decoding) and stored as ``format.duration`` with
    ``format.duration_measured``.

    Raises:
        PixelFlowError: ``not_media``, ``no_video_stream`` (audio formats),
            ``unsupported_container``, ``truncated`` or ``corrupt_stream`` when ffprobe cannot
            read it; ``metadata_too_large`` when its description of the file passes
            ``max_output``; ``transcode_timeout`` past ``timeout``.
    """
    if demuxer in REFERENCE_DEMUXERS:
        raise ValueError(f"the {demuxer} demuxer reads other files or URLs")
    allowed = [f for f in formats if f not in REFERENCE_DEMUXERS] if formats and not demuxer else None
    args = probe_args(path, demuxer, allowed)
    logger.info("ffprobe: %s", shlex.join(args))
    process = _spawn(args, sandbox=sandbox, memory_bytes=memory_bytes, text=False)
    out, err, over = bytearray(), bytearray(), threading.Event()
    readers = [threading.Thread(target=_read_capped, args=(process.stdout, max_output, out, over, process), daemon=True),
               threading.Thread(target=_read_capped, args=(process.stderr, max_output, err, threading.Event(), None),
                                daemon=True)]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise PixelFlowError(ErrorCode.TRANSCODE_TIMEOUT, f"ffprobe did not finish within {timeout:.0f} s.",
                             {"timeout": timeout}) from None
    finally:
        for reader in readers:
            reader.join(5)
    if over.is_set():
        raise PixelFlowError(ErrorCode.METADATA_TOO_LARGE,
                             f"The file's description (streams and their properties) exceeds {max_output} bytes.",
                             {"max_bytes": max_output})
    stderr = bytes(err).decode("utf-8", "replace").replace(file_url(path), "<file>").replace(str(path), "<file>")
    lines = clean_stderr([line for line in stderr.splitlines() if line.strip()])
    if process.returncode != 0:
        raise _probe_failure(process.returncode, stderr, lines, memory_bytes)
    try:
        data = json.loads(bytes(out).decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        raise PixelFlowError(ErrorCode.NOT_MEDIA, "The file is not a readable audio or video file.",
                             {"stderr_tail": lines[-5:]}) from None
    data.pop("programs", None)  # ffprobe lists the (empty) section with the stream entries
    data["stderr"] = lines if len(lines) <= 50 else lines[:25] + lines[-25:]  # where a header was refused, and how it ended
    _measure_missing_duration(path, data, timeout, memory_bytes, sandbox, allowed if allowed is not None else
                              ([demuxer] if demuxer else None))
    return data


def _probe_failure(returncode: int, stderr: str, lines: list[str], memory_bytes: int | None = None) -> PixelFlowError:
    lowered = stderr.lower()
    detail = {"stderr_tail": lines[-5:]}
    if any(marker in lowered for marker in MEMORY_MARKERS):
        return PixelFlowError(ErrorCode.MEMORY_LIMIT_EXCEEDED, "Reading the file's headers needed more than the "
                              f"memory limit of {memory_bytes} bytes (PIXELFLOW_FFMPEG_MEMORY_BYTES): ffprobe was stopped.",
                              {**detail, "memory_bytes": memory_bytes})
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


def _measure_missing_duration(path: str, data: dict, timeout: float, memory_bytes: int | None = None,
                              sandbox: str = "auto", formats: list[str] | None = None) -> None:
    fmt = data.get("format") or {}
    videos = [s for s in data.get("streams") or [] if s.get("codec_type") == "video"]
    if not videos or _positive(fmt.get("duration")) is not None or _positive(videos[0].get("duration")) is not None:
        return
    if fmt.get("duration") not in (None, "N/A"):
        return  # a stated zero or negative duration is the file's claim: validation judges it
    names = [name for name in (fmt.get("format_name") or "").split(",")
             if name and name not in REFERENCE_DEMUXERS and (formats is None or name in formats)]
    if not names:
        return  # only a demuxer the allow-list admitted reads the file again; validation judges the rest
    demuxer = names[0]
    args = measure_duration_args(path, demuxer)
    # reading every packet once: allow for the file's size (20 MB/s) on top of the probe's limit
    result = run_ffmpeg(args, timeout=timeout + os.path.getsize(path) / 20e6, memory_bytes=memory_bytes, sandbox=sandbox)
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
