"""Probe interpretation: recorded ffprobe JSON in, what PixelFlow knows of the source out
(display size after rotation and pixel aspect, frame rate, HDR, the audio track, the duration)."""

from __future__ import annotations

from fractions import Fraction

from pixelflow.core.ffmpeg_args import prefilters
from pixelflow.core.probe import interpret_probe, parse_rate
from tests.core.probes import (AUDIO, RECORDED_ANAMORPHIC, RECORDED_HDR_PQ, RECORDED_HLG_TRANSFER_ONLY,
                               RECORDED_HUGE_SPS, RECORDED_INTERLACED, RECORDED_LIVE_WEBM, RECORDED_ROTATED,
                               RECORDED_VFR, plain)


def test_frame_rates_are_exact_fractions_and_nonsense_is_unknown():
    assert parse_rate("30000/1001") == Fraction(30000, 1001) and parse_rate("25") == 25
    for nonsense in (None, "", "0/0", "30/0", "-30/1", "N/A", "abc/1"):
        assert parse_rate(nonsense) is None, nonsense


def test_phone_rotation_swaps_the_displayed_sides():
    info = interpret_probe(RECORDED_ROTATED)
    assert info.video.rotation == 270  # FFmpeg turns this matrix 90 degrees anticlockwise
    assert info.video.display_size == (360, 640)
    assert info.summary()["video"]["display_width"] == 360
    legacy = plain(side_data_list=None, tags={"rotate": "90"})
    assert interpret_probe(legacy).video.rotation == 90
    assert interpret_probe(legacy).video.display_size == (240, 320)


def test_non_square_pixels_are_applied():
    info = interpret_probe(RECORDED_ANAMORPHIC)
    assert info.video.sar == Fraction(4, 3) and info.video.display_size == (640, 360)
    assert interpret_probe(plain(sample_aspect_ratio="0:1")).video.sar == 1  # "unknown" means square


def test_variable_frame_rate_snaps_to_the_nearest_standard_rate():
    assert interpret_probe(RECORDED_VFR).video.frame_rate == 24
    phone = plain(r_frame_rate="120/1", avg_frame_rate="2997/100")
    assert interpret_probe(phone).video.frame_rate == Fraction(30000, 1001)


def test_interlaced_and_hdr_are_recognised():
    assert interpret_probe(RECORDED_INTERLACED).video.interlaced
    assert not interpret_probe(plain(field_order="progressive")).video.interlaced
    hdr = interpret_probe(RECORDED_HDR_PQ).video
    assert hdr.hdr and hdr.bit_depth == 10 and hdr.color_primaries == "bt2020"
    assert interpret_probe(RECORDED_HLG_TRANSFER_ONLY).video.hdr


def test_default_audio_track_is_chosen_then_the_first():
    second_default = plain()
    second_default["streams"].append({**AUDIO, "index": 2, "disposition": {"default": 1}})
    second_default["streams"][1]["disposition"] = {"default": 0}
    assert interpret_probe(second_default).audio.index == 2
    none_default = plain()
    none_default["streams"][1]["disposition"] = {"default": 0}
    none_default["streams"].append({**AUDIO, "index": 2, "disposition": {"default": 0}})
    info = interpret_probe(none_default)
    assert info.audio.index == 1 and info.audio_stream_count == 2


def test_duration_comes_from_the_container_else_the_video_stream():
    assert interpret_probe(plain(fmt_duration=None)).duration == 2.0
    assert interpret_probe(plain(fmt_duration="0.000000")).duration == 2.0  # a writer that left mvhd at zero
    assert interpret_probe(plain(fmt_duration="0.000000", duration="0.000000")).duration == 0.0
    assert interpret_probe(plain(fmt_duration="-0.005000", duration=None)).duration == -0.005
    assert interpret_probe(RECORDED_LIVE_WEBM).duration == -1.0  # unknown until measured


def test_refused_picture_size_is_reported_as_the_claimed_size():
    info = interpret_probe(RECORDED_HUGE_SPS)
    assert (info.video.width, info.video.height) == (30000, 30000)


def test_prefilters_deinterlace_and_tone_map_with_explicit_colour_properties():
    assert prefilters(interpret_probe(RECORDED_INTERLACED)) == ["bwdif=mode=send_frame:deint=interlaced"]
    assert prefilters(interpret_probe(plain())) == []
    chain = prefilters(interpret_probe(RECORDED_HLG_TRANSFER_ONLY))
    assert chain[0] == "setparams=color_primaries=bt2020:color_trc=arib-std-b67:colorspace=bt2020nc:range=tv"
    assert chain[-1] == "zscale=t=bt709:m=bt709:r=tv" and "tonemap=tonemap=hable:desat=0" in chain
    assert prefilters(interpret_probe(RECORDED_HDR_PQ))[0].startswith("setparams=color_primaries=bt2020:color_trc=smpte2084")
