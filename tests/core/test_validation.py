"""Validation: what PixelFlow accepts and the code it rejects the rest with, from recorded
ffprobe JSON (:mod:`tests.core.probes`) and the configured limits."""

from __future__ import annotations

import copy

import pytest

from pixelflow.core.probe import interpret_probe
from pixelflow.core.validation import Limits, check_size, validate_source
from pixelflow.errors import ErrorCode, PixelFlowError
from tests.core.probes import (RECORDED_ANAMORPHIC, RECORDED_FPS_1000, RECORDED_FPS_ZERO, RECORDED_GAB2_HLS,
                               RECORDED_HDR_PQ, RECORDED_HLG_TRANSFER_ONLY, RECORDED_HUGE_SPS, RECORDED_INTERLACED,
                               RECORDED_LIVE_WEBM, RECORDED_M4A, RECORDED_ROTATED, RECORDED_VFR, plain)


def verdict(data: dict, limits: Limits | None = None) -> str:
    try:
        validate_source(interpret_probe(data), limits or Limits())
    except PixelFlowError as error:
        return error.code.value
    return "ok"


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,code", [
    (RECORDED_ROTATED, "ok"),
    (RECORDED_ANAMORPHIC, "ok"),
    (RECORDED_VFR, "ok"),
    (RECORDED_INTERLACED, "ok"),
    (RECORDED_HDR_PQ, "ok"),
    (RECORDED_HLG_TRANSFER_ONLY, "ok"),
    (RECORDED_M4A, "ok"),  # an audio-only asset
    (RECORDED_HUGE_SPS, "dimensions_too_large"),
    (RECORDED_FPS_ZERO, "frame_rate_out_of_range"),
    (RECORDED_FPS_1000, "frame_rate_out_of_range"),
    (RECORDED_LIVE_WEBM, "invalid_duration"),  # only when measuring failed too
    (RECORDED_GAB2_HLS, "unsupported_container"),
    (plain(), "ok"),
    (plain(codec_name="ffv1"), "unsupported_codec"),
    (plain(codec_name=None), "unsupported_codec"),
    (plain(fmt_format_name="hls"), "unsupported_container"),
    (plain(fmt_format_name="gif"), "unsupported_container"),
    (plain(width=16000, height=16000), "dimensions_too_large"),
    (plain(width=8192, height=8192), "dimensions_too_large"),  # 8192 per side, but over 7680x4320 pixels
    (plain(width=7680, height=4320), "ok"),
    (plain(width=4320, height=7680), "ok"),  # portrait 8K
    (plain(width=4000, height=1000, sample_aspect_ratio="4:1"), "dimensions_too_large"),  # shown 16000 wide
    (plain(width=0, height=0), "corrupt_stream"),
    (plain(width=12, height=12), "dimensions_too_small"),
    (plain(width=320, height=8), "dimensions_too_small"),
    (plain(width=64, height=64, sample_aspect_ratio="1:8"), "dimensions_too_small"),  # shown 8 px wide
    (plain(r_frame_rate="0/0", avg_frame_rate="0/0"), "frame_rate_out_of_range"),
    (plain(r_frame_rate="1/512", avg_frame_rate="1/512"), "frame_rate_out_of_range"),
    (plain(r_frame_rate="240/1", avg_frame_rate="240/1"), "ok"),
    (plain(r_frame_rate="300/1", avg_frame_rate="300/1"), "frame_rate_out_of_range"),
    (plain(r_frame_rate="0/0", avg_frame_rate="25/1"), "ok"),
    (plain(fmt_duration="0.000000", duration="0.000000"), "invalid_duration"),
    (plain(fmt_duration="-5.000000", duration=None), "invalid_duration"),
    (plain(fmt_duration="36000.000000"), "too_long"),
    (plain(fmt_duration="21600.000000"), "ok"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_validation_codes(data, code):
    assert verdict(data) == code


def test_gab2_subtitles_that_are_subtitles_are_fine():
    subtitles = copy.deepcopy(RECORDED_GAB2_HLS)
    subtitles["streams"][1]["codec_name"] = "subrip"
    assert verdict(subtitles) == "ok"


def test_attached_picture_is_not_a_video_stream():
    cover = copy.deepcopy(RECORDED_M4A)
    cover["streams"].append({"index": 1, "codec_name": "mjpeg", "codec_type": "video", "width": 600, "height": 600,
                             "r_frame_rate": "90000/1", "disposition": {"default": 0, "attached_pic": 1}})
    assert verdict(cover) == "ok"  # audio only: the cover is no video
    cover["streams"] = [s for s in cover["streams"] if s["codec_type"] != "audio"]
    assert verdict(cover) == "no_video_stream"  # neither video nor audio


def test_limits_come_from_settings(monkeypatch):
    from pixelflow.settings import PixelFlowSettings

    monkeypatch.setenv("PIXELFLOW_MAX_DURATION_SECONDS", "1.5")
    monkeypatch.setenv("PIXELFLOW_MIN_FPS", "10")
    monkeypatch.setenv("PIXELFLOW_ALLOWED_VIDEO_CODECS", "hevc,av1")
    limits = PixelFlowSettings().limits()
    assert verdict(plain(), limits) == "unsupported_codec"
    assert verdict(plain(codec_name="hevc"), limits) == "too_long"
    assert verdict(plain(codec_name="hevc", fmt_duration="1.0", r_frame_rate="5/1", avg_frame_rate="5/1"), limits) == "frame_rate_out_of_range"
    monkeypatch.delenv("PIXELFLOW_MAX_DURATION_SECONDS")
    assert PixelFlowSettings().limits().max_duration == Limits().max_duration == 6 * 3600


def test_size_checks():
    with pytest.raises(PixelFlowError) as empty:
        check_size(0, Limits())
    assert empty.value.code is ErrorCode.EMPTY_FILE and not empty.value.retryable
    with pytest.raises(PixelFlowError) as big:
        check_size(11, Limits(max_bytes=10))
    assert big.value.code is ErrorCode.TOO_LARGE
    check_size(10, Limits(max_bytes=10))
