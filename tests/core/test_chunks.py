"""Chunk planning, a chunk's FFmpeg arguments and the stitched playlist (pixelflow/core/chunks.py)."""

from fractions import Fraction

import pytest

from pixelflow.core.chunks import (Chunk, ChunkOutput, ChunkRendition, frame_grid, plan_chunks, stitch_rendition)
from pixelflow.core.ffmpeg_args import chunk_encode_args, ladder_encode_args
from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.probe import interpret_probe

CFG = LadderConfig(heights=(360, 720))


def info(rate: str = "30/1", duration: float = 400.0):
    return interpret_probe({"format": {"format_name": "mov", "duration": str(duration)}, "streams": [
        {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080, "r_frame_rate": rate,
         "pix_fmt": "yuv420p"},
        {"index": 1, "codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"}]})


def plan(rate: Fraction):
    return plan_ladder(1920, 1080, rate, CFG)


def test_chunks_are_whole_segments_that_cover_the_source_exactly():
    chunks = plan_chunks(361.5, plan(Fraction(30)), CFG, chunk_seconds=60)
    assert [(c.start, c.end) for c in chunks] == [(60.0 * k, min(60.0 * (k + 1), 361.5)) for k in range(7)]
    assert [c.first_segment for c in chunks] == [15 * k for k in range(7)]
    assert all(c.segments == 15 for c in chunks)
    # a chunk length that is not whole segments is rounded down to whole segments
    assert [c.end for c in plan_chunks(20, plan(Fraction(30)), CFG, chunk_seconds=7)][:2] == [4.0, 8.0]
    # one pass: no video, off, or a source no longer than a chunk
    assert plan_chunks(400, [], CFG, 60) == [] and plan_chunks(400, plan(Fraction(30)), CFG, 0) == []
    assert plan_chunks(60, plan(Fraction(30)), CFG, 60) == []


def test_cuts_fall_on_every_rungs_frame_grid():
    # 59.94 fps: the 720p rung keeps it, 360p halves it; cuts on 29.97's grid (1001/30000 s)
    ntsc = plan(Fraction(60000, 1001))
    assert frame_grid(ntsc) == Fraction(1001, 30000)
    for chunk in plan_chunks(200, ntsc, CFG, 60)[1:]:
        start = Fraction(chunk.start_us, 1_000_000)
        frame = round(start / Fraction(1001, 30000)) * Fraction(1001, 30000)
        assert 0 <= frame - start < Fraction(1, 1_000_000)  # a frame time, rounded down to the microsecond
        assert chunk.start >= 60 * chunk.index  # never before its nominal start
    # a last range too short for one frame is left to the chunk before it
    chunks = plan_chunks(120.01, plan(Fraction(30)), CFG, 60)
    assert [c.end for c in chunks] == [60.0, 120.01]


def test_a_chunk_reads_its_range_and_writes_its_numbered_segments_with_one_pass_encoder_settings():
    source = info()
    rungs = plan(Fraction(30))
    dirs = [f"/o/{r.name}" for r in rungs]
    whole = ladder_encode_args("/s/source", source, rungs, CFG, dirs)
    first, later = plan_chunks(400, rungs, CFG, 60)[:2]
    # the first chunk is one pass's command with a duration, and segment numbers from 0
    args = chunk_encode_args("/s/source", source, rungs, CFG, dirs, first)
    assert "-ss" not in args and args[args.index("-t") + 1] == "60.000000"
    assert _without(args, "-t", "-start_number") == whole
    # a later chunk: seeks, shifts its timestamps to its place, keeps each fragment's decode time
    args = chunk_encode_args("/s/source", source, rungs, CFG, dirs, later)
    assert args[args.index("-ss") + 1] == "60.000000" and args.index("-ss") < args.index("-i")
    assert [args[i + 1] for i, a in enumerate(args) if a == "-output_ts_offset"] == ["60.000000"] * 2
    assert [args[i + 1] for i, a in enumerate(args) if a == "-start_number"] == ["15"] * 2
    assert args.count("movflags=+frag_discont") == 2
    # the encoder settings are one pass's: one init segment serves every chunk
    x264 = lambda a: a[a.index("-c:v"):a.index("-colorspace") + 2]  # noqa: E731
    assert x264(args) == x264(whole)
    assert _without(args, "-ss", "-t", "-start_number", "-output_ts_offset", "-hls_segment_options",
                    "-filter_complex") == _without(whole, "-filter_complex")
    assert "-c:a" not in args and "0:1" not in args  # the audio is encoded once, not per chunk


def _without(args, *options):
    """``args`` without each of ``options`` and its value."""
    dropped = {i + n for i, a in enumerate(args) if a in options for n in (0, 1)}
    return [a for i, a in enumerate(args) if i not in dropped]


def _part(name, numbers, init=None, description="d", duration=4.0, target=4):
    return ChunkRendition(name, tuple((f"r-1/{name}/seg_{n:05d}.m4s", duration, 100) for n in numbers), target,
                          description, init, 10 if init else 0)


def test_the_stitched_playlist_is_one_vod_playlist_over_every_chunk():
    parts = [_part("360p", [0, 1], init="r-1/360p/init.mp4"), _part("360p", [2, 3]), _part("360p", [4], duration=1.5)]
    text, measured = stitch_rendition("360p", parts, "r-1/360p/index.m3u8")
    parsed = parse_media_playlist(text)
    assert parsed.init == "init.mp4" and [uri for uri, _ in parsed.segments] == [
        f"seg_{n:05d}.m4s" for n in range(5)]
    assert parsed.duration == measured["duration"] == 17.5
    assert "#EXT-X-DISCONTINUITY" not in text and text.endswith("#EXT-X-ENDLIST\n")
    assert measured["files"][0] == "r-1/360p/init.mp4" and measured["files"][-1] == "r-1/360p/index.m3u8"
    assert measured["file_sizes"][-1] == len(text.encode())


@pytest.mark.parametrize("parts,message", [
    ([_part("360p", [0])], "no init segment"),
    ([_part("360p", [0], init="i"), _part("360p", [1], description="other")], "another configuration"),
    ([_part("360p", [0], init="i"), _part("360p", [2])], "starts at segment 2"),
    ([_part("360p", [0], init="i"), _part("360p", [])], "no segment"),
])
def test_parts_that_cannot_be_one_rendition_are_refused(parts, message):
    with pytest.raises(ValueError, match=message):
        stitch_rendition("360p", parts, "r-1/360p/index.m3u8")


def test_a_chunk_output_survives_its_persisted_form_and_names_its_objects():
    part = _part("360p", [2, 3])
    output = ChunkOutput(Chunk(1, 8_000_000, 16_000_000, 2, 2), 2, "r-2", (part,))
    assert ChunkRendition.from_dict(part.to_dict()) == part
    assert output.objects() == {"r-1/360p/seg_00002.m4s": 100, "r-1/360p/seg_00003.m4s": 100}
    assert output.manifest_entry()["attempt"] == 2
