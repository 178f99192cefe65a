"""Tasks that run FFmpeg: the shared ladder process (one decode, every rung, the audio, the
poster and the storyboard), one task per rung, the audio rendition, the poster, the storyboard,
and the MP4 downloads remuxed from finished renditions."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from pixelflow.pipeline import ffmpeg
from pixelflow.core.ffmpeg_args import (PLAYLIST, audio_args, encode_args, ladder_encode_args, loudness_measure_args,
                                        poster_args, remux_args, storyboard_args)
from pixelflow.core.hls import AAC_LC, avc1_from_init
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.loudness import Loudnorm, loudness_entry, parse_loudnorm
from pixelflow.core.manifest import RenditionOutput, summarize_rendition
from pixelflow.core.probe import SourceInfo
from pixelflow.core.storyboard import Storyboard
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline.ladder_process import LadderProcess
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient


class _Progress:
    """A Prefect progress artifact fed from FFmpeg's ``-progress`` output.

    Throttled by time and by step (at most one update per ``interval`` seconds and per ``step``
    percent), so a long encode costs the Prefect API at most 100 / ``step`` calls per rung (10),
    whatever its length. Each call costs the API server about 12 ms of CPU, taken from the encode
    on a server that shares its machine.
    """

    def __init__(self, label: str, duration: float, interval: float = 5.0, step: float = 10.0):
        self.duration = max(duration, 0.001)
        self.interval = interval
        self.step = step
        self.last = 0.0
        self.last_percent = 0.0
        self.artifact_id = None
        try:
            self.artifact_id = create_progress_artifact(progress=0.0, description=f"{label}: percent of the source encoded")
        except Exception:  # the UI nicety never breaks an encode
            get_run_logger().debug("progress artifact unavailable", exc_info=True)

    def __call__(self, seconds: float, force: bool = False) -> None:
        if self.artifact_id is None:
            return
        now = time.monotonic()
        percent = min(100.0, round(100.0 * seconds / self.duration, 1))
        if not force and (now - self.last < self.interval or percent - self.last_percent < self.step):
            return
        self.last, self.last_percent = now, percent
        try:
            update_progress_artifact(self.artifact_id, progress=percent)
        except Exception:  # the UI nicety never breaks an encode
            get_run_logger().debug("progress update failed", exc_info=True)


def _summarize(out_dir: Path, name: str, kind: str, width: int = 0, height: int = 0, fps: float = 0.0) -> RenditionOutput:
    sizes = {p.name: p.stat().st_size for p in out_dir.iterdir() if p.is_file()}
    playlist_text = (out_dir / PLAYLIST).read_text()
    if kind == "video":
        codecs = avc1_from_init((out_dir / "init.mp4").read_bytes())
        if codecs is None:
            raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"The {name} init segment has no H.264 configuration.")
    else:
        codecs = AAC_LC
    return summarize_rendition(name, kind, playlist_text, sizes, codecs, width, height, fps)


def _fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (what an earlier attempt left there is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _check_source(result: ffmpeg.FFmpegResult, info: SourceInfo, stream: str = "video stream",
                  expected: float | None = None) -> None:
    """The verdict of a full decode on the source (or on a range of it ``expected`` seconds
    long): decoder errors mean ``corrupt_stream``; a ``stream`` that ends well before its stated
    duration, ``truncated``."""
    expected = info.duration if expected is None else expected
    damage = ffmpeg.input_damage(result.errors, result.out_time, expected)
    if damage is not None:
        raise damage
    ffmpeg.check_duration(stream, result.out_time, expected)


@task(name="encode-ladder", task_run_name="encode-ladder", cache_policy=NO_CACHE)
def encode_ladder(source_path: Path, info: SourceInfo, renditions: list[Rendition], config: LadderConfig,
                  out_root: Path, ladder: LadderProcess, limits: ffmpeg.ProcessLimits, audio: bool = False,
                  poster: tuple[Rendition, Path] | None = None,
                  storyboard: tuple[Storyboard, Path] | None = None) -> float:
    """Decode the source once and encode every pending rung (and, with ``audio``, the audio
    rendition; with ``poster``, the poster frame from that rung's pictures; with ``storyboard``,
    the storyboard sheet from the smallest rung's pictures) in one FFmpeg process,
    the shared ``ladder`` process; each rendition's task, and the poster's, then takes over its
    output.

    Damaged input is caught here, by the decode the transcode needs anyway (:func:`_check_source`),
    and becomes every rung's verdict. Any other failure leaves each rung to retry alone.
    """
    logger = get_run_logger()

    def progress(seconds: float) -> None:
        ladder.out_time = seconds

    with ladder.producing():
        out_dirs = [str(_fresh_dir(out_root / r.name)) for r in renditions]
        audio_dir = str(_fresh_dir(out_root / "audio")) if audio else None
        for image in [extra[1] for extra in (poster, storyboard) if extra is not None]:
            image.parent.mkdir(parents=True, exist_ok=True)
            image.unlink(missing_ok=True)
        args = ladder_encode_args(str(source_path), info, renditions, config, out_dirs, audio_dir,
                                  (poster[0], str(poster[1])) if poster is not None else None,
                                  (storyboard[0], str(storyboard[1])) if storyboard is not None else None)
        result = limits.run(args, on_progress=progress, log=logger, output_dir=str(out_root))
        _check_source(result, info)
        if audio and config.loudness is not None:
            try:
                ladder.loudness = parse_loudnorm(result.info)
            except ValueError as exc:  # the audio's task measures it alone
                logger.warning("the ladder process's loudness measurement is unreadable: %s", exc)
    logger.info("encoded %.2f s of video for %s in one process in %.1f s", result.out_time,
                ", ".join([r.name for r in renditions] + (["audio"] if audio else []) + (["poster"] if poster else [])
                          + (["storyboard"] if storyboard else [])),
                result.elapsed)
    return result.out_time


def _take_over(ladder: LadderProcess | None, name: str, limits: ffmpeg.ProcessLimits,
               progress: "_Progress | None" = None) -> bool:
    """Whether the shared ``ladder`` process makes ``name`` for this task: the task's first
    attempt claims it, waits for that process and takes its verdict on the source as its own.
    ``False`` (no shared process, or a retry) leaves the task to make it alone."""
    if ladder is None or not ladder.claim(name):
        return False
    try:
        ladder.wait(limits.wait_seconds(), on_tick=progress)
    except PixelFlowError as error:
        if error.is_rejection:
            raise
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED,
                             f"The process encoding the ladder failed ({error.message}); {name} is retried alone.",
                             error.details) from error
    return True


@task(name="transcode", task_run_name="transcode-{rendition.name}", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def transcode_rendition(rendition: Rendition, config: LadderConfig, source_path: Path, info: SourceInfo,
                        out_dir: Path, limits: ffmpeg.ProcessLimits, ladder: LadderProcess | None = None) -> RenditionOutput:
    """One rung as fMP4 HLS: taken over from the shared ``ladder`` process, else (a retry of this
    rung alone) encoded straight from the downloaded source."""
    logger = get_run_logger()
    progress = _Progress(f"{rendition.name} ({rendition.width}x{rendition.height})", info.duration)
    if not _take_over(ladder, rendition.name, limits, progress):
        logger.info("%s: encoding straight from the source", rendition.name)
        _fresh_dir(out_dir)
        args = encode_args(str(source_path), info, rendition, config, str(out_dir))
        result = limits.run(args, on_progress=progress, log=logger, output_dir=str(out_dir))
        damage = ffmpeg.input_damage(result.errors, result.out_time, info.duration)
        if damage is not None:  # this encode decoded the source itself: its verdict is the source's
            raise damage
    output = _summarize(out_dir, rendition.name, "video", rendition.width, rendition.height, rendition.fps_float)
    ffmpeg.check_duration(f"{rendition.name} rendition", output.duration, info.duration)
    progress(info.duration, force=True)  # complete: 100 %, not the start time of the last frame
    logger.info("%s: %d segments, %.2f s, %d bytes, peak %d bit/s", rendition.name, output.segments, output.duration,
                output.size, output.bandwidth)
    return output


@task(name="transcode-audio", task_run_name="transcode-audio", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def transcode_audio(source_path: Path, info: SourceInfo, config: LadderConfig, out_dir: Path, limits: ffmpeg.ProcessLimits,
                    ladder: LadderProcess | None = None, vouch: bool = False) -> RenditionOutput:
    """The audio rendition: the default (else first) audio track as stereo AAC in fMP4 HLS. Taken
    over from the shared ``ladder`` process when it carries the audio, else (a retry, or an
    audio-only source) encoded in a process of its own. For an audio-only source that decode is
    the one that vouches for the source (a damaged or truncated stream rejects it).

    With loudness normalisation (``config.loudness``), the shared process only measures the
    audio; it is then encoded here, in an audio-only process, through ``loudnorm``'s second pass
    (measured alone first when the shared process did not measure it), and the rendition carries
    the measurement for the manifest. With ``vouch`` (a chunked encode, whose chunks decode the
    video alone), decoder errors in the audio reject the source too."""
    logger = get_run_logger()
    shared = _take_over(ladder, "audio", limits)
    measured = normalised = None
    if config.loudness is not None:
        measured = ladder.loudness if shared else None  # shared: the ladder process measured it
        if measured is None:
            logger.info("audio: measuring its loudness in an audio-only pass")
            measured = _loudnorm(limits.run(loudness_measure_args(str(source_path), info, config), log=logger),
                                 "measuring the audio")
    if not shared or config.loudness is not None:
        _fresh_dir(out_dir)
        result = limits.run(audio_args(str(source_path), info, config, str(out_dir), measured), log=logger,
                            output_dir=str(out_dir))
        if info.video is None:
            _check_source(result, info, "audio stream")
        elif vouch and (damage := ffmpeg.input_damage(result.errors)) is not None:
            raise damage
        if measured is not None and not measured.silent:
            normalised = _loudnorm(result, "normalising the audio")
    output = _summarize(out_dir, "audio", "audio")
    if info.video is None:
        ffmpeg.check_duration("audio rendition", output.duration, info.duration)
    if measured is not None:  # loudness normalisation is on
        entry = loudness_entry(config.loudness, measured, normalised)
        logger.info("audio: loudness %s LUFS, now %s LUFS (%s)", entry["input_i"], entry["output_i"],
                    entry["normalization"])
        output = replace(output, loudness=tuple(entry.items()))
    return output


def _loudnorm(result: ffmpeg.FFmpegResult, doing: str) -> Loudnorm:
    """What ``loudnorm`` printed in FFmpeg's ``result``; ``transcode_failed`` (retried) when it
    printed nothing readable."""
    try:
        return parse_loudnorm(result.info)
    except ValueError as exc:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg printed no readable loudness measurement while "
                             f"{doing} ({exc}).", {"info_tail": ffmpeg.clean_stderr(result.info[-5:])}) from None


@task(name="poster", task_run_name="poster", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def make_poster(source_path: Path, info: SourceInfo, rendition: Rendition, out_path: Path, limits: ffmpeg.ProcessLimits,
                ladder: LadderProcess | None = None) -> Path:
    """A JPEG poster frame the size of ``rendition``: taken over from the shared ``ladder``
    process when it makes the poster, else (a retry) made in a process of its own."""
    return _image(ladder, "poster", limits, out_path,
                  lambda: poster_args(str(source_path), info, rendition, str(out_path), limits.max_pixels))


@task(name="storyboard", task_run_name="storyboard", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def make_storyboard(source_path: Path, info: SourceInfo, board: Storyboard, out_path: Path,
                    limits: ffmpeg.ProcessLimits, ladder: LadderProcess | None = None) -> Path:
    """The storyboard sheet (JPEG): taken over from the shared ``ladder`` process when it makes
    it, else (a retry) made in a process of its own."""
    return _image(ladder, "storyboard", limits, out_path,
                  lambda: storyboard_args(str(source_path), info, board, str(out_path), limits.max_pixels))


def _image(ladder: LadderProcess | None, name: str, limits: ffmpeg.ProcessLimits, out_path: Path, args) -> Path:
    """A JPEG output (``poster``, ``storyboard``) of the shared ``ladder`` process, or made alone
    with the command ``args()`` when the process does not make it for this task."""
    if not _take_over(ladder, name, limits):
        out_path.parent.mkdir(parents=True, exist_ok=True)
        limits.run(args(), log=get_run_logger(), output_dir=str(out_path.parent))
    if not out_path.exists() or out_path.stat().st_size == 0:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg wrote no {name} image.")
    return out_path


def _joined(output: RenditionOutput, local_root: Path, dest: Path) -> Path:
    """A rendition's init segment and segments, in order, as one fragmented MP4 file."""
    with open(dest, "wb") as joined:
        for relative in output.files:
            if not relative.endswith(PLAYLIST):
                with open(local_root / relative, "rb") as part:
                    shutil.copyfileobj(part, joined, 1024 * 1024)
    return dest


@task(name="mp4", task_run_name="mp4-{name}", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def make_download(name: str, video: RenditionOutput | None, audio: RenditionOutput | None, local_root: Path,
                  out_path: Path, limits: ffmpeg.ProcessLimits) -> Path:
    """A progressive download of rendition ``video`` with the ``audio`` rendition (an MP4), or of
    the audio alone (an M4A), remuxed from their files under ``local_root`` (no decode, no
    re-encode; see :func:`pixelflow.core.ffmpeg_args.remux_args`)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    video_part = _joined(video, local_root, out_path.with_suffix(".video.mp4")) if video is not None else None
    audio_part = _joined(audio, local_root, out_path.with_suffix(".audio.mp4")) if audio is not None else None
    try:
        limits.run(remux_args(str(video_part) if video_part else None, str(audio_part) if audio_part else None,
                              str(out_path)), log=get_run_logger(), output_dir=str(out_path.parent))
    finally:
        for part in (video_part, audio_part):
            if part is not None:
                part.unlink(missing_ok=True)
    if not out_path.exists() or out_path.stat().st_size == 0:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg wrote no download of {name}.")
    get_run_logger().info("%s: download of %d bytes", name, out_path.stat().st_size)
    return out_path
