"""Interpret ffprobe's JSON into a small typed summary of the source."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from pixelflow.errors import ErrorCode, PixelFlowError

STANDARD_RATES = [
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60),
]

HDR_TRANSFERS = {"smpte2084", "arib-std-b67"}

#: FFmpeg's complaint about a header whose frame size it refuses to allocate.
_REFUSED_SIZE = re.compile(r"picture size (\d+)x(\d+) is invalid", re.IGNORECASE)


def parse_rate(text: str | None) -> Fraction | None:
    """Parse ffprobe's ``"30000/1001"`` style rates; ``None`` for missing or zero.

    >>> parse_rate("30000/1001")
    Fraction(30000, 1001)
    >>> parse_rate("0/0") is None
    True
    """
    if not text:
        return None
    try:
        num, _, den = str(text).partition("/")
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result


def _rotation(stream: dict[str, Any]) -> int:
    """Clockwise display rotation in degrees (0, 90, 180, 270)."""
    degrees = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            degrees = _float(side["rotation"])
            break
    if degrees is None:
        degrees = _float((stream.get("tags") or {}).get("rotate"))
        if degrees is not None:
            degrees = -degrees  # the legacy tag is clockwise; the display matrix is anticlockwise
    if degrees is None:
        return 0
    # ffprobe reports the display matrix rotation anticlockwise (-90 means rotate 90 clockwise)
    return int(round(-degrees / 90.0)) * 90 % 360


@dataclass(frozen=True)
class VideoInfo:
    index: int
    codec: str
    width: int
    height: int
    sar: Fraction
    rotation: int
    fps: Fraction | None
    avg_fps: Fraction | None
    pix_fmt: str
    bit_depth: int
    field_order: str
    color_transfer: str
    nb_frames: int | None
    color_primaries: str = ""
    color_space: str = ""
    color_range: str = ""

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown to a viewer: pixel aspect applied, rotation applied."""
        width = self.width * self.sar
        height = Fraction(self.height)
        if self.rotation in (90, 270):
            width, height = height, width
        return max(1, round(width)), max(1, round(height))

    @property
    def display_aspect(self) -> Fraction:
        width = Fraction(self.width) * self.sar
        height = Fraction(self.height)
        if self.rotation in (90, 270):
            width, height = height, width
        return width / height

    @property
    def interlaced(self) -> bool:
        return self.field_order not in ("", "progressive", "unknown")

    @property
    def hdr(self) -> bool:
        return self.color_transfer in HDR_TRANSFERS

    @property
    def frame_rate(self) -> Fraction | None:
        """The frame rate to encode from: the average rate snapped to a standard rate when close
        (phones record variable frame rate), else the stream's base rate."""
        rate = self.avg_fps or self.fps
        if rate is None:
            return None
        if rate in STANDARD_RATES:
            return rate
        nearest = min(STANDARD_RATES, key=lambda standard: abs(float(rate) - float(standard)))
        if abs(float(rate) - float(nearest)) / float(nearest) < 0.03:
            return nearest
        if self.fps and self.avg_fps and abs(float(self.fps) - float(self.avg_fps)) / float(self.fps) < 0.03:
            return self.fps
        return Fraction(round(float(rate) * 1000), 1000)


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class SourceInfo:
    format_name: str
    demuxer: str
    duration: float
    size: int
    bit_rate: int | None
    video: VideoInfo | None
    audio: AudioInfo | None
    audio_stream_count: int
    #: ``"<index>:<type>"`` of streams FFmpeg could not identify (no codec), for example an AVI
    #: GAB2 subtitle stream carrying something other than subtitles.
    unidentified_streams: tuple[str, ...] = ()
    #: How many streams the file has, of every kind.
    stream_count: int = 0

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary for manifests, error records and the UI."""
        result: dict[str, Any] = {
            "container": self.demuxer,
            "duration": round(self.duration, 3),
            "size": self.size,
            "bit_rate": self.bit_rate,
            "audio_streams": self.audio_stream_count,
        }
        if self.video:
            width, height = self.video.display_size
            rate = self.video.frame_rate
            result["video"] = {
                "codec": self.video.codec,
                "width": self.video.width,
                "height": self.video.height,
                "display_width": width,
                "display_height": height,
                "rotation": self.video.rotation,
                "sample_aspect_ratio": f"{self.video.sar.numerator}:{self.video.sar.denominator}",
                "frame_rate": round(float(rate), 3) if rate else None,
                "pix_fmt": self.video.pix_fmt,
                "bit_depth": self.video.bit_depth,
                "interlaced": self.video.interlaced,
                "hdr": self.video.hdr,
            }
        if self.audio:
            result["audio"] = {k: v for k, v in asdict(self.audio).items() if k != "index"}
        return result


def _bit_depth(stream: dict[str, Any]) -> int:
    raw = stream.get("bits_per_raw_sample")
    if raw and str(raw).isdigit():
        return int(raw)
    pix_fmt = stream.get("pix_fmt") or ""
    for depth in (16, 14, 12, 10, 9):
        if f"p{depth}" in pix_fmt:
            return depth
    return 8


def _default_first(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    for stream in streams:
        if (stream.get("disposition") or {}).get("default"):
            return stream
    return streams[0] if streams else None


def _claimed_size(stderr: list[str] | None) -> tuple[int, int] | None:
    """The frame size a header claimed when FFmpeg refused it (ffprobe then reports 0x0)."""
    for line in stderr or []:
        found = _REFUSED_SIZE.search(line)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def _timeless(text: str | None) -> bool:
    """Whether a rate is ``N/0`` (every frame stamped at the same instant): no usable timing.

    >>> _timeless("1/0"), _timeless("0/0"), _timeless("30/1")
    (True, False, False)
    """
    num, _, den = str(text or "").partition("/")
    return den.strip() == "0" and num.strip() not in ("", "0")


def _duration(fmt: dict[str, Any], video: dict[str, Any] | None) -> float:
    """The source duration: the container's, else (absent or zero) the video stream's; ``-1``
    when neither states one. A negative or zero claim is kept for validation to reject."""
    stated = _float(fmt.get("duration"))
    stream = _float(video.get("duration")) if video is not None else None
    if stated is not None and stated > 0:
        return stated
    if stream is not None and stream > 0:
        return stream
    if stated is not None:
        return stated
    return stream if stream is not None else -1.0


def interpret_probe(data: dict[str, Any], size: int | None = None) -> SourceInfo:
    """Turn ffprobe's ``-show_format -show_streams`` JSON into a :class:`SourceInfo`.

    Raises ``not_media`` when there is no recognisable container. Stream-level judgement
    (codecs, limits) is :func:`pixelflow.core.validation.validate_source`'s job.

    ``data`` may carry ``"stderr"``, ffprobe's error lines (:func:`pixelflow.pipeline.ffmpeg.probe` adds
    them): a frame size FFmpeg refused to allocate (``Picture size 30000x30000 is invalid``) is
    reported as the stream's size, so validation names the real reason.

    Example:
        >>> data = {"format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "2.0"},
        ...         "streams": [{"index": 0, "codec_type": "video", "codec_name": "h264", "width": 0,
        ...                      "height": 0, "r_frame_rate": "30/1", "avg_frame_rate": "30/1"}],
        ...         "stderr": ["[h264] [IMGUTILS] Picture size 30000x30000 is invalid"]}
        >>> interpret_probe(data).video.width
        30000
    """
    fmt = data.get("format") or {}
    format_name = fmt.get("format_name") or ""
    if not format_name:
        raise PixelFlowError(ErrorCode.NOT_MEDIA, "The file is not a recognisable audio or video container.")
    streams = data.get("streams") or []
    videos = [
        s for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    video = None
    chosen = _default_first(videos)
    if chosen is not None:
        sar = parse_rate((chosen.get("sample_aspect_ratio") or "1:1").replace(":", "/")) or Fraction(1)
        nb_frames = chosen.get("nb_frames")
        width, height = int(chosen.get("width") or 0), int(chosen.get("height") or 0)
        if width <= 0 or height <= 0:
            width, height = _claimed_size(data.get("stderr")) or (width, height)
        timeless = _timeless(chosen.get("r_frame_rate"))
        video = VideoInfo(
            index=int(chosen.get("index", 0)),
            codec=chosen.get("codec_name") or "unknown",
            width=width,
            height=height,
            sar=sar,
            rotation=_rotation(chosen),
            fps=None if timeless else parse_rate(chosen.get("r_frame_rate")),
            avg_fps=None if timeless else parse_rate(chosen.get("avg_frame_rate")),
            pix_fmt=chosen.get("pix_fmt") or "",
            bit_depth=_bit_depth(chosen),
            field_order=chosen.get("field_order") or "",
            color_transfer=chosen.get("color_transfer") or "",
            nb_frames=int(nb_frames) if str(nb_frames or "").isdigit() else None,
            color_primaries=chosen.get("color_primaries") or "",
            color_space=chosen.get("color_space") or "",
            color_range=chosen.get("color_range") or "",
        )
    audio = None
    chosen_audio = _default_first(audios)
    if chosen_audio is not None:
        audio = AudioInfo(
            index=int(chosen_audio.get("index", 0)),
            codec=chosen_audio.get("codec_name") or "unknown",
            channels=int(chosen_audio.get("channels") or 0),
            sample_rate=int(chosen_audio.get("sample_rate") or 0),
        )
    duration = _duration(fmt, chosen)
    unidentified = tuple(
        f"{s.get('index', '?')}:{s.get('codec_type') or 'unknown'}" for s in streams
        if (s.get("codec_name") or "unknown") in ("unknown", "none") and s.get("codec_type") != "attachment"
    )
    bit_rate = _float(fmt.get("bit_rate"))
    return SourceInfo(
        format_name=format_name,
        demuxer=format_name.split(",")[0],
        duration=duration,
        size=int(size if size is not None else (_float(fmt.get("size")) or 0)),
        bit_rate=int(bit_rate) if bit_rate else None,
        video=video,
        audio=audio,
        audio_stream_count=len(audios),
        unidentified_streams=unidentified,
        stream_count=len(streams),
    )
