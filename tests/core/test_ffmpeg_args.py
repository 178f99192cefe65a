"""FFmpeg commands: argument lists, local files only, aligned keyframes, capped bitrates."""

from fractions import Fraction

import pytest

from pixelflow.core.ffmpeg_args import (audio_args, encode_args, file_url, ladder_encode_args, measure_duration_args,
                                        poster_args, probe_args)
from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.probe import interpret_probe

PROBE = {
    "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "10.0", "size": "1000"},
    "streams": [
        {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 3840, "height": 2160,
         "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "pix_fmt": "yuv420p"},
        {"index": 1, "codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"},
    ],
}
INFO = interpret_probe(PROBE)
CFG = LadderConfig()
PLAN = plan_ladder(3840, 2160, Fraction(30), CFG)
DIRS = [f"/s/out/{r.name}" for r in PLAN]


def value_after(args, flag):
    return args[args.index(flag) + 1]


def test_inputs_are_local_files_with_forced_demuxer_and_file_protocol_only():
    for args in (ladder_encode_args("/scratch/a/source", INFO, PLAN, CFG, DIRS),
                 encode_args("/scratch/a/source", INFO, PLAN[0], CFG, "/s/out/360p")):
        assert value_after(args, "-protocol_whitelist") == "file"
        assert value_after(args, "-f") == "mov"
        assert value_after(args, "-i") == "file:/scratch/a/source"
    for args in (probe_args("/scratch/a/source", "mov"), measure_duration_args("/scratch/a/source", "mov")):
        assert value_after(args, "-protocol_whitelist") == "file"
        assert value_after(args, "-f") == "mov"
        assert args[args.index("-f") + 1:].count("file:/scratch/a/source") == 1
    with pytest.raises(ValueError):
        file_url("-i_am_an_option.mp4")
    with pytest.raises(ValueError):
        file_url("http://example.com/x.mp4")


def test_one_decode_feeds_every_rung():
    args = ladder_encode_args("/s/source", INFO, PLAN, CFG, DIRS)
    assert args.count("-i") == 1
    graph = value_after(args, "-filter_complex")
    assert "split=4" in graph
    for r in PLAN:
        assert f"scale={r.width}:{r.height}" in graph
    # only the largest rung is scaled from the 4K picture; the others from the 1080p one
    chains = graph.split(";")
    assert chains[0].startswith("[0:0]fps=30/1,scale=1920:1080") and "split=4" in chains[0]
    assert all("scale" not in c or c.startswith("[s") for c in chains[1:])


def test_rungs_with_a_higher_rate_than_the_largest_are_scaled_from_the_source():
    from dataclasses import replace
    plan = [replace(PLAN[0], fps=Fraction(60)), *PLAN[1:]]
    args = ladder_encode_args("/s/source", INFO, plan, CFG, DIRS)
    chains = value_after(args, "-filter_complex").split(";")
    assert chains[0] == "[0:0]split=4[s0][s1][s2][s3]"
    assert len(chains) == 5


def test_encoder_settings_align_keyframes_and_cap_bitrate():
    r720 = PLAN[2]
    args = encode_args("/s/source", INFO, r720, CFG, "/s/out/720p")
    assert value_after(args, "-c:v") == "libx264"
    assert value_after(args, "-g") == value_after(args, "-keyint_min") == "60"
    assert value_after(args, "-sc_threshold") == "0"
    assert value_after(args, "-force_key_frames") == "expr:gte(t,n_forced*2)"
    assert value_after(args, "-maxrate") == f"{r720.maxrate_kbps}k"
    assert value_after(args, "-bufsize") == f"{2 * r720.maxrate_kbps}k"
    assert value_after(args, "-crf") == "23"
    assert value_after(args, "-hls_segment_type") == "fmp4"
    assert value_after(args, "-hls_time") == "4"
    assert value_after(args, "-hls_playlist_type") == "vod"
    assert args[-1] == "/s/out/720p/index.m3u8"
    assert "-an" in args


def test_a_single_rung_can_be_encoded_straight_from_the_source():
    args = encode_args("/s/source", INFO, PLAN[0], CFG, "/s/out/360p")
    assert value_after(args, "-i") == "file:/s/source"
    assert "scale=640:360" in value_after(args, "-filter:v")


def test_audio_uses_the_chosen_stream_and_poster_is_one_frame():
    args = audio_args("/s/source", INFO, CFG, "/s/out/audio")
    assert value_after(args, "-map") == "0:1"
    assert value_after(args, "-c:a") == "aac" and value_after(args, "-b:a") == "128k"
    poster = poster_args("/s/source", INFO, PLAN[2], "/s/poster.jpg")
    assert value_after(poster, "-frames:v") == "1" and poster[-1] == "file:/s/poster.jpg"


def test_the_ladder_process_reads_the_source_once_for_every_rung_and_the_audio():
    dirs = DIRS
    args = ladder_encode_args("/s/source", INFO, PLAN, CFG, dirs, "/s/out/audio")
    assert args.count("-i") == 1 and value_after(args, "-i") == "file:/s/source"
    maps = [args[i + 1] for i, a in enumerate(args) if a == "-map"]
    assert maps == ["[v0]", "[v1]", "[v2]", "[v3]", "0:1"]
    # the audio output is the one a separate audio process writes
    alone = audio_args("/s/source", INFO, CFG, "/s/out/audio")
    assert args[args.index("0:1") + 1:] == alone[alone.index("0:1") + 1:]
    assert [a for a in args if a.endswith("index.m3u8")] == [f"{d}/index.m3u8" for d in dirs + ["/s/out/audio"]]
    assert "0:1" not in ladder_encode_args("/s/source", INFO, PLAN, CFG, dirs)


def test_the_ladder_process_takes_the_poster_from_its_rung_as_a_lone_process_would():
    dirs = DIRS
    args = ladder_encode_args("/s/source", INFO, PLAN, CFG, dirs, "/s/out/audio", poster=(PLAN[2], "/s/poster.jpg"))
    assert args.count("-i") == 1
    maps = [args[i + 1] for i, a in enumerate(args) if a == "-map"]
    assert maps == ["[v0]", "[v1]", "[v2e]", "[v3]", "0:1", "[jpeg]"]
    # the same frame, at the same time, as the poster process seeking to it would take
    alone = poster_args("/s/source", INFO, PLAN[2], "/s/poster.jpg")
    frame = int(float(value_after(alone, "-ss")) * float(PLAN[2].fps))
    assert f"select='eq(n,{frame})'" in value_after(args, "-filter_complex")
    assert args[args.index("[jpeg]") + 1:] == alone[alone.index("-frames:v"):]
    with pytest.raises(ValueError):
        ladder_encode_args("/s/source", INFO, PLAN[:2], CFG, dirs[:2], poster=(PLAN[2], "/s/poster.jpg"))


def test_no_argument_is_ever_a_shell_string():
    for args in (ladder_encode_args("/s/source", INFO, PLAN, CFG, DIRS), encode_args("/s/source", INFO, PLAN[0], CFG, "/s/o"),
                 audio_args("/s/source", INFO, CFG, "/s/a"), poster_args("/s/source", INFO, PLAN[2], "/s/p.jpg"),
                 measure_duration_args("/s/source", "webm")):
        assert all(isinstance(a, str) for a in args)
        assert args[0] == "ffmpeg"
    args = probe_args("/s/source", formats=["mov", "webm"])
    assert all(isinstance(a, str) for a in args) and args[0] == "ffprobe"
