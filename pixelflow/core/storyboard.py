"""The storyboard (trickplay): one sprite sheet of thumbnails and the WebVTT file a player reads
to show a preview over its seek bar.

One tile is taken every :attr:`Storyboard.interval` seconds, from the pictures of the ladder's
lowest rung inside the ladder process (no decode of its own). Tiles fill the sheet row by row,
``columns`` to a row; the WebVTT file maps each time range to its tile with a media fragment
(``storyboard.jpg#xywh=x,y,w,h``), the format JW Player, Video.js and Mux use. Long sources get a
longer interval, so the sheet never holds more than ``max_tiles`` tiles.

Example:
    >>> board = Storyboard.plan(23.0, 640, 360, interval=5, tile_width=160)
    >>> board.count, board.columns, board.rows, (board.tile_width, board.tile_height)
    (5, 5, 1, (160, 90))
    >>> board.filter()
    "setpts=PTS-STARTPTS,select='gte(t,selected_n*5)',scale=160:90:flags=bicubic,setsar=1,tile=5x1,setpts=0"
    >>> print(board.vtt(23.0).splitlines()[2:4])
    ['00:00:00.000 --> 00:00:05.000', 'storyboard.jpg#xywh=0,0,160,90']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: File names of the storyboard inside an asset.
STORYBOARD_IMAGE = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"

#: Widest sheet, in tiles.
MAX_COLUMNS = 10


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _timestamp(seconds: float) -> str:
    """A WebVTT timestamp.

    >>> _timestamp(3725.5)
    '01:02:05.500'
    """
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


@dataclass(frozen=True)
class Storyboard:
    """How one asset's storyboard is laid out.

    Attributes:
        interval: Seconds between tiles (a whole number).
        count: Number of tiles.
        columns: Tiles per row of the sheet.
        rows: Rows of the sheet.
        tile_width: Width of a tile, in pixels.
        tile_height: Height of a tile, in pixels (the rung's display aspect kept).
    """

    interval: int
    count: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @classmethod
    def plan(cls, duration: float, width: int, height: int, *, interval: int = 5, tile_width: int = 160,
             max_tiles: int = 200) -> "Storyboard":
        """The storyboard of a ``duration``-second source whose lowest rung is ``width`` x ``height``.

        Args:
            duration: The source's duration, in seconds.
            width: Width of the pictures the tiles are made from.
            height: Height of those pictures.
            interval: Seconds between tiles, at least; raised for long sources so that
                ``max_tiles`` tiles cover the duration.
            tile_width: Width of a tile (never wider than the pictures).
            max_tiles: Most tiles on the sheet.

        >>> Storyboard.plan(7200, 640, 360, interval=5, max_tiles=200).interval
        36
        >>> Storyboard.plan(2, 360, 640, tile_width=160).tile_height
        284
        """
        if duration <= 0 or width <= 0 or height <= 0 or interval < 1 or max_tiles < 1:
            raise ValueError("a storyboard needs a positive duration, size, interval and tile count")
        interval = max(int(interval), math.ceil(duration / max_tiles))
        count = max(1, math.ceil(duration / interval - 1e-9))
        tile_w = _even(min(tile_width, width))
        tile_h = _even(tile_w * height / width)
        columns = min(count, MAX_COLUMNS)
        return cls(interval, count, columns, math.ceil(count / columns), tile_w, tile_h)

    def filter(self) -> str:
        """The filter chain making the sheet from a rung's pictures: one picture per interval, the
        first at or after its start (times count from the first picture, so a stream starting
        late or without its first frame still has a first tile), scaled to a tile and laid out by
        ``tile`` (a partly filled last row stays black). The pictures keep their rate and the
        sheet is stamped at time 0, so FFmpeg's reported progress (the end of the latest frame of
        any output, which the decode's truncation check reads) never runs past the source."""
        return (f"setpts=PTS-STARTPTS,select='gte(t,selected_n*{self.interval})',"
                f"scale={self.tile_width}:{self.tile_height}:flags=bicubic,setsar=1,"
                f"tile={self.columns}x{self.rows},setpts=0")

    def tile(self, index: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of tile ``index`` on the sheet."""
        row, column = divmod(index, self.columns)
        return column * self.tile_width, row * self.tile_height, self.tile_width, self.tile_height

    def vtt(self, duration: float, image: str = STORYBOARD_IMAGE) -> str:
        """The WebVTT file: one cue per tile, its time range pointing at the tile on ``image``;
        the last cue ends at ``duration``."""
        lines = ["WEBVTT", ""]
        for i in range(self.count):
            start, end = i * self.interval, min((i + 1) * self.interval, duration)
            if end <= start:
                break
            x, y, w, h = self.tile(i)
            lines += [f"{_timestamp(start)} --> {_timestamp(end)}", f"{image}#xywh={x},{y},{w},{h}", ""]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``storyboard`` entry (the files' names added)."""
        return {"image": STORYBOARD_IMAGE, "vtt": STORYBOARD_VTT, **asdict(self)}
