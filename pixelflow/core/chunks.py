"""Chunked encoding: a long source's video encoded as time ranges (chunks) that are stitched
into renditions a player cannot tell from one pass.

A chunk is a whole number of HLS segments of every rung. Each chunk is one decode of its range
(``-ss``/``-t`` before the input: an accurate seek, the pictures before the cut dropped) that
encodes every rung of the ladder, as the single-pass ladder process does for the whole file.
What makes the chunks one rendition:

* **Cut points on every rung's frame grid.** A chunk starts at the first instant at or after
  its nominal start (``index x segments x segment_seconds``) that is a frame time of every rung
  (:func:`frame_grid`): each rung's ``fps`` filter then picks the very pictures one pass would,
  and the chunk's first picture is a forced keyframe that opens a segment in one pass too.
* **The same encoder parameters** for every chunk (libx264's settings, so the same SPS and
  PPS): one init segment (chunk 0's) serves every chunk; the stitch checks that each chunk's
  sample description (``stsd``) is chunk 0's (:func:`sample_description`).
* **Keyframes on the one-pass timeline**: every chunk forces them every GOP from its start,
  which is a keyframe of one pass; the HLS muxer cuts the chunk's segments at the same
  keyframes as one pass (it counts segment lengths from its first picture). With an integer
  frame rate the chunks' packets are one pass's, timestamps and all; with NTSC rates (29.97,
  59.94) a cut falls on the rungs' common frame grid, and a keyframe of a faster rung may come
  one frame later than one pass puts it (where one pass puts it a frame before the slower
  rungs' keyframe).
* **Continuous timestamps**: chunk 0 is written exactly as one pass writes its start. Every
  later chunk is shifted to its place (``-output_ts_offset``) and its fragments carry their
  decode time as is (``movflags=+frag_discont``, where FFmpeg's fMP4 muxer would otherwise
  start each file at 0), so each fragment's ``tfdt`` is the one pass's.
* **Continuous segment numbers**: chunk ``k`` numbers its segments from its first index
  (``-start_number``), and :func:`stitch_rendition` writes one media playlist over all chunks.

The audio is not chunked: it is encoded once, for the whole file, so there is nothing to join
at the cuts (no gap, no AAC priming at each boundary).

Example:
    >>> from fractions import Fraction
    >>> from pixelflow.core.ladder import LadderConfig, plan_ladder
    >>> plan = plan_ladder(640, 360, Fraction(30), LadderConfig(heights=(240, 360)))
    >>> chunks = plan_chunks(25.0, plan, LadderConfig(heights=(240, 360)), chunk_seconds=8)
    >>> [(c.index, c.start, c.end, c.first_segment) for c in chunks]
    [(0, 0.0, 8.0, 0), (1, 8.0, 16.0, 2), (2, 16.0, 24.0, 4), (3, 24.0, 25.0, 6)]
    >>> plan_chunks(8.0, plan, LadderConfig(), chunk_seconds=8)
    []
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from pixelflow.core.hls import bandwidths, event_playlist, parse_media_playlist
from pixelflow.core.ladder import LadderConfig, Rendition

#: Microseconds per second: FFmpeg's time options are read to the microsecond.
_US = 1_000_000


@dataclass(frozen=True)
class Chunk:
    """One time range of the source, encoded in one FFmpeg process for every rung.

    Attributes:
        index: The chunk's place, from 0.
        start_us: Where it starts in the source, in microseconds (a frame time of every rung,
            rounded down to the microsecond, so the picture at the cut is the chunk's first).
        end_us: Where the next chunk starts (or the source's duration, for the last).
        first_segment: The number of its first HLS segment (segments are numbered from 0 over
            the whole rendition).
        segments: How many segments it makes (the last chunk: at most that many).
    """

    index: int
    start_us: int
    end_us: int
    first_segment: int
    segments: int

    @property
    def start(self) -> float:
        return self.start_us / _US

    @property
    def end(self) -> float:
        return self.end_us / _US

    @property
    def duration(self) -> float:
        return (self.end_us - self.start_us) / _US

    def to_dict(self) -> dict[str, Any]:
        """The chunk as the manifest records it (besides where and when it was made)."""
        return {"index": self.index, "start": self.start, "end": self.end, "first_segment": self.first_segment}


def frame_grid(renditions: list[Rendition]) -> Fraction:
    """The spacing of the instants that are a frame time of every rung: the least common
    multiple of their frame durations.

    >>> from pixelflow.core.ladder import Rendition
    >>> def rung(fps): return Rendition("x", 360, 640, 360, fps, 900, 1800, 60)
    >>> frame_grid([rung(Fraction(30)), rung(Fraction(60))])
    Fraction(1, 30)
    >>> frame_grid([rung(Fraction(30000, 1001)), rung(Fraction(60000, 1001))])
    Fraction(1001, 30000)
    >>> frame_grid([rung(Fraction(30)), rung(Fraction(45))])
    Fraction(1, 15)
    """
    if not renditions:
        raise ValueError("no renditions")
    spacing = 1 / renditions[0].fps
    for r in renditions[1:]:
        step = 1 / r.fps
        spacing = Fraction(math.lcm(spacing.numerator, step.numerator), math.gcd(spacing.denominator, step.denominator))
    return spacing


def segments_per_chunk(chunk_seconds: float, config: LadderConfig) -> int:
    """Whole segments in a chunk of at most ``chunk_seconds`` (at least one).

    >>> segments_per_chunk(60, LadderConfig()), segments_per_chunk(6, LadderConfig()), segments_per_chunk(1, LadderConfig())
    (15, 1, 1)
    """
    return max(1, int(math.floor(chunk_seconds / config.segment_seconds + 1e-9)))


def plan_chunks(duration: float, renditions: list[Rendition], config: LadderConfig, chunk_seconds: float,
                first_seconds: float = 0) -> list[Chunk]:
    """The chunks of a source of ``duration`` seconds, or ``[]`` when it is encoded in one pass
    (no video, ``chunk_seconds`` 0, or a source no longer than ``chunk_seconds``).

    Each chunk is :func:`segments_per_chunk` segments long (the first one ``first_seconds`` long
    when that is shorter: a progressive asset plays once its first chunk is done), cut at the
    first instant of the rungs' common :func:`frame_grid` at or after its nominal start; a range
    too short to hold one frame at the end is left to the chunk before it.

    >>> from pixelflow.core.ladder import plan_ladder
    >>> ntsc = plan_ladder(1280, 720, Fraction(60000, 1001), LadderConfig(heights=(360, 720)))
    >>> [(c.start_us, c.end_us) for c in plan_chunks(20, ntsc, LadderConfig(), 8)]
    [(0, 8008000), (8008000, 16016000), (16016000, 20000000)]
    >>> [(c.start, c.end, c.first_segment, c.segments) for c in plan_chunks(20, ntsc, LadderConfig(), 8, 4)]
    [(0.0, 4.004, 0, 1), (4.004, 12.012, 1, 2), (12.012, 20.0, 3, 2)]
    """
    if not renditions or chunk_seconds <= 0 or duration <= chunk_seconds:
        return []
    per_chunk = segments_per_chunk(chunk_seconds, config)
    first = min(per_chunk, segments_per_chunk(first_seconds, config)) if first_seconds > 0 else per_chunk
    grid = frame_grid(renditions)
    segment = Fraction(config.segment_seconds).limit_denominator(1000)
    end_us = int(round(duration * _US))
    starts: list[tuple[int, int]] = []  # (start in microseconds, first segment)
    number = 0
    while number * segment < Fraction(duration).limit_denominator(_US):
        start_us = math.floor(math.ceil(number * segment / grid) * grid * _US)
        if starts and end_us - start_us < grid * _US:
            break
        starts.append((start_us, number))
        number += first if number == 0 else per_chunk
    return [Chunk(k, start, starts[k + 1][0] if k + 1 < len(starts) else end_us, number,
                  (starts[k + 1][1] if k + 1 < len(starts) else number + per_chunk) - number)
            for k, (start, number) in enumerate(starts)]


def _seconds(us: int) -> str:
    """Microseconds as FFmpeg reads a time in seconds.

    >>> _seconds(8_008_000), _seconds(1)
    ('8.008000', '0.000001')
    """
    return f"{us // _US}.{us % _US:06d}"


def chunk_input_args(chunk: Chunk) -> list[str]:
    """Input options reading only the chunk's range: an accurate seek to its start (none for
    the first chunk, which reads from the start like one pass) and its duration.

    >>> chunk_input_args(Chunk(0, 0, 8_000_000, 0, 2)), chunk_input_args(Chunk(1, 8_000_000, 9_500_000, 2, 2))
    (['-t', '8.000000'], ['-ss', '8.000000', '-t', '1.500000'])
    """
    seek = ["-ss", _seconds(chunk.start_us)] if chunk.start_us else []
    return seek + ["-t", _seconds(chunk.end_us - chunk.start_us)]


def chunk_output_args(chunk: Chunk) -> list[str]:
    """HLS output options of one rung of a chunk: segments numbered from the chunk's first,
    and (after the first chunk) its timestamps moved to its place on the source's timeline,
    with each fragment's decode time kept as it is.

    >>> chunk_output_args(Chunk(0, 0, 8_000_000, 0, 2))
    ['-start_number', '0']
    >>> chunk_output_args(Chunk(1, 8_000_000, 16_000_000, 2, 2))
    ['-start_number', '2', '-output_ts_offset', '8.000000', '-hls_segment_options', 'movflags=+frag_discont']
    """
    args = ["-start_number", str(chunk.first_segment)]
    if chunk.start_us:
        args += ["-output_ts_offset", _seconds(chunk.start_us), "-hls_segment_options", "movflags=+frag_discont"]
    return args


def _boxes(data: bytes, start: int, end: int):
    """``(type, payload start, box end)`` of the ISO BMFF boxes in ``data[start:end]``."""
    offset = start
    while offset + 8 <= end:
        size = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8].decode("latin-1")
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[offset + 8:offset + 16], "big"), 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        yield kind, offset + header, offset + size
        offset += size


def _find_box(data: bytes, path: list[str]) -> tuple[int, int] | None:
    """The payload (start, end) of the box at ``path`` (``["moov", "trak", ...]``), the first of
    each type."""
    start, end = 0, len(data)
    for depth, name in enumerate(path):
        for kind, payload, box_end in _boxes(data, start, end):
            if kind == name:
                if depth == len(path) - 1:
                    return payload, box_end
                # stsd holds its entries after a version/flags word and an entry count
                start, end = (payload + 8 if name == "stsd" else payload), box_end
                break
        else:
            return None
    return None


def sample_description(init: bytes) -> str:
    """A digest of an fMP4 init segment's sample description (``stsd``: the codec, its size and
    its configuration, e.g. H.264's SPS and PPS): equal for two encodes a decoder can read with
    one init segment.

    >>> init = bytes.fromhex("00000018") + b"moov" + bytes.fromhex("00000010") + b"stsd" + b"avc1cfg!"
    >>> sample_description(init) == sample_description(init), len(sample_description(init))
    (True, 16)
    >>> sample_description(b"nothing")
    Traceback (most recent call last):
    ...
    ValueError: the init segment has no sample description
    """
    found = (_find_box(init, ["moov", "trak", "mdia", "minf", "stbl", "stsd"]) or _find_box(init, ["moov", "stsd"]))
    if found is None:
        raise ValueError("the init segment has no sample description")
    return hashlib.sha256(init[found[0]:found[1]]).hexdigest()[:16]


def decode_time(segment: bytes) -> int:
    """The decode time (``tfdt``, in the track's timescale) of an fMP4 segment's first fragment.

    >>> tfdt = bytes.fromhex("00000014") + b"tfdt" + bytes.fromhex("01000000") + (122880).to_bytes(8, "big")
    >>> traf = (8 + len(tfdt)).to_bytes(4, "big") + b"traf" + tfdt
    >>> decode_time((8 + len(traf)).to_bytes(4, "big") + b"moof" + traf)
    122880
    """
    found = _find_box(segment, ["moof", "traf", "tfdt"])
    if found is None:
        raise ValueError("the segment has no fragment decode time")
    start, end = found
    version = segment[start]
    return int.from_bytes(segment[start + 4:start + (12 if version == 1 else 8)], "big")


_SEGMENT_NUMBER = re.compile(r"(\d+)\.m4s$")


def segment_number(path: str) -> int:
    """The number in a segment's file name.

    >>> segment_number("abc-1/360p/seg_00012.m4s")
    12
    """
    found = _SEGMENT_NUMBER.search(path)
    if found is None:
        raise ValueError(f"{path!r} is not a numbered segment")
    return int(found.group(1))


@dataclass(frozen=True)
class ChunkRendition:
    """One rung's part of one chunk, as published.

    Attributes:
        name: The rung (``720p``).
        segments: ``(path inside the asset, duration in seconds, size in bytes)`` of each segment,
            in order.
        target_duration: The chunk playlist's ``EXT-X-TARGETDURATION``.
        sample_description: :func:`sample_description` of the chunk's init segment.
        init: The init segment's path inside the asset (chunk 0 only: it serves every chunk).
        init_size: Its size in bytes.
    """

    name: str
    segments: tuple[tuple[str, float, int], ...]
    target_duration: int
    sample_description: str
    init: str | None = None
    init_size: int = 0

    @classmethod
    def from_playlist(cls, name: str, playlist_text: str, folder: str, sizes: dict[str, int], description: str,
                      with_init: bool) -> "ChunkRendition":
        """A rung's part from the chunk's own media playlist and the sizes of its files, with
        every path placed in ``folder`` of the asset (``<attempt>/<rung>``).

        >>> text = '#EXTM3U\\n#EXT-X-TARGETDURATION:4\\n#EXT-X-MAP:URI="init.mp4"\\n#EXTINF:4.0,\\nseg_00002.m4s\\n'
        >>> part = ChunkRendition.from_playlist("360p", text, "r-1/360p", {"init.mp4": 9, "seg_00002.m4s": 90},
        ...                                     "d", with_init=False)
        >>> part.segments, part.init
        ((('r-1/360p/seg_00002.m4s', 4.0, 90),), None)
        """
        playlist = parse_media_playlist(playlist_text)
        init = playlist.init if with_init else None
        return cls(name, tuple((f"{folder}/{uri}", duration, sizes[uri]) for uri, duration in playlist.segments),
                   int(playlist.target_duration), description,
                   f"{folder}/{init}" if init else None, sizes[init] if init else 0)

    def objects(self) -> dict[str, int]:
        """Every file of the part, by path inside the asset, with its size."""
        files = {path: size for path, _, size in self.segments}
        if self.init:
            files[self.init] = self.init_size
        return files

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [list(s) for s in self.segments]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChunkRendition":
        return cls(**{**data, "segments": tuple(tuple(s) for s in data["segments"])})


@dataclass(frozen=True)
class ChunkOutput:
    """One encoded chunk, published into the folder of the run attempt that made it.

    Attributes:
        chunk: The range it covers.
        attempt: The run attempt (Prefect's run count) that encoded it.
        folder: That attempt's folder of the asset.
        renditions: Each rung's part.
        decoded_seconds: How much of its range the decode reached.
    """

    chunk: Chunk
    attempt: int
    folder: str
    renditions: tuple[ChunkRendition, ...]
    decoded_seconds: float = 0.0

    def objects(self) -> dict[str, int]:
        """Every object of the chunk, by path inside the asset, with its size."""
        files: dict[str, int] = {}
        for part in self.renditions:
            files.update(part.objects())
        return files

    def part(self, name: str) -> ChunkRendition:
        return next(p for p in self.renditions if p.name == name)

    def manifest_entry(self) -> dict[str, Any]:
        """The chunk as ``manifest.json`` records it (``chunks``).

        >>> out = ChunkOutput(Chunk(1, 8_000_000, 16_000_000, 2, 2), 1, "r-1", ())
        >>> out.manifest_entry()
        {'index': 1, 'start': 8.0, 'end': 16.0, 'first_segment': 2, 'attempt': 1, 'folder': 'r-1'}
        """
        return {**self.chunk.to_dict(), "attempt": self.attempt, "folder": self.folder}


def stitch_rendition(name: str, parts: list[ChunkRendition], playlist_path: str,
                     event_target: int | None = None) -> tuple[str, dict[str, Any]]:
    """One VOD media playlist over every chunk's part of a rung (in chunk order), and the
    rendition's measurements. With ``event_target`` (a progressive asset, docs/chunks.md), the
    playlist is the closed ``EVENT`` playlist its viewers have seen grow
    (:func:`pixelflow.core.hls.event_playlist`, that target duration at least).

    The playlist (at ``playlist_path`` inside the asset) names chunk 0's init segment and every
    segment by a URL relative to it (segments a retry reused stay in the folder of the attempt
    that made them), the way FFmpeg writes one pass's.

    Raises:
        ValueError: the parts cannot be one rendition: no init segment in the first part, a
            sample description other than the first part's (another encoder configuration),
            or segment numbers that are not continuous from 0.

    Returns:
        The playlist's text, and ``files`` (every path inside the asset, the playlist last),
        ``file_sizes`` (the playlist's is ``None``), ``segments``, ``duration``, ``size``,
        ``bandwidth`` and ``average_bandwidth``.

    >>> a = ChunkRendition("360p", (("r-1/360p/seg_00000.m4s", 4.0, 400), ("r-1/360p/seg_00001.m4s", 4.0, 500)), 4,
    ...                    "d", "r-1/360p/init.mp4", 9)
    >>> b = ChunkRendition("360p", (("r-2/360p/seg_00002.m4s", 1.5, 100),), 2, "d")
    >>> text, measured = stitch_rendition("360p", [a, b], "r-2/360p/index.m3u8")
    >>> print(text, end="")
    #EXTM3U
    #EXT-X-VERSION:7
    #EXT-X-TARGETDURATION:4
    #EXT-X-MEDIA-SEQUENCE:0
    #EXT-X-PLAYLIST-TYPE:VOD
    #EXT-X-INDEPENDENT-SEGMENTS
    #EXT-X-MAP:URI="../../r-1/360p/init.mp4"
    #EXTINF:4.000000,
    ../../r-1/360p/seg_00000.m4s
    #EXTINF:4.000000,
    ../../r-1/360p/seg_00001.m4s
    #EXTINF:1.500000,
    seg_00002.m4s
    #EXT-X-ENDLIST
    >>> measured["segments"], measured["duration"], measured["size"], measured["bandwidth"]
    (3, 9.5, 1009, 1000)
    >>> stitch_rendition("360p", [a, b, b], "r-2/360p/index.m3u8")
    Traceback (most recent call last):
    ...
    ValueError: 360p: chunk 2 starts at segment 2, not 3
    """
    if not parts or not parts[0].init:
        raise ValueError(f"{name}: the first chunk has no init segment")
    expected = 0
    for index, part in enumerate(parts):
        if part.sample_description != parts[0].sample_description:
            raise ValueError(f"{name}: chunk {index} was encoded with another configuration than chunk 0")
        numbers = [segment_number(path) for path, _, _ in part.segments]
        if not numbers:
            raise ValueError(f"{name}: chunk {index} has no segment")
        if numbers != list(range(expected, expected + len(numbers))):
            raise ValueError(f"{name}: chunk {index} starts at segment {numbers[0]}, not {expected}")
        expected += len(numbers)
    here = posixpath.dirname(playlist_path)
    segments = [s for part in parts for s in part.segments]
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(p.target_duration for p in parts)}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-MAP:URI="{posixpath.relpath(parts[0].init, here)}"']
    for path, duration, _ in segments:
        lines += [f"#EXTINF:{duration:.6f},", posixpath.relpath(path, here)]
    lines.append("#EXT-X-ENDLIST")
    text = "\n".join(lines) + "\n"
    if event_target is not None:
        text = event_playlist(text, target=event_target)
    sizes = [size for _, _, size in segments]
    durations = [duration for _, duration, _ in segments]
    peak, average = bandwidths(sizes, durations, parts[0].init_size)
    return text, {"files": [parts[0].init] + [path for path, _, _ in segments] + [playlist_path],
                  "file_sizes": [parts[0].init_size] + sizes + [len(text.encode())], "segments": len(segments),
                  "duration": round(sum(durations), 3), "size": sum(sizes) + parts[0].init_size,
                  "bandwidth": peak, "average_bandwidth": average}
