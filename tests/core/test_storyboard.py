"""The storyboard's layout and WebVTT file (pure; the published sheet is checked end to end in
tests/test_flow_e2e.py)."""

from __future__ import annotations

import re

import pytest

from pixelflow.core.storyboard import MAX_COLUMNS, Storyboard

_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\nstoryboard\.jpg#xywh=(\d+),(\d+),(\d+),(\d+)$")


def _cues(vtt: str) -> list[tuple[float, float, tuple[int, ...]]]:
    blocks = vtt.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        m = _CUE.match(block)
        assert m, block
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append((start, end, tuple(g[8:])))
    return cues


@pytest.mark.parametrize("duration", [0.5, 5.0, 6.0, 23.4, 600.0, 3 * 3600 + 7.25])
def test_cues_cover_the_duration_without_gaps_and_point_inside_the_sheet(duration):
    board = Storyboard.plan(duration, 640, 360, interval=5, max_tiles=200)
    cues = _cues(board.vtt(duration))
    assert len(cues) == board.count <= 200
    assert cues[0][0] == 0 and cues[-1][1] == pytest.approx(duration, abs=0.001)
    assert all(a[1] == b[0] for a, b in zip(cues, cues[1:]))  # contiguous
    sheet_w, sheet_h = board.columns * board.tile_width, board.rows * board.tile_height
    tiles = [cue[2] for cue in cues]
    assert len(set(tiles)) == len(tiles)
    assert all(x + w <= sheet_w and y + h <= sheet_h and (w, h) == (160, 90) for x, y, w, h in tiles)
    assert board.columns <= MAX_COLUMNS and board.rows == -(-board.count // board.columns)


def test_long_sources_get_a_longer_interval_not_more_tiles():
    board = Storyboard.plan(6 * 3600, 640, 360, interval=5, max_tiles=200)
    assert board.count <= 200 and board.interval == 108
    assert "select='gte(t,selected_n*108)'" in board.filter()


def test_tiles_keep_the_rungs_aspect_and_never_grow_past_it():
    assert (Storyboard.plan(10, 360, 640).tile_width, Storyboard.plan(10, 360, 640).tile_height) == (160, 284)
    small = Storyboard.plan(10, 96, 54, tile_width=160)
    assert (small.tile_width, small.tile_height) == (96, 54)


@pytest.mark.parametrize("args", [(0, 640, 360), (10, 0, 360), (-1, 640, 360)])
def test_nonsense_is_refused(args):
    with pytest.raises(ValueError):
        Storyboard.plan(*args)
