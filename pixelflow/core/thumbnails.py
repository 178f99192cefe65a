"""Thumbnails at time t: what a ``GET /assets/<id>/thumbnail.<format>?time=&width=&height=``
request asks for, checked against the asset's manifest, and where its picture comes from.

A thumbnail is made from a published rendition, never from the source (which may be gone): the
lowest rendition whose size covers the requested one, and in it the one segment that covers the
time. Everything here is pure: the request's strings and the manifest in, a :class:`ThumbnailPlan`
or a :class:`~pixelflow.errors.PixelFlowError` with a stable code out.

Example:
    >>> manifest = {"duration": 8.0, "renditions": [
    ...     {"name": "360p", "width": 640, "height": 360, "playlist": "360p/index.m3u8", "frame_rate": 30.0},
    ...     {"name": "720p", "width": 1280, "height": 720, "playlist": "720p/index.m3u8", "frame_rate": 30.0}]}
    >>> plan = plan_thumbnail(manifest, "jpg", {"time": "2.5", "width": "400"}, max_width=1920)
    >>> plan.rendition["name"], plan.width, plan.height, plan.time
    ('360p', 400, 225, 2.5)
    >>> plan_thumbnail(manifest, "jpg", {}, max_width=1920).width  # the poster's rung, at the poster's time
    1280
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pixelflow.core.ffmpeg_args import poster_seconds
from pixelflow.core.hls import MediaPlaylist
from pixelflow.core.ladder import poster_rendition
from pixelflow.errors import ErrorCode, PixelFlowError

#: The image formats served, by the URL's suffix: content type.
FORMATS = {"jpg": "image/jpeg", "webp": "image/webp"}

_INTEGER = re.compile(r"[0-9]{1,6}")
_NUMBER = re.compile(r"[0-9]{1,7}(?:\.[0-9]{1,6})?|\.[0-9]{1,6}")


@dataclass(frozen=True)
class ThumbnailPlan:
    """One thumbnail to make.

    Attributes:
        rendition: The manifest entry of the rendition it is made from.
        time: When, in seconds from the start of the asset (milliseconds).
        width: Width of the image, in pixels.
        height: Height of the image, in pixels.
        format: ``jpg`` or ``webp`` (a key of :data:`FORMATS`).
    """

    rendition: Mapping[str, Any]
    time: float
    width: int
    height: int
    format: str

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]

    def cache_key(self, asset_id: str) -> tuple[str, str, float, int, int, str]:
        """What identifies the image among every asset's thumbnails."""
        return asset_id, str(self.rendition.get("name")), self.time, self.width, self.height, self.format


def check_format(fmt: str) -> str:
    """``fmt`` when it is one of :data:`FORMATS`.

    >>> check_format("gif")
    Traceback (most recent call last):
    ...
    pixelflow.errors.PixelFlowError: invalid_format: Thumbnails are thumbnail.jpg or thumbnail.webp, not thumbnail.gif.
    """
    if fmt not in FORMATS:
        raise PixelFlowError(ErrorCode.INVALID_FORMAT, f"Thumbnails are thumbnail.jpg or thumbnail.webp, not "
                             f"thumbnail.{fmt[:16]}.", {"formats": sorted(FORMATS)})
    return fmt


def parse_time(raw: str | None, duration: float, default: float) -> float:
    """The requested time in seconds (rounded to the millisecond): a plain non-negative decimal
    number no later than ``duration``; ``default`` when none is given.

    >>> parse_time("1.5", 8.0, 0.8), parse_time(None, 8.0, 0.8)
    (1.5, 0.8)
    >>> parse_time("9", 8.0, 0.0)
    Traceback (most recent call last):
    ...
    pixelflow.errors.PixelFlowError: invalid_time: time=9 is beyond the asset's duration (8.000 s).
    """
    if raw is None:
        return round(min(default, duration), 3)
    text = raw.strip()
    if not _NUMBER.fullmatch(text):
        raise PixelFlowError(ErrorCode.INVALID_TIME, f"time must be a number of seconds from 0 to {duration:.3f}, not "
                             f"{text[:32]!r}.", {"duration": duration})
    value = float(text)
    if not math.isfinite(value) or value > duration:
        raise PixelFlowError(ErrorCode.INVALID_TIME, f"time={text} is beyond the asset's duration ({duration:.3f} s).",
                             {"duration": duration})
    return round(value, 3)


def parse_size(name: str, raw: str | None) -> int | None:
    """A requested width or height: a positive integer, or ``None`` when not given.

    >>> parse_size("width", "320"), parse_size("width", None)
    (320, None)
    >>> parse_size("width", "-5")
    Traceback (most recent call last):
    ...
    pixelflow.errors.PixelFlowError: invalid_size: width must be a positive whole number of pixels, not '-5'.
    """
    if raw is None:
        return None
    text = raw.strip()
    if not _INTEGER.fullmatch(text) or int(text) <= 0:
        raise PixelFlowError(ErrorCode.INVALID_SIZE, f"{name} must be a positive whole number of pixels, not "
                             f"{text[:32]!r}.")
    return int(text)


def video_renditions(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The manifest's video renditions with a size, smallest first."""
    found = [r for r in manifest.get("renditions") or [] if r.get("width") and r.get("height") and r.get("playlist")]
    return sorted(found, key=lambda r: (int(r["width"]) * int(r["height"]), int(r["width"])))


def fit(rendition: Mapping[str, Any], width: int | None, height: int | None) -> tuple[int, int]:
    """The image size for a requested width and/or height, keeping the rendition's aspect ratio
    (both given: the largest size inside that box); neither: the rendition's own size.

    >>> r = {"width": 1280, "height": 720}
    >>> fit(r, 320, None), fit(r, None, 180), fit(r, 320, 320), fit(r, None, None)
    ((320, 180), (320, 180), (320, 180), (1280, 720))
    """
    w, h = int(rendition["width"]), int(rendition["height"])
    if width is None and height is None:
        return w, h
    scale = min(width / w if width else math.inf, height / h if height else math.inf)
    return max(1, round(w * scale)), max(1, round(h * scale))


def choose_rendition(renditions: list[Mapping[str, Any]], width: int, height: int) -> Mapping[str, Any]:
    """The lowest rendition at least ``width`` x ``height`` (renditions smallest first), else the largest.

    >>> rs = [{"name": "360p", "width": 640, "height": 360}, {"name": "720p", "width": 1280, "height": 720}]
    >>> choose_rendition(rs, 640, 360)["name"], choose_rendition(rs, 641, 300)["name"]
    ('360p', '720p')
    """
    for rendition in renditions:
        if int(rendition["width"]) >= width and int(rendition["height"]) >= height:
            return rendition
    return renditions[-1]


def plan_thumbnail(manifest: Mapping[str, Any], fmt: str, query: Mapping[str, str], *, max_width: int) -> ThumbnailPlan:
    """Check a thumbnail request against a published asset's manifest.

    Args:
        manifest: The asset's ``manifest.json``.
        fmt: The URL's suffix (``jpg``, ``webp``).
        query: The request's ``time``, ``width`` and ``height`` (strings; others are ignored).
        max_width: The widest (and tallest) image served (``PIXELFLOW_THUMBNAIL_MAX_WIDTH``).

    Defaults: ``time`` the poster's (10 % in, at most 10 s), the size the poster's rendition's.

    Raises:
        PixelFlowError: ``invalid_format``, ``invalid_time`` (not a number, negative, beyond the
            duration), ``invalid_size`` (not a positive integer), ``thumbnail_too_large`` (above
            ``max_width`` or the largest rendition), ``not_found`` (an asset without video).
    """
    check_format(fmt)
    renditions = video_renditions(manifest)
    if not renditions:
        raise PixelFlowError(ErrorCode.NOT_FOUND, "The asset has no video rendition to take a thumbnail from.")
    largest = renditions[-1]
    duration = float(manifest.get("duration") or max(float(r.get("duration") or 0) for r in renditions))
    time = parse_time(query.get("time"), duration, poster_seconds(duration))
    width, height = parse_size("width", query.get("width")), parse_size("height", query.get("height"))
    limit_w, limit_h = min(max_width, int(largest["width"])), min(max_width, int(largest["height"]))
    if (width or 0) > limit_w or (height or 0) > limit_h:
        raise PixelFlowError(ErrorCode.THUMBNAIL_TOO_LARGE, f"Thumbnails of this asset are at most {limit_w} x "
                             f"{limit_h} pixels (its largest rendition, and PIXELFLOW_THUMBNAIL_MAX_WIDTH).",
                             {"max_width": limit_w, "max_height": limit_h})
    if width is None and height is None:
        rendition = poster_rendition(renditions)  # type: ignore[arg-type] - it only picks by position
        width, height = fit(rendition, None, None)
        if width > max_width or height > max_width:
            width, height = fit(rendition, min(width, max_width), min(height, max_width))
    else:
        width, height = fit(largest, width, height)
        rendition = choose_rendition(renditions, width, height)
    return ThumbnailPlan(rendition=rendition, time=time, width=width, height=height, format=fmt)


@dataclass(frozen=True)
class SegmentPick:
    """The segment of a media playlist that covers a time.

    Attributes:
        uri: The segment's URI, relative to its playlist.
        offset: Seconds from the segment's first picture to the requested one.
    """

    uri: str
    offset: float


def segment_at(playlist: MediaPlaylist, time: float, frame_rate: float = 30.0) -> SegmentPick:
    """The segment covering ``time`` and the offset inside it, held to its last picture (a time
    at or past the end is the last picture of the asset).

    >>> from pixelflow.core.hls import parse_media_playlist
    >>> p = parse_media_playlist("#EXTINF:2.0,\\na.m4s\\n#EXTINF:2.0,\\nb.m4s\\n#EXTINF:1.0,\\nc.m4s\\n")
    >>> segment_at(p, 0.0), segment_at(p, 2.5), segment_at(p, 5.0, 25.0)
    (SegmentPick(uri='a.m4s', offset=0.0), SegmentPick(uri='b.m4s', offset=0.5), SegmentPick(uri='c.m4s', offset=0.94))
    """
    if not playlist.segments:
        raise ValueError("the playlist has no segment")
    start = 0.0
    for index, (uri, duration) in enumerate(playlist.segments):
        if time < start + duration or index == len(playlist.segments) - 1:
            last_picture = max(0.0, duration - 1.5 / max(frame_rate, 1.0))
            return SegmentPick(uri, round(min(max(0.0, time - start), last_picture), 3))
        start += duration
    raise AssertionError("unreachable")
