"""Decide whether a probed source can be transcoded, with a stable code for every rejection."""

from __future__ import annotations

from dataclasses import dataclass, field

from pixelflow.core.probe import SourceInfo
from pixelflow.errors import ErrorCode, PixelFlowError

#: Demuxers that read other files or URLs named inside the input. Never accepted, whatever the
#: allow-list says: they are the local-file-disclosure / SSRF class of FFmpeg input.
PLAYLIST_DEMUXERS = frozenset({"hls", "applehttp", "concat", "ffconcat", "m3u8", "dash", "webm_dash_manifest", "mpjpeg",
                               "image2", "sdp", "rtsp", "rtp", "tee", "data", "lavfi", "imf"})


@dataclass(frozen=True)
class Limits:
    """What PixelFlow accepts. Defaults match :class:`pixelflow.settings.PixelFlowSettings`."""

    max_bytes: int = 50 * 1024**3
    max_duration: float = 6 * 3600
    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 7680 * 4320
    min_dimension: int = 16
    min_fps: float = 1.0
    max_fps: float = 240.0
    max_streams: int = 32
    #: Decoding work: coded width x height x frame rate x duration, in pixels (six hours of 4K at 60 fps).
    max_work_pixels: int = 3840 * 2160 * 60 * 6 * 3600
    #: The scratch space a worker has (bytes) and the multiple of a source's size a run needs
    #: there: a source larger than ``scratch_bytes / headroom`` can never be transcoded here.
    scratch_bytes: int | None = None
    headroom: float = 2.5
    containers: frozenset[str] = field(default_factory=lambda: frozenset({"mov", "matroska", "webm", "avi", "mpegts", "flv", "mxf", "mpeg", "ogg"}))
    video_codecs: frozenset[str] = field(default_factory=lambda: frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "prores"}))
    #: Audio-only uploads: the containers accepted besides ``containers`` (which may hold audio
    #: alone too, like ``.m4a`` in ``mov``) and the audio codecs accepted in them.
    audio_containers: frozenset[str] = field(default_factory=lambda: frozenset({"mp3", "wav", "flac", "aac"}))
    audio_codecs: frozenset[str] = field(default_factory=lambda: frozenset({"aac", "mp3", "flac", "opus", "vorbis", "alac", "pcm_s16le", "pcm_s24le"}))


def check_size(size: int, limits: Limits) -> None:
    """Reject by object size before anything is downloaded: empty, over the limit, or too large
    ever to fit in the workers' scratch space (``scratch_bytes``) with its ``headroom``.

    >>> check_size(100, Limits(scratch_bytes=200, headroom=2.5))
    Traceback (most recent call last):
    ...
    pixelflow.errors.PixelFlowError: too_large: The upload is 100 bytes and needs 250 bytes of scratch space (2.5x its size); the workers have 200 bytes, so it can never fit.
    >>> check_size(0, Limits())
    Traceback (most recent call last):
    ...
    pixelflow.errors.PixelFlowError: empty_file: The uploaded object is empty (0 bytes).
    """
    if size <= 0:
        raise PixelFlowError(ErrorCode.EMPTY_FILE, "The uploaded object is empty (0 bytes).")
    if size > limits.max_bytes:
        raise PixelFlowError(
            ErrorCode.TOO_LARGE,
            f"The upload is {size} bytes; the limit is {limits.max_bytes} bytes.",
            {"size": size, "max_bytes": limits.max_bytes},
        )
    if limits.scratch_bytes is not None and size * limits.headroom > limits.scratch_bytes:
        raise PixelFlowError(
            ErrorCode.TOO_LARGE,
            f"The upload is {size} bytes and needs {size * limits.headroom:.0f} bytes of scratch space "
            f"({limits.headroom:g}x its size); the workers have {limits.scratch_bytes} bytes, so it can never fit.",
            {"size": size, "scratch_bytes": limits.scratch_bytes, "headroom": limits.headroom,
             "max_bytes": int(limits.scratch_bytes / limits.headroom)},
        )


#: Containers whose unidentified streams are refused: an AVI "GAB2" subtitle stream can hide a
#: whole other file (an HLS playlist naming local files or URLs); FFmpeg 5.1 declines to open
#: anything but SRT/ASS there, and PixelFlow refuses the file rather than rely on that alone.
HIDDEN_PAYLOAD_CONTAINERS = frozenset({"avi"})


def validate_source(info: SourceInfo, limits: Limits) -> None:
    """Raise :class:`PixelFlowError` with the first reason the source cannot be transcoded.

    Checks, in order: container (allow-list; playlists never), the number of streams, hidden
    payloads, a video stream, its codec, usable and bounded dimensions (coded and as displayed),
    frame rate, duration, and the work budget (:func:`decode_work`), all from headers before any
    frame is decoded. A file without video is an audio-only upload
    (:func:`_validate_audio_only`), which may also come in the ``audio_containers``.

    Example:
        >>> from pixelflow.core.probe import interpret_probe
        >>> info = interpret_probe({"format": {"format_name": "mp3", "duration": "3.0"},
        ...                         "streams": [{"index": 0, "codec_type": "audio", "codec_name": "mp3"}]})
        >>> validate_source(info, Limits())
        >>> info = interpret_probe({"format": {"format_name": "mp3", "duration": "3.0"},
        ...                         "streams": [{"index": 0, "codec_type": "audio", "codec_name": "wmav2"}]})
        >>> validate_source(info, Limits())
        Traceback (most recent call last):
        ...
        pixelflow.errors.PixelFlowError: unsupported_codec: The audio codec 'wmav2' is not accepted for an audio-only upload.
    """
    demuxers = set(info.format_name.split(","))
    if demuxers & PLAYLIST_DEMUXERS or not (demuxers & (limits.containers | limits.audio_containers)):
        raise PixelFlowError(
            ErrorCode.UNSUPPORTED_CONTAINER,
            f"The container '{info.format_name}' is not accepted; upload MP4, MOV, MKV, WebM or another common video file.",
            {"container": info.format_name},
        )
    if info.stream_count > limits.max_streams:
        raise PixelFlowError(
            ErrorCode.TOO_MANY_STREAMS,
            f"The file has {info.stream_count} streams; the limit is {limits.max_streams}.",
            {"streams": info.stream_count, "max_streams": limits.max_streams},
        )
    if demuxers & HIDDEN_PAYLOAD_CONTAINERS and info.unidentified_streams:
        raise PixelFlowError(
            ErrorCode.UNSUPPORTED_CONTAINER,
            "The AVI file embeds a stream FFmpeg cannot identify (such as a GAB2 subtitle stream carrying a "
            "playlist); export the video as MP4 and upload that.",
            {"container": info.format_name, "streams": list(info.unidentified_streams)},
        )
    video = info.video
    if video is None:
        return _validate_audio_only(info, limits)
    if demuxers <= limits.audio_containers - limits.containers:
        raise PixelFlowError(
            ErrorCode.UNSUPPORTED_CONTAINER,
            f"The container '{info.format_name}' is accepted for audio only; upload the video as MP4 or MOV.",
            {"container": info.format_name},
        )
    if video.codec not in limits.video_codecs:
        raise PixelFlowError(
            ErrorCode.UNSUPPORTED_CODEC,
            f"The video codec '{video.codec}' is not accepted.",
            {"codec": video.codec},
        )
    if video.width <= 0 or video.height <= 0:
        raise PixelFlowError(ErrorCode.CORRUPT_STREAM, "The video stream has no usable dimensions.")
    width, height = video.display_size
    too_large = (
        max(video.width, video.height, width, height) > max(limits.max_width, limits.max_height)
        or min(video.width, video.height) > min(limits.max_width, limits.max_height)
        or video.width * video.height > limits.max_pixels
        or width * height > limits.max_pixels
    )
    if too_large:
        raise PixelFlowError(
            ErrorCode.DIMENSIONS_TOO_LARGE,
            f"The video is {video.width}x{video.height} (shown as {width}x{height}); the limit is "
            f"{limits.max_width}x{limits.max_height} and {limits.max_pixels} pixels.",
            {"width": video.width, "height": video.height, "display_width": width, "display_height": height},
        )
    if min(video.width, video.height, width, height) < limits.min_dimension:
        raise PixelFlowError(
            ErrorCode.DIMENSIONS_TOO_SMALL,
            f"The video is {width}x{height}; both sides must be at least {limits.min_dimension} pixels.",
            {"width": width, "height": height},
        )
    rate = video.frame_rate
    if rate is None or not (limits.min_fps <= float(rate) <= limits.max_fps):
        raise PixelFlowError(
            ErrorCode.FRAME_RATE_OUT_OF_RANGE,
            f"The frame rate {float(rate) if rate else 0:g} fps is outside {limits.min_fps:g} to {limits.max_fps:g} fps.",
            {"frame_rate": float(rate) if rate else None},
        )
    if info.duration <= 0:
        raise PixelFlowError(
            ErrorCode.INVALID_DURATION,
            "The file reports no positive duration; it is probably truncated or not a finished recording.",
            {"duration": info.duration},
        )
    if info.duration > limits.max_duration:
        raise PixelFlowError(
            ErrorCode.TOO_LONG,
            f"The video lasts {info.duration:.0f} s; the limit is {limits.max_duration:.0f} s.",
            {"duration": info.duration, "max_duration": limits.max_duration},
        )
    work = decode_work(info)
    if work > limits.max_work_pixels:
        raise PixelFlowError(
            ErrorCode.WORK_BUDGET_EXCEEDED,
            f"Decoding the video means {work:.3g} pixels ({video.width}x{video.height} at {float(rate):g} fps for "
            f"{info.duration:.0f} s); the work budget is {limits.max_work_pixels:.3g}.",
            {"work_pixels": work, "max_work_pixels": limits.max_work_pixels},
        )


def _validate_audio_only(info: SourceInfo, limits: Limits) -> None:
    """An upload without video becomes an audio-only asset when it has an accepted audio stream
    and a sane duration; with neither video nor audio it is rejected (``no_video_stream``)."""
    audio = info.audio
    if audio is None:
        raise PixelFlowError(
            ErrorCode.NO_VIDEO_STREAM,
            "The file has neither a video nor an audio stream PixelFlow can use.",
            {"audio_streams": info.audio_stream_count},
        )
    if audio.codec not in limits.audio_codecs:
        raise PixelFlowError(
            ErrorCode.UNSUPPORTED_CODEC,
            f"The audio codec '{audio.codec}' is not accepted for an audio-only upload.",
            {"codec": audio.codec},
        )
    if info.duration <= 0:
        raise PixelFlowError(
            ErrorCode.INVALID_DURATION,
            "The file reports no positive duration; it is probably truncated or not a finished recording.",
            {"duration": info.duration},
        )
    if info.duration > limits.max_duration:
        raise PixelFlowError(
            ErrorCode.TOO_LONG,
            f"The recording lasts {info.duration:.0f} s; the limit is {limits.max_duration:.0f} s.",
            {"duration": info.duration, "max_duration": limits.max_duration},
        )


def decode_work(info: SourceInfo) -> float:
    """The pixels a full decode of the source produces, from its headers: coded width x height
    x frame rate (:attr:`~pixelflow.core.probe.VideoInfo.frame_rate`) x duration. A file of
    near-empty frames is small to upload and costs this much to decode all the same.

    >>> from pixelflow.core.probe import interpret_probe
    >>> info = interpret_probe({"format": {"format_name": "mov", "duration": "7200"}, "streams": [
    ...     {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 7680, "height": 4320,
    ...      "r_frame_rate": "240/1", "avg_frame_rate": "240/1"}]})
    >>> f"{decode_work(info):.3g}"
    '5.73e+13'
    """
    video = info.video
    rate = video.frame_rate if video is not None else None
    if video is None or rate is None or info.duration <= 0:
        return 0.0
    return float(video.width) * video.height * float(rate) * info.duration
