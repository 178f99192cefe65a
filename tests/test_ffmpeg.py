"""The real ``ffprobe``/``ffmpeg`` on small generated files (no Prefect, no S3): what the probe
answers for files outside the allow-list, which decoder messages count as damage, and that FFmpeg
is only ever given local files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pixelflow.core.probe import interpret_probe
from pixelflow.core.validation import Limits, validate_source
from pixelflow.errors import ErrorCode, PixelFlowError
from tests import bad_media as bm

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
