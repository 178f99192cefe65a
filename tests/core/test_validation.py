"""Probe interpretation and validation: recorded ffprobe JSON in, codes and summaries out.

The ``RECORDED_*`` documents are ffprobe 5.1 output (``-show_format -show_streams``, trimmed to
the fields PixelFlow reads) of files from :mod:`tests.bad_media`. The last part runs the real
``ffprobe``/``ffmpeg`` on small generated files (no Prefect, no S3): what the probe answers for
files outside the allow-list, and which decoder messages count as damage.
"""

from __future__ import annotations

import copy
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from pixelflow.core.ffmpeg_args import prefilters
from pixelflow.core.probe import interpret_probe
from pixelflow.core.validation import Limits, check_size, validate_source
from pixelflow.errors import ErrorCode, PixelFlowError
from tests import bad_media as bm

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


def verdict(data: dict, limits: Limits | None = None) -> str:
    try:
        validate_source(interpret_probe(data), limits or Limits())
    except PixelFlowError as error:
        return error.code.value
    return "ok"


# --- interpretation -------------------------------------------------------------------------------

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


def test_prefilters_deinterlace_and_tone_map_with_explicit_colour_properties():
    assert prefilters(interpret_probe(RECORDED_INTERLACED)) == ["bwdif=mode=send_frame:deint=interlaced"]
    assert prefilters(interpret_probe(plain())) == []
    chain = prefilters(interpret_probe(RECORDED_HLG_TRANSFER_ONLY))
    assert chain[0] == "setparams=color_primaries=bt2020:color_trc=arib-std-b67:colorspace=bt2020nc:range=tv"
    assert chain[-1] == "zscale=t=bt709:m=bt709:r=tv" and "tonemap=tonemap=hable:desat=0" in chain
    assert prefilters(interpret_probe(RECORDED_HDR_PQ))[0].startswith("setparams=color_primaries=bt2020:color_trc=smpte2084")


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


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,code", [
    (RECORDED_ROTATED, "ok"),
    (RECORDED_ANAMORPHIC, "ok"),
    (RECORDED_VFR, "ok"),
    (RECORDED_INTERLACED, "ok"),
    (RECORDED_HDR_PQ, "ok"),
    (RECORDED_HLG_TRANSFER_ONLY, "ok"),
    (RECORDED_M4A, "no_video_stream"),
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
    assert verdict(cover) == "no_video_stream"


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


# --- the real ffprobe on generated files --------------------------------------------------------------

ALLOWED = ["mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "mxf", "ogg"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe")


def probe_code(path: Path) -> str:
    from pixelflow import ffmpeg

    try:
        validate_source(interpret_probe(ffmpeg.probe(str(path), formats=ALLOWED)), Limits())
    except PixelFlowError as error:
        return error.code.value
    return "ok"


@pytest.mark.parametrize("make,code", [
    (bm.make_text, "not_media"),
    (bm.make_random, "not_media"),
    (bm.make_png, "not_media"),
    (bm.make_jpeg, "not_media"),
    (bm.make_gif, "unsupported_container"),
    (bm.make_y4m, "unsupported_container"),
    (bm.make_mp3, "no_video_stream"),
    (bm.make_m4a, "no_video_stream"),
    (bm.make_truncated_no_moov, "truncated"),
    (bm.make_huge_dimensions_h264, "dimensions_too_large"),
    (bm.make_fps_zero, "frame_rate_out_of_range"),
    (bm.make_live_webm, "ok"),
], ids=lambda value: value if isinstance(value, str) else value.__name__[5:])
def test_probe_of_generated_files(files, make, code):
    # named "source" without an extension, like the flow's download: no guessing by name
    (files / make.__name__).mkdir()
    assert probe_code(make(files / make.__name__ / "source")) == code


def test_probe_measures_a_missing_duration_and_keeps_paths_out(files):
    from pixelflow import ffmpeg

    path = bm.make_live_webm(files / "live.webm")
    data = ffmpeg.probe(str(path), formats=ALLOWED)
    assert data["format"]["duration_measured"] is True
    assert interpret_probe(data).duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(PixelFlowError) as caught:
        ffmpeg.probe(str(bm.make_text(files / "notes.mp4")), formats=ALLOWED)
    assert str(files) not in str(caught.value.details) and "<file>" in str(caught.value.details)


def test_probe_refuses_playlists_without_opening_what_they_name(files):
    from pixelflow import ffmpeg

    secret, canary = bm.SecretFile(files / "private"), bm.TcpCanary()
    try:
        for make in (bm.make_hls, bm.make_ffconcat, bm.make_sdp):
            path = make(files / f"{make.__name__}.mp4", secret, canary)
            with pytest.raises(PixelFlowError) as caught:
                ffmpeg.probe(str(path), formats=ALLOWED)
            assert caught.value.code is ErrorCode.UNSUPPORTED_CONTAINER
            assert caught.value.details["kind"] == "playlist"
        configured = ALLOWED + ["hls", "concat", "sdp"]  # a careless allow-list changes nothing
        with pytest.raises(PixelFlowError) as caught:
            ffmpeg.probe(str(bm.make_hls(files / "again.mp4", secret, canary)), formats=configured)
        assert caught.value.code is ErrorCode.UNSUPPORTED_CONTAINER
        gab2 = bm.make_gab2_hls(files / "gab2.avi", secret, canary)
        assert probe_code(gab2) == "unsupported_container"
        assert not secret.opened.is_set() and canary.connections == 0
    finally:
        secret.close()
        canary.close()


def decode(path: Path, demuxer: str) -> list[str]:
    from pixelflow import ffmpeg

    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "level+error", "-progress", "pipe:1", "-nostats",
            "-protocol_whitelist", "file", "-f", demuxer, "-i", f"file:{path}", "-map", "0:v:0", "-f", "null", "-"]
    return ffmpeg.run_ffmpeg(args, timeout=60).errors


@pytest.mark.parametrize("make,demuxer,damaged", [
    (bm.make_corrupt_mp4, "mov", True),
    (bm.make_corrupt_ts, "mpegts", True),
    (bm.make_ts_cut_mid_gop, "mpegts", False),  # waits for a keyframe: not damage
    (bm.make_interlaced, "mov", False),
    (bm.make_hdr_pq, "mov", False),
    (bm.make_vfr, "mov", False),
], ids=lambda value: value if isinstance(value, str) else getattr(value, "__name__", str(value))[5:])
def test_decode_damage_markers(files, make, demuxer, damaged):
    from pixelflow import ffmpeg

    path = make(files / f"{make.__name__}.bin")
    assert (ffmpeg.input_damage(decode(path, demuxer)) is not None) is damaged


def test_a_truncated_mp4_fails_its_decode_as_truncated(files):
    path = bm.make_truncated_mdat(files / "cut.mp4")
    with pytest.raises(PixelFlowError) as caught:
        decode(path, "mov")
    assert caught.value.code is ErrorCode.TRUNCATED and not caught.value.retryable


def test_clean_stderr_drops_paths_and_addresses():
    from pixelflow.ffmpeg import clean_stderr

    lines = clean_stderr(["[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c1] stream 0, offset 0x1bb65: partial file",
                          "file:/tmp/pixelflow/abc-1/source: Invalid data found when processing input",
                          "Could not write /tmp/pixelflow/abc-1/out/360p/index.m3u8, 30000/1001 fps"])
    assert lines == ["[mov,mp4,m4a,3gp,3g2,mj2] stream 0, offset 0x1bb65: partial file",
                     "<file>: Invalid data found when processing input",
                     "Could not write <file>, 30000/1001 fps"]


def test_ffmpeg_is_never_given_a_shell_or_a_bare_path():
    from pixelflow.core.ffmpeg_args import file_url, input_args

    args = input_args("/s/-i evil;rm -rf ~ $(x).mp4", "mov")
    assert args[args.index("-protocol_whitelist") + 1] == "file" and args[args.index("-f") + 1] == "mov"
    assert args[-2:] == ["-i", "file:/s/-i evil;rm -rf ~ $(x).mp4"]  # one argument, a local path
    with pytest.raises(ValueError):
        file_url("-i")
    with pytest.raises(ValueError):
        file_url("http://evil/x.mp4")
    done = subprocess.run(["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-i", "file:http://127.0.0.1:9/x"],
                          capture_output=True, text=True)
    assert done.returncode != 0  # "file:" makes even a URL-looking name a local path
