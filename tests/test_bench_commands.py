"""The benchmark's own engine variants (bench/commands.py): the ``fanout`` idea, measured there
only, still builds the commands it measures."""

from fractions import Fraction
from pathlib import Path

from bench.commands import ENGINE_VARIANTS, engine_commands, fanout_decoder_args, pipe_encoder_args
from pixelflow.core.ladder import LadderConfig, plan_ladder
from tests.core.test_ffmpeg_args import INFO, PLAN, value_after

CFG = LadderConfig()


def test_the_fanout_decoder_writes_one_pipe_per_rung():
    from dataclasses import replace
    plan = [replace(PLAN[0], fps=Fraction(60)), *PLAN[1:]]
    args = fanout_decoder_args(Path("/s/source"), INFO, plan, [5, 6, 7, 8], ENGINE_VARIANTS["fanout"])
    chains = value_after(args, "-filter_complex").split(";")
    assert chains[0] == "[0:0]split=4[s0][s1][s2][s3]"
    assert [a for a in args if a.startswith("pipe:") and a != "pipe:1"] == ["pipe:5", "pipe:6", "pipe:7", "pipe:8"]


def test_a_fanout_encoder_reads_its_pipe_only():
    args = pipe_encoder_args(PLAN[2], CFG, "/s/out/720p")
    assert value_after(args, "-protocol_whitelist") == "pipe"
    assert value_after(args, "-c:v") == "libx264" and args[-1] == "/s/out/720p/index.m3u8"


def test_engine_variants_build_one_decoder_and_one_encoder_per_rung(tmp_path):
    plan = plan_ladder(1280, 720, Fraction(30), CFG)
    run = engine_commands(ENGINE_VARIANTS["fanout"], Path("/s/source"), INFO, plan, CFG, tmp_path)
    try:
        assert len(run.commands) == 1 + len(plan)
        assert run.stdin[0] is None and all(fd is not None for fd in run.stdin[1:])
    finally:
        run.close_parent_fds()
    per_rung = engine_commands(ENGINE_VARIANTS["per-rung-decode"], Path("/s/source"), INFO, plan, CFG, tmp_path)
    assert [value_after(c, "-i") for c in per_rung.commands] == ["file:/s/source"] * len(plan)
