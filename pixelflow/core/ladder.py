"""Plan the adaptive-bitrate ladder for a source.

Rules (after PeerTube's and the HLS authoring guidelines'):

* a rung is named after the short side of the picture (``720p`` is 1280x720 for landscape and
  720x1280 for portrait video);
* never upscale: rungs taller than the source are dropped; a source smaller than the lowest rung
  gets one rendition at its own size;
* keep the display aspect ratio (pixel aspect and rotation applied), even dimensions;
* frame rate capped per rung (30 fps at 480p and below, 60 above) by an integer divisor, so
  frames and keyframes stay on the same timeline in every rendition;
* one GOP length in seconds for every rung, segments a whole number of GOPs;
* bitrate caps from a table at 30 fps, scaled by frame rate for faster sources.
* the poster frame is taken from the third rung (720p by default), else the tallest
  (:func:`poster_rendition`).

Example:
    >>> from fractions import Fraction
    >>> plan = plan_ladder(3840, 2160, Fraction(30), LadderConfig())
    >>> [(r.name, r.width, r.height) for r in plan]
    [('360p', 640, 360), ('480p', 854, 480), ('720p', 1280, 720), ('1080p', 1920, 1080)]
    >>> [r.name for r in plan_ladder(1280, 720, Fraction(30), LadderConfig())]
    ['360p', '480p', '720p']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from pixelflow.core.loudness import LoudnessTarget

#: Bitrate caps (kbit/s) at 30 fps, by rung. Rungs not listed are interpolated by pixel count.
DEFAULT_MAXRATES_KBPS: dict[int, int] = {
    144: 250, 240: 450, 360: 900, 480: 1500, 540: 2000, 720: 3000, 1080: 5500, 1440: 10000, 2160: 18000,
}


@dataclass(frozen=True)
class LadderConfig:
    """The ladder's knobs. One place; :class:`pixelflow.settings.PixelFlowSettings` fills it."""

    heights: tuple[int, ...] = (360, 480, 720, 1080)
    preset: str = "veryfast"
    crf: int = 23
    gop_seconds: float = 2.0
    segment_seconds: float = 4.0
    audio_bitrate_kbps: int = 128
    max_fps: float = 60.0
    low_rung_max_fps: float = 30.0
    threads: int = 0
    #: FFmpeg's ``-max_pixels`` on every decode: a frame larger than this (a mid-stream change of
    #: resolution past what validation accepted) stops the decode instead of allocating it.
    decode_max_pixels: int = 7680 * 4320
    maxrates_kbps: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_MAXRATES_KBPS))
    #: EBU R128 normalisation of the audio rendition (:mod:`pixelflow.core.loudness`); ``None``: off.
    loudness: LoudnessTarget | None = None

    def __post_init__(self):
        if not self.heights:
            raise ValueError("the ladder needs at least one rung")
        ratio = self.segment_seconds / self.gop_seconds
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError("segment_seconds must be a whole multiple of gop_seconds")

    def fingerprint(self) -> str:
        """A short string that changes whenever an output-affecting knob changes (loudness
        normalisation adds its target; without it the string is what it always was).

        >>> LadderConfig(loudness=LoudnessTarget(-16)).fingerprint().endswith("-loud-16/-1.5/11")
        True
        """
        rates = ",".join(f"{h}:{r}" for h, r in sorted(self.maxrates_kbps.items()))
        loudness = f"-{self.loudness.fingerprint()}" if self.loudness is not None else ""
        return (
            f"h264-{self.preset}-crf{self.crf}-gop{self.gop_seconds:g}-seg{self.segment_seconds:g}"
            f"-a{self.audio_bitrate_kbps}-fps{self.max_fps:g}/{self.low_rung_max_fps:g}-r[{rates}]{loudness}"
        )

    def maxrate_for(self, rung: int, width: int, height: int) -> int:
        if rung in self.maxrates_kbps:
            return self.maxrates_kbps[rung]
        known = sorted(self.maxrates_kbps.items())
        pixels = width * height
        # interpolate on bits per pixel of the nearest listed rung
        nearest = min(known, key=lambda item: abs(item[0] - rung))
        ref_pixels = (nearest[0] * 16 / 9) * nearest[0]
        return max(100, int(nearest[1] * (pixels / ref_pixels) ** 0.75))


@dataclass(frozen=True)
class Rendition:
    """One rung of a planned ladder."""

    name: str
    rung: int
    width: int
    height: int
    fps: Fraction
    maxrate_kbps: int
    bufsize_kbps: int
    gop_frames: int

    @property
    def fps_float(self) -> float:
        return float(self.fps)

    @property
    def fps_text(self) -> str:
        """Exact rate for FFmpeg's fps filter and -r."""
        return f"{self.fps.numerator}/{self.fps.denominator}"


def _even(value: float) -> int:
    return max(2, int(math.floor(value / 2.0 + 0.5)) * 2)


def output_size(display_width: int, display_height: int, rung: int) -> tuple[int, int]:
    """Size of a rung whose short side is ``rung``, keeping the display aspect.

    >>> output_size(1920, 1080, 480)
    (854, 480)
    >>> output_size(1080, 1920, 720)
    (720, 1280)
    >>> output_size(1440, 1080, 360)
    (480, 360)
    """
    if display_width >= display_height:
        return _even(rung * display_width / display_height), _even(rung)
    return _even(rung), _even(rung * display_height / display_width)


def rung_fps(source_fps: Fraction, cap: float) -> Fraction:
    """The source rate divided by the smallest whole number that brings it under ``cap``.

    >>> rung_fps(Fraction(60), 30)
    Fraction(30, 1)
    >>> rung_fps(Fraction(60000, 1001), 30)
    Fraction(30000, 1001)
    >>> rung_fps(Fraction(25), 30)
    Fraction(25, 1)
    """
    divisor = max(1, math.ceil(float(source_fps) / cap - 1e-9))
    return source_fps / divisor


def plan_ladder(display_width: int, display_height: int, fps: Fraction, config: LadderConfig) -> list[Rendition]:
    """The renditions to produce, lowest first.

    Args:
        display_width: Source width as displayed (pixel aspect and rotation applied).
        display_height: Source height as displayed.
        fps: Source frame rate.
        config: The ladder configuration.
    """
    short_side = min(display_width, display_height)
    rungs = [h for h in sorted(set(config.heights)) if h <= short_side]
    if not rungs:
        rungs = [short_side - short_side % 2]  # smaller than every rung: one rendition, own size
    plan = []
    for rung in rungs:
        width, height = output_size(display_width, display_height, rung)
        cap = config.low_rung_max_fps if rung <= 480 else config.max_fps
        rate = rung_fps(fps, cap)
        maxrate = config.maxrate_for(rung, width, height)
        if float(rate) > 31:
            maxrate = int(maxrate * 1.5)
        plan.append(
            Rendition(
                name=f"{rung}p",
                rung=rung,
                width=width,
                height=height,
                fps=rate,
                maxrate_kbps=maxrate,
                bufsize_kbps=maxrate * 2,
                gop_frames=max(1, round(config.gop_seconds * float(rate))),
            )
        )
    return plan


def poster_rendition(plan: list[Rendition]) -> Rendition:
    """The rung the poster frame is taken from, at its size: the third rung (720p in the default
    ladder), else the tallest there is.

    >>> from fractions import Fraction
    >>> [poster_rendition(plan_ladder(w, h, Fraction(30), LadderConfig())).name
    ...  for w, h in ((3840, 2160), (854, 480), (320, 240))]
    ['720p', '480p', '240p']
    """
    if not plan:
        raise ValueError("an empty ladder has no poster rung")
    return plan[min(len(plan) - 1, 2)]
