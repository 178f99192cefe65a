"""Thumbnail requests checked against a manifest: defaults, the rendition chosen, the segment and
the offset in it, and a stable code for every bad input."""

from __future__ import annotations

import pytest

from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.thumbnails import plan_thumbnail, segment_at
from pixelflow.errors import PixelFlowError

MANIFEST = {"duration": 6.0, "renditions": [
    {"name": "720p", "width": 1280, "height": 720, "playlist": "720p/index.m3u8", "frame_rate": 30.0},
    {"name": "360p", "width": 640, "height": 360, "playlist": "360p/index.m3u8", "frame_rate": 30.0}]}


@pytest.mark.parametrize("query, rendition, size, time", [
    ({}, "720p", (1280, 720), 0.6),                       # the poster's rung and time
    ({"time": "2.25"}, "720p", (1280, 720), 2.25),
    ({"width": "640"}, "360p", (640, 360), 0.6),          # the lowest rendition that covers it
    ({"width": "641"}, "720p", (641, 361), 0.6),
    ({"height": "90"}, "360p", (160, 90), 0.6),           # the aspect ratio kept
    ({"width": "320", "height": "320"}, "360p", (320, 180), 0.6),
    ({"time": "6", "width": "1280"}, "720p", (1280, 720), 6.0),
    ({"time": " 0 ", "width": "16"}, "360p", (16, 9), 0.0),
])
def test_plan_defaults_and_choice(query, rendition, size, time):
    plan = plan_thumbnail(MANIFEST, "jpg", query, max_width=1920)
    assert (plan.rendition["name"], (plan.width, plan.height), plan.time) == (rendition, size, time)


@pytest.mark.parametrize("fmt, query, code", [
    ("jpg", {"time": "-1"}, "invalid_time"),
    ("jpg", {"time": "abc"}, "invalid_time"),
    ("jpg", {"time": "nan"}, "invalid_time"),
    ("jpg", {"time": "inf"}, "invalid_time"),
    ("jpg", {"time": "1e3"}, "invalid_time"),
    ("jpg", {"time": ""}, "invalid_time"),
    ("jpg", {"time": "6.001"}, "invalid_time"),
    ("jpg", {"width": "0"}, "invalid_size"),
    ("jpg", {"width": "-5"}, "invalid_size"),
    ("jpg", {"width": "1.5"}, "invalid_size"),
    ("jpg", {"width": "9" * 40}, "invalid_size"),
    ("jpg", {"height": "x"}, "invalid_size"),
    ("jpg", {"width": "1281"}, "thumbnail_too_large"),  # above the largest rendition
    ("jpg", {"height": "721"}, "thumbnail_too_large"),
    ("gif", {}, "invalid_format"),
    ("JPG", {}, "invalid_format"),
])
def test_bad_requests_have_codes(fmt, query, code):
    with pytest.raises(PixelFlowError) as caught:
        plan_thumbnail(MANIFEST, fmt, query, max_width=1920)
    assert caught.value.code.value == code


def test_the_width_setting_caps_sizes_and_defaults():
    with pytest.raises(PixelFlowError) as caught:
        plan_thumbnail(MANIFEST, "webp", {"width": "641"}, max_width=640)
    assert caught.value.code.value == "thumbnail_too_large" and caught.value.details["max_width"] == 640
    plan = plan_thumbnail(MANIFEST, "webp", {}, max_width=640)
    assert (plan.width, plan.height, plan.content_type) == (640, 360, "image/webp")


def test_an_asset_without_video_has_no_thumbnail():
    with pytest.raises(PixelFlowError) as caught:
        plan_thumbnail({"duration": 3.0, "renditions": []}, "jpg", {}, max_width=1920)
    assert caught.value.code.value == "not_found"


def test_the_segment_covering_a_time():
    playlist = parse_media_playlist("#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\ns0.m4s\n#EXTINF:2.0,\n"
                                    "s1.m4s\n#EXTINF:2.0,\ns2.m4s\n#EXT-X-ENDLIST\n")
    picks = [(p.uri, p.offset) for p in (segment_at(playlist, t) for t in (0.0, 1.99, 2.0, 4.5, 6.0))]
    assert picks == [("s0.m4s", 0.0), ("s0.m4s", 1.95), ("s1.m4s", 0.0), ("s2.m4s", 0.5), ("s2.m4s", 1.95)]
