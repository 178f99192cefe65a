"""Chunk commands on real FFmpeg, without Prefect: a 59.94 fps source (cuts on the 29.97 grid,
rungs at 29.97 and 59.94 fps) encoded in chunks stitches into renditions that decode without an
error, keep every picture and the duration of one pass, whose timestamps run on without a gap
or an overlap through every cut, and whose segments keep their length; the 29.97 rung is one
pass's packet for packet."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from pixelflow.core.chunks import ChunkRendition, plan_chunks, sample_description, stitch_rendition
from pixelflow.core.ffmpeg_args import chunk_encode_args, ladder_encode_args
from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.probe import interpret_probe
from pixelflow.pipeline.ffmpeg import probe, run_ffmpeg

CONFIG = LadderConfig(heights=(90, 180), preset="ultrafast")
RUNGS = [Rendition("90p", 90, 160, 90, Fraction(30000, 1001), 250, 500, 60),
         Rendition("180p", 180, 320, 180, Fraction(60000, 1001), 450, 900, 120)]


def _encode(args: list[str]) -> None:
    run_ffmpeg(["nice", "-n", "10", *args], timeout=300, sandbox="off")


def _packets(path: Path) -> list[tuple[int, int, bool]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,dts,flags",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [(int(pts), int(dts), "K" in flags) for pts, dts, flags in (line.split(",") for line in out.split())]


def _time_base(path: Path) -> Fraction:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=time_base",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return Fraction(out.strip())


def _join(files: list[Path], dest: Path) -> Path:
    with open(dest, "wb") as out:
        for part in files:
            out.write(part.read_bytes())
    return dest


@pytest.fixture(scope="module")
def ntsc_source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ntsc") / "source.mp4"
    subprocess.run(["nice", "-n", "10", "ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=60000/1001:duration=21", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", "90", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_ntsc_chunks_stitch_into_renditions_with_one_passs_pictures_and_timeline(ntsc_source, tmp_path):
    info = interpret_probe(probe(str(ntsc_source), "mov"))
    one = {r.name: tmp_path / "one" / r.name for r in RUNGS}
    for folder in one.values():
        folder.mkdir(parents=True)
    _encode(ladder_encode_args(str(ntsc_source), info, RUNGS, CONFIG, [str(d) for d in one.values()]))
    chunks = plan_chunks(info.duration, RUNGS, CONFIG, chunk_seconds=8)
    assert [c.start_us for c in chunks] == [0, 8_008_000, 16_016_000]  # on the 29.97 grid
    parts: dict[str, list[ChunkRendition]] = {r.name: [] for r in RUNGS}
    for chunk in chunks:
        dirs = [tmp_path / f"chunk{chunk.index}" / r.name for r in RUNGS]
        for folder in dirs:
            folder.mkdir(parents=True)
        _encode(chunk_encode_args(str(ntsc_source), info, RUNGS, CONFIG, [str(d) for d in dirs], chunk))
        for rung, folder in zip(RUNGS, dirs):
            sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
            parts[rung.name].append(ChunkRendition.from_playlist(
                rung.name, (folder / "index.m3u8").read_text(), f"chunk{chunk.index}/{rung.name}", sizes,
                sample_description((folder / "init.mp4").read_bytes()), with_init=chunk.index == 0))
    starts = {}
    for rung in RUNGS:
        text, measured = stitch_rendition(rung.name, parts[rung.name], f"stitched/{rung.name}/index.m3u8")
        playlist = parse_media_playlist(text)
        reference = parse_media_playlist((one[rung.name] / "index.m3u8").read_text())
        assert playlist.duration == pytest.approx(reference.duration, abs=1e-6)
        assert max(d for _, d in playlist.segments) <= CONFIG.segment_seconds + 0.01  # no segment runs long
        joined = _join([tmp_path / f for f in measured["files"][:-1]], tmp_path / f"{rung.name}.mp4")
        whole = _join([one[rung.name] / "init.mp4", *sorted(one[rung.name].glob("seg_*.m4s"))],
                      tmp_path / f"{rung.name}-one.mp4")
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-f", "null", "-"], capture_output=True,
                                 text=True)
        assert decoded.returncode == 0 and decoded.stderr.strip() == ""
        packets, expected = _packets(joined), _packets(whole)
        assert len(packets) == len(expected)
        pts = sorted(p[0] for p in packets)
        assert len({b - a for a, b in zip(pts, pts[1:])}) == 1  # one frame apart all through
        assert pts[0] == min(p[0] for p in expected)
        if rung.name == "90p":  # the rung on the cuts' grid: one pass's packets exactly
            assert packets == expected
        # where each chunk starts, in seconds: a keyframe of this rung
        by_time = {p[0]: p for p in packets}
        tick = _time_base(joined)
        starts[rung.name] = []
        for chunk in chunks:
            first = min(t for t in by_time if (t - pts[0]) * tick >= Fraction(chunk.start_us, 1_000_000) - Fraction(1, 1000))
            assert by_time[first][2], (rung.name, chunk.index)
            starts[rung.name].append((first - pts[0]) * tick)
    assert starts["90p"] == starts["180p"]  # the cuts' keyframes aligned across the rungs
