"""Loudness normalisation: the loudnorm measurement read from FFmpeg's log, the two passes' filters
and arguments, and what the manifest records."""

import json
from fractions import Fraction

import pytest

from pixelflow.core.ffmpeg_args import audio_args, ladder_encode_args, loudness_measure_args
from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.loudness import (EXAMPLE_LOG, LoudnessTarget, Loudnorm, loudness_entry, measure_filter,
                                     normalise_filter, parse_loudnorm)
from pixelflow.core.probe import interpret_probe

INFO = interpret_probe({
    "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "10.0", "size": "1000"},
    "streams": [
        {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1280, "height": 720,
         "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "pix_fmt": "yuv420p"},
        {"index": 1, "codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"},
    ],
})
OFF = LadderConfig()
ON = LadderConfig(loudness=LoudnessTarget(-16))
PLAN = plan_ladder(1280, 720, Fraction(30), OFF)
DIRS = [f"/o/{r.name}" for r in PLAN]
SILENCE_LOG = """[Parsed_loudnorm_0 @ 0x55597e8f7d40] [info] 
{
\t"input_i" : "-inf",
\t"input_tp" : "-inf",
\t"input_lra" : "0.00",
\t"input_thresh" : "-70.00",
\t"output_i" : "-inf",
\t"output_tp" : "-inf",
\t"output_lra" : "0.00",
\t"output_thresh" : "-70.00",
\t"normalization_type" : "dynamic",
\t"target_offset" : "inf"
}"""


def value_after(args, flag):
    return args[args.index(flag) + 1]


def test_the_measurement_is_read_among_any_other_log_lines():
    noise = ["[info] Input #0, mov,mp4 from 'file:<file>':", '[info]     title           : { "input_i" : "-1" }',
             "[h264 @ 0x1] [error] something", "{ not json", "}"]
    measured = parse_loudnorm(noise + EXAMPLE_LOG.splitlines() + ["[aac @ 0x2] [info] Qavg: 1.0", "}"])
    assert (measured.input_i, measured.input_tp, measured.input_lra, measured.input_thresh) == (-51.76, -47.18, 0.1, -61.76)
    assert (measured.output_i, measured.target_offset, measured.normalization_type) == (-16.04, 0.04, "dynamic")
    # without level prefixes too (a plain -loglevel info)
    plain = [line.split("] ")[-1] if "loudnorm" in line else line for line in EXAMPLE_LOG.splitlines()]
    assert parse_loudnorm(plain) == measured


@pytest.mark.parametrize("lines", [[], ["[info] frame=1"], ["{", '\t"input_i" : "-20.0"', "}"],
                                   ["{", '\t"input_i" : "loud",', '\t"input_tp" : "-1"', "}"],
                                   EXAMPLE_LOG.splitlines()[:-3]])
def test_a_missing_or_broken_measurement_is_a_value_error(lines):
    with pytest.raises(ValueError):
        parse_loudnorm(lines)


def test_silence_is_measured_without_nan_and_left_alone():
    silence = parse_loudnorm(SILENCE_LOG.splitlines())
    assert silence.silent and silence.input_i is None and silence.target_offset is None
    entry = loudness_entry(LoudnessTarget(-16), silence, None)
    assert entry["normalization"] == "none" and entry["output_i"] is None
    json.dumps(entry, allow_nan=False)  # no NaN nor Infinity in the manifest
    # the audio is encoded as it is: no loudnorm, the very arguments of loudness off
    assert audio_args("/s/source", INFO, ON, "/o/audio", silence) == audio_args("/s/source", INFO, OFF, "/o/audio")
    with pytest.raises(ValueError):
        normalise_filter(LoudnessTarget(-16), silence)
    quiet = Loudnorm(-75.0, -70.0, 0.0, -85.0, -16.0, -10.0, 0.0, -26.0, "dynamic", 59.0)
    assert quiet.silent  # below the absolute gate: nothing to normalise either


def test_targets_outside_loudnorms_ranges_are_refused():
    for bad in ({"integrated": -71}, {"integrated": -4}, {"integrated": -16, "true_peak": 0.5},
                {"integrated": -16, "true_peak": -10}, {"integrated": -16, "lra": 0.5},
                {"integrated": -16, "lra": 51}, {"integrated": float("nan")}):
        with pytest.raises(ValueError):
            LoudnessTarget(**bad)
    assert LoudnessTarget(-70, -9, 1).options() == "I=-70:TP=-9:LRA=1"


def test_with_loudness_off_the_audio_arguments_are_unchanged():
    """Byte for byte what PixelFlow ran before loudness normalisation existed."""
    expected_audio = ["-map", "0:1", "-vn", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1", "-c:a", "aac",
                      "-b:a", "128k", "-ac", "2", "-ar", "48000", "-f", "hls", "-hls_time", "4",
                      "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
                      "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", "/o/audio/seg_%05d.m4s",
                      "/o/audio/index.m3u8"]
    head = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "level+error", "-progress", "pipe:1", "-nostats",
            "-protocol_whitelist", "file", "-format_whitelist", "mov", "-max_pixels", "33177600", "-f", "mov", "-i",
            "file:/s/source"]
    assert audio_args("/s/source", INFO, OFF, "/o/audio") == head + expected_audio
    assert audio_args("/s/source", INFO, OFF, "/o/audio", parse_loudnorm(EXAMPLE_LOG.splitlines())) == head + expected_audio
    ladder = ladder_encode_args("/s/source", INFO, PLAN, OFF, DIRS, "/o/audio")
    assert ladder[:6] == head[:6] and ladder[-len(expected_audio):] == expected_audio
    assert "loudnorm" not in " ".join(ladder) and OFF.fingerprint() == LadderConfig(loudness=None).fingerprint()


def test_with_loudness_on_the_ladder_process_measures_the_audio_instead_of_encoding_it():
    args = ladder_encode_args("/s/source", INFO, PLAN, ON, DIRS, "/o/audio")
    assert value_after(args, "-loglevel") == "level+info" and args.count("-i") == 1
    tail = args[args.index("0:1") - 1:]
    assert tail == ["-map", "0:1", "-vn", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
                    "-filter:a", "loudnorm=I=-16:TP=-1.5:LRA=11:print_format=json", "-f", "null", "-"]
    assert "/o/audio/index.m3u8" not in args
    # the rungs are encoded exactly as without loudness
    assert args[args.index("-i"):args.index("0:1") - 1] == ladder_encode_args(
        "/s/source", INFO, PLAN, OFF, DIRS, "/o/audio")[args.index("-i"):args.index("0:1") - 1]
    # no audio in the ladder, nothing to measure: the same command as with loudness off
    assert ladder_encode_args("/s/source", INFO, PLAN, ON, DIRS) == ladder_encode_args("/s/source", INFO, PLAN, OFF, DIRS)
    # the target identifies the published renditions
    assert ON.fingerprint() != OFF.fingerprint() != LadderConfig(loudness=LoudnessTarget(-23)).fingerprint()


def test_the_audio_only_passes_map_the_audio_alone_and_normalise_linearly_to_48khz():
    measure = loudness_measure_args("/s/source", INFO, ON)
    assert measure.count("-map") == 1 and value_after(measure, "-map") == "0:1" and "-vn" in measure
    assert value_after(measure, "-filter:a") == measure_filter(ON.loudness) and measure[-3:] == ["-f", "null", "-"]
    measured = parse_loudnorm(EXAMPLE_LOG.splitlines())
    args = audio_args("/s/source", INFO, ON, "/o/audio", measured)
    assert args.count("-map") == 1 and value_after(args, "-map") == "0:1" and "-vn" in args
    assert value_after(args, "-loglevel") == "level+info" and args[-1] == "/o/audio/index.m3u8"
    loudnorm, resample = value_after(args, "-filter:a").split(",")
    options = dict(option.split("=") for option in loudnorm.removeprefix("loudnorm=").split(":"))
    assert options == {"I": "-16", "TP": "-1.5", "LRA": "11", "measured_I": "-51.76", "measured_TP": "-47.18",
                       "measured_LRA": "0.1", "measured_thresh": "-61.76", "offset": "0.04", "linear": "true",
                       "print_format": "json"}
    assert resample == "aresample=48000"
    # a steady tone's loudness range of 0 would read as "not measured" to loudnorm
    steady = Loudnorm(-30.0, -27.0, 0.0, -40.0, -16.0, -13.0, 0.0, -26.0, "dynamic", 0.0)
    assert ":measured_LRA=0.01:" in normalise_filter(LoudnessTarget(-16), steady)


def test_the_manifest_entry_has_the_target_the_measurement_and_the_result():
    measured = parse_loudnorm(EXAMPLE_LOG.splitlines())
    second = Loudnorm(-51.75, -47.18, 0.0, -61.75, -15.99, -11.42, 0.0, -25.99, "linear", -0.01)
    entry = loudness_entry(LoudnessTarget(-16), measured, second)
    assert entry == {"target_i": -16, "target_tp": -1.5, "target_lra": 11.0, "input_i": -51.76, "input_tp": -47.18,
                     "input_lra": 0.1, "input_thresh": -61.76, "output_i": -15.99, "output_tp": -11.42,
                     "output_lra": 0.0, "normalization": "linear"}
