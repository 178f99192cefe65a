"""Recorded ffprobe documents for the core's probe and validation tests.

The ``RECORDED_*`` documents are ffprobe 5.1 output (``-show_format -show_streams``, trimmed to
the fields PixelFlow reads) of files from :mod:`tests.bad_media`; :func:`plain` builds a clean
one with overrides.
"""

from __future__ import annotations

import copy

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
AUDIO = {"index": 1, "codec_name": "aac", "codec_type": "audio", "sample_rate": "48000", "channels": 1,
         "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "duration": "2.000000", "disposition": {"default": 1}}

RECORDED_ROTATED = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "493881", "bit_rate": "1975524"},
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 640, "height": 360,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "field_order": "progressive", "r_frame_rate": "30/1",
         "avg_frame_rate": "30/1", "duration": "2.000000", "bits_per_raw_sample": "8", "nb_frames": "60",
         "disposition": {"default": 1, "attached_pic": 0},
         "side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]},
        AUDIO,
    ],
}
RECORDED_ANAMORPHIC = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "410118"},
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 480, "height": 360,
         "sample_aspect_ratio": "4:3", "display_aspect_ratio": "16:9", "pix_fmt": "yuv420p", "field_order": "progressive",
         "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "duration": "2.000000", "disposition": {"default": 1}},
        AUDIO,
    ],
}
RECORDED_VFR = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "185620"},
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "30/1", "avg_frame_rate": "1440/59",
         "duration": "1.966667", "nb_frames": "48", "disposition": {"default": 1}},
        AUDIO,
    ],
}
RECORDED_INTERLACED = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "273464"},
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "field_order": "tt", "r_frame_rate": "25/1",
         "avg_frame_rate": "25/1", "duration": "2.000000", "disposition": {"default": 1}},
        AUDIO,
    ],
}
RECORDED_HDR_PQ = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "84689"},
    "streams": [
        {"index": 0, "codec_name": "hevc", "codec_type": "video", "width": 320, "height": 240,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p10le", "color_range": "tv", "color_space": "bt2020nc",
         "color_transfer": "smpte2084", "color_primaries": "bt2020", "field_order": "progressive",
         "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "duration": "2.000000", "disposition": {"default": 1}},
        AUDIO,
    ],
}
RECORDED_HLG_TRANSFER_ONLY = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "214147"},
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p10le", "color_range": "tv", "color_transfer": "arib-std-b67",
         "r_frame_rate": "30/1", "avg_frame_rate": "30/1", "duration": "2.000000", "bits_per_raw_sample": "10",
         "disposition": {"default": 1}},
        AUDIO,
    ],
}
RECORDED_M4A = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "18799"},
    "streams": [{"index": 0, "codec_name": "aac", "codec_type": "audio", "sample_rate": "44100", "channels": 1,
                 "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "duration": "2.000000", "disposition": {"default": 1}}],
}
RECORDED_HUGE_SPS = {
    "format": {"format_name": MP4, "duration": "3.000000", "size": "296884"},
    "streams": [{"index": 0, "codec_name": "h264", "codec_type": "video", "width": 0, "height": 0,
                 "sample_aspect_ratio": "1:1", "display_aspect_ratio": "0:0", "r_frame_rate": "30/1",
                 "avg_frame_rate": "30/1", "duration": "3.000000", "nb_frames": "90", "disposition": {"default": 1}}],
    "stderr": ["[h264] [IMGUTILS] Picture size 30000x30000 is invalid", "[NULL] mb_width/height overflow"],
}
RECORDED_FPS_ZERO = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "196547"},
    "streams": [{"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
                 "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "1/0", "avg_frame_rate": "89/6",
                 "duration": "2.000000", "disposition": {"default": 1}}],
}
RECORDED_FPS_1000 = {
    "format": {"format_name": MP4, "duration": "2.000000", "size": "196547"},
    "streams": [{"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
                 "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "1000/1", "avg_frame_rate": "1000/1",
                 "duration": "0.060000", "disposition": {"default": 1}}],
}
RECORDED_LIVE_WEBM = {  # no duration anywhere: pixelflow.ffmpeg.probe measures it
    "format": {"format_name": "matroska,webm", "size": "76804"},
    "streams": [{"index": 0, "codec_name": "vp8", "codec_type": "video", "width": 320, "height": 240,
                 "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "30/1", "avg_frame_rate": "30/1",
                 "disposition": {"default": 0}}],
}
RECORDED_GAB2_HLS = {
    "format": {"format_name": "avi", "duration": "2.000000", "size": "122074"},
    "streams": [
        {"index": 0, "codec_name": "mpeg4", "codec_type": "video", "width": 320, "height": 240,
         "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "30/1", "avg_frame_rate": "30/1",
         "duration": "2.000000", "disposition": {"default": 0}},
        {"index": 1, "codec_type": "subtitle", "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "duration": "1.000000",
         "disposition": {"default": 0}},
    ],
}


def plain(**video) -> dict:
    """A 2 s 320x240 30 fps H.264 MP4 with overrides for its video stream (and ``fmt_*`` keys
    for the format)."""
    fmt = {"format_name": MP4, "duration": "2.000000", "size": "200000"}
    for key in [k for k in video if k.startswith("fmt_")]:
        value = video.pop(key)
        if value is None:
            fmt.pop(key[4:], None)
        else:
            fmt[key[4:]] = value
    stream = {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
              "sample_aspect_ratio": "1:1", "pix_fmt": "yuv420p", "r_frame_rate": "30/1", "avg_frame_rate": "30/1",
              "duration": "2.000000", "disposition": {"default": 1}}
    for key, value in video.items():
        if value is None:
            stream.pop(key, None)
        else:
            stream[key] = value
    return {"format": fmt, "streams": [stream, copy.deepcopy(AUDIO)]}
