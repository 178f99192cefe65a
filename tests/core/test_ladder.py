"""Ladder planning: never upscale, keep the display aspect, even sizes, aligned keyframes."""

from fractions import Fraction

import pytest

from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.probe import interpret_probe

CFG = LadderConfig()


def sizes(plan):
    return [(r.name, r.width, r.height) for r in plan]


def test_4k_landscape_gets_the_default_ladder_up_to_1080p():
    assert sizes(plan_ladder(3840, 2160, Fraction(30), CFG)) == [
        ("360p", 640, 360), ("480p", 854, 480), ("720p", 1280, 720), ("1080p", 1920, 1080)]


def test_never_upscales():
    assert [r.name for r in plan_ladder(1280, 720, Fraction(30), CFG)] == ["360p", "480p", "720p"]
    assert [r.name for r in plan_ladder(854, 480, Fraction(30), CFG)] == ["360p", "480p"]


def test_source_smaller_than_every_rung_gets_one_rendition_at_its_own_size():
    plan = plan_ladder(320, 240, Fraction(25), CFG)
    assert sizes(plan) == [("240p", 320, 240)]


def test_4_3_keeps_its_aspect():
    assert sizes(plan_ladder(1440, 1080, Fraction(30), CFG)) == [
        ("360p", 480, 360), ("480p", 640, 480), ("720p", 960, 720), ("1080p", 1440, 1080)]


def test_portrait_9_16_rungs_are_named_by_their_short_side():
    assert sizes(plan_ladder(1080, 1920, Fraction(30), CFG)) == [
        ("360p", 360, 640), ("480p", 480, 854), ("720p", 720, 1280), ("1080p", 1080, 1920)]


@pytest.mark.parametrize("width,height", [(853, 479), (1001, 563), (1279, 719), (719, 1279)])
def test_odd_sources_give_even_sizes_close_to_the_aspect(width, height):
    for r in plan_ladder(width, height, Fraction(30), CFG):
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.width / r.height == pytest.approx(width / height, rel=0.01)
        assert r.width <= width + 1 and r.height <= height + 1


def test_rotated_phone_video_is_planned_from_its_display_size():
    probe = {
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "3.0", "size": "1000"},
        "streams": [{"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
                     "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "pix_fmt": "yuv420p",
                     "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}],
    }
    info = interpret_probe(probe)
    assert info.video.rotation == 90
    assert info.video.display_size == (1080, 1920)
    plan = plan_ladder(*info.video.display_size, info.video.frame_rate, CFG)
    assert sizes(plan)[0] == ("360p", 360, 640)


def test_non_square_pixels_are_planned_from_the_display_aspect():
    # DVD-style anamorphic 720x480 with 32:27 pixels displays as 16:9
    probe = {
        "format": {"format_name": "mpeg", "duration": "3.0"},
        "streams": [{"index": 0, "codec_type": "video", "codec_name": "mpeg2video", "width": 720, "height": 480,
                     "sample_aspect_ratio": "32:27", "r_frame_rate": "30000/1001", "avg_frame_rate": "30000/1001"}],
    }
    info = interpret_probe(probe)
    assert info.video.display_size == (853, 480)
    assert sizes(plan_ladder(*info.video.display_size, info.video.frame_rate, CFG)) == [
        ("360p", 640, 360), ("480p", 854, 480)]


def test_frame_rate_caps_keep_frames_on_one_timeline():
    plan = plan_ladder(1920, 1080, Fraction(60), CFG)
    assert [float(r.fps) for r in plan] == [30, 30, 60, 60]
    # every rung has a keyframe every 2 s
    assert [r.gop_frames for r in plan] == [60, 60, 120, 120]
    ntsc = plan_ladder(1920, 1080, Fraction(60000, 1001), CFG)
    assert ntsc[0].fps == Fraction(30000, 1001)


def test_bitrate_caps_grow_with_the_rung_and_the_frame_rate():
    plan30 = plan_ladder(1920, 1080, Fraction(30), CFG)
    caps = [r.maxrate_kbps for r in plan30]
    assert caps == sorted(caps) and len(set(caps)) == len(caps)
    plan60 = plan_ladder(1920, 1080, Fraction(60), CFG)
    assert plan60[-1].maxrate_kbps > plan30[-1].maxrate_kbps
    assert all(r.bufsize_kbps == 2 * r.maxrate_kbps for r in plan30)


def test_configured_ladder_and_settings_are_one_typed_place(monkeypatch):
    from pixelflow.settings import PixelFlowSettings

    monkeypatch.setenv("PIXELFLOW_LADDER", "240p, 720p,1440")
    monkeypatch.setenv("PIXELFLOW_GOP_SECONDS", "2")
    monkeypatch.setenv("PIXELFLOW_SEGMENT_SECONDS", "6")
    config = PixelFlowSettings().ladder_config()
    assert config.heights == (240, 720, 1440)
    assert [r.name for r in plan_ladder(3840, 2160, Fraction(30), config)] == ["240p", "720p", "1440p"]
    with pytest.raises(ValueError):
        LadderConfig(gop_seconds=2, segment_seconds=5)

