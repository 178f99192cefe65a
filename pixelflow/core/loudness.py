"""EBU R128 loudness normalisation of the audio rendition (``PIXELFLOW_LOUDNESS_TARGET``).

Two passes of FFmpeg's ``loudnorm`` filter:

1. **Measure** (:func:`measure_filter`): the ladder process, which decodes the source once for
   every output, sends its audio through ``loudnorm`` with ``print_format=json`` to a null output
   instead of encoding it; a retry or an audio-only source measures in an audio-only pass. At the
   end FFmpeg prints the measurement as a JSON block among its log lines (:func:`parse_loudnorm`).
2. **Normalise** (:func:`normalise_filter`): an audio-only pass (only the audio stream mapped: no
   video is decoded) encodes the rendition through ``loudnorm`` in linear mode with the measured
   values, one gain for the whole programme, resampled back to 48 kHz (``loudnorm`` works at
   192 kHz). ``loudnorm`` falls back to its dynamic mode by itself when one gain would push the
   true peak over the target or the loudness range is wider than the target's.

A source whose audio has nothing above the absolute gate of -70 LUFS (silence) is left as it is
(:meth:`Loudnorm.silent`): there is no programme loudness to bring to the target.

Example:
    >>> target = LoudnessTarget(-16)
    >>> measure_filter(target)
    'loudnorm=I=-16:TP=-1.5:LRA=11:print_format=json'
    >>> measured = parse_loudnorm(EXAMPLE_LOG.splitlines())
    >>> measured.input_i, measured.silent
    (-51.76, False)
    >>> normalise_filter(target, measured).split(":")[3:6]
    ['measured_I=-51.76', 'measured_TP=-47.18', 'measured_LRA=0.1']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, Iterable

from pixelflow.core.ffmpeg_log import message

#: ``loudnorm``'s accepted ranges in FFmpeg 5.1 (``ffmpeg -h filter=loudnorm``).
TARGET_I_RANGE = (-70.0, -5.0)
TARGET_TP_RANGE = (-9.0, 0.0)
TARGET_LRA_RANGE = (1.0, 50.0)
#: The absolute gate of EBU R128: audio with nothing louder than this is silence.
ABSOLUTE_GATE = -70.0
#: Sample rate of the audio rendition (``loudnorm`` outputs 192 kHz).
SAMPLE_RATE = 48000

EXAMPLE_LOG = """[info] video:515kB audio:2256kB subtitle:0kB other streams:0kB global headers:0kB
[Parsed_loudnorm_0 @ 0x55bf0c610a40] [info] 
{
\t"input_i" : "-51.76",
\t"input_tp" : "-47.18",
\t"input_lra" : "0.10",
\t"input_thresh" : "-61.76",
\t"output_i" : "-16.04",
\t"output_tp" : "-11.39",
\t"output_lra" : "0.00",
\t"output_thresh" : "-26.04",
\t"normalization_type" : "dynamic",
\t"target_offset" : "0.04"
}
[libx264 @ 0x55bf0c5cf100] [info] kb/s:702.49"""


@dataclass(frozen=True)
class LoudnessTarget:
    """What the audio rendition is normalised to: integrated loudness (LUFS), maximum true peak
    (dBTP) and loudness range (LU), within ``loudnorm``'s ranges.

    >>> LoudnessTarget(-23, -1, 7).fingerprint()
    'loud-23/-1/7'
    >>> LoudnessTarget(-3)
    Traceback (most recent call last):
    ...
    ValueError: loudness target -3 LUFS is outside -70 to -5
    """

    integrated: float
    true_peak: float = -1.5
    lra: float = 11.0

    def __post_init__(self):
        for value, (low, high), what in ((self.integrated, TARGET_I_RANGE, "loudness target {} LUFS"),
                                         (self.true_peak, TARGET_TP_RANGE, "true peak target {} dBTP"),
                                         (self.lra, TARGET_LRA_RANGE, "loudness range target {} LU")):
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise ValueError(f"{what.format(f'{value:g}')} is outside {low:g} to {high:g}")

    def options(self) -> str:
        """The target as ``loudnorm`` options."""
        return f"I={self.integrated:g}:TP={self.true_peak:g}:LRA={self.lra:g}"

    def fingerprint(self) -> str:
        """The target in the ladder's fingerprint (what identifies a published audio rendition)."""
        return f"loud{self.integrated:g}/{self.true_peak:g}/{self.lra:g}"


def _number(text: Any) -> float | None:
    """A ``loudnorm`` value as a float, ``None`` when it is not finite (``-inf`` for silence)."""
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Loudnorm:
    """What one ``loudnorm`` pass printed: the input's measurement and what it made of it.
    Values that are not finite (``-inf``: silence) are ``None``."""

    input_i: float | None
    input_tp: float | None
    input_lra: float | None
    input_thresh: float | None
    output_i: float | None
    output_tp: float | None
    output_lra: float | None
    output_thresh: float | None
    normalization_type: str
    target_offset: float | None

    @property
    def silent(self) -> bool:
        """Whether the input has nothing above the absolute gate: nothing to normalise."""
        return self.input_i is None or self.input_tp is None or self.input_i <= ABSOLUTE_GATE

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Loudnorm":
        """From the JSON object ``loudnorm`` prints (every value a string).

        Raises:
            ValueError: a field is missing or not a number.
        """
        try:
            values = {f.name: (str(data[f.name]) if f.name == "normalization_type" else _number(data[f.name]))
                      for f in fields(cls)}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"loudnorm's measurement is incomplete or not numeric ({exc})") from None
        return cls(**values)


def parse_loudnorm(lines: Iterable[str]) -> Loudnorm:
    """The last ``loudnorm`` JSON block among FFmpeg's log lines (with or without their level
    prefixes; any other line, before, between or after, is ignored).

    >>> parse_loudnorm(EXAMPLE_LOG.splitlines()).normalization_type
    'dynamic'
    >>> parse_loudnorm(["[info] frame=1", "[error] no block here"])
    Traceback (most recent call last):
    ...
    ValueError: FFmpeg printed no loudnorm measurement
    """
    blocks, current = [], None
    for line in lines:
        text = message(line).strip()
        if text == "{":
            current = [text]
        elif current is not None:
            current.append(text)
            if text == "}":
                blocks.append(current)
                current = None
    for block in reversed(blocks):
        try:
            data = json.loads("\n".join(block))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "input_i" in data:
            return Loudnorm.from_json(data)
    raise ValueError("FFmpeg printed no loudnorm measurement")


def measure_filter(target: LoudnessTarget) -> str:
    """The first pass: ``loudnorm`` measuring the input and printing it as JSON."""
    return f"loudnorm={target.options()}:print_format=json"


def normalise_filter(target: LoudnessTarget, measured: Loudnorm) -> str:
    """The second pass: ``loudnorm`` in linear mode with the first pass's ``measured`` values
    (clamped to the option ranges ``loudnorm`` accepts), printing what it did as JSON, then back
    to 48 kHz.

    A measured loudness range of 0 (a steady tone) is passed as 0.01: ``loudnorm`` takes 0 for
    "not measured" and would not use its linear mode.

    >>> silence = Loudnorm(None, None, 0.0, -70.0, None, None, 0.0, -70.0, "dynamic", None)
    >>> normalise_filter(LoudnessTarget(-16), silence)
    Traceback (most recent call last):
    ...
    ValueError: silence is not normalised
    """
    if measured.silent:
        raise ValueError("silence is not normalised")

    def clamp(value: float | None, low: float, high: float, default: float) -> str:
        return f"{min(high, max(low, default if value is None else value)):g}"

    return ",".join([
        f"loudnorm={target.options()}:measured_I={clamp(measured.input_i, -99, 0, -70)}"
        f":measured_TP={clamp(measured.input_tp, -99, 99, 99)}"
        f":measured_LRA={clamp(measured.input_lra, 0.01, 99, 0.01)}"
        f":measured_thresh={clamp(measured.input_thresh, -99, 0, -70)}"
        f":offset={clamp(measured.target_offset, -99, 99, 0)}:linear=true:print_format=json",
        f"aresample={SAMPLE_RATE}",
    ])


def loudness_entry(target: LoudnessTarget, measured: Loudnorm, normalised: Loudnorm | None) -> dict[str, Any]:
    """The audio rendition's ``loudness`` in the manifest: the target, the source's measurement
    and, when it was normalised, the loudness ``loudnorm`` measured on its output and how
    (``linear`` or ``dynamic``); ``none`` for silence, which is left as it is. Values that are not
    finite are ``null``.

    >>> silence = Loudnorm(None, None, 0.0, -70.0, None, None, 0.0, -70.0, "dynamic", None)
    >>> entry = loudness_entry(LoudnessTarget(-16), silence, None)
    >>> entry["input_i"], entry["normalization"], entry["output_i"]
    (None, 'none', None)
    """
    entry = {"target_i": target.integrated, "target_tp": target.true_peak, "target_lra": target.lra,
             "input_i": measured.input_i, "input_tp": measured.input_tp, "input_lra": measured.input_lra,
             "input_thresh": measured.input_thresh}
    if normalised is None:
        return {**entry, "output_i": measured.input_i, "output_tp": measured.input_tp,
                "output_lra": measured.input_lra, "normalization": "none"}
    return {**entry, "output_i": normalised.output_i, "output_tp": normalised.output_tp,
            "output_lra": normalised.output_lra, "normalization": normalised.normalization_type}
