"""Loudness normalisation of the audio rendition (``PIXELFLOW_LOUDNESS_TARGET``) with the real
FFmpeg: measured by the ladder process's one decode, normalised in an audio-only pass, checked
by measuring the published rendition with FFmpeg's ``ebur128``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ffmpeg_args import audio_args, ladder_encode_args, loudness_measure_args
from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.loudness import LoudnessTarget, loudness_entry, parse_loudnorm
from pixelflow.core.probe import interpret_probe
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline import ffmpeg
from tests.test_flow_e2e import download_asset, ffmpeg_commands, upload

pytestmark = pytest.mark.integration

TARGET = LoudnessTarget(-16)


def make_source(path: Path, audio: str, seconds: int = 4, title: str = "") -> Path:
    """A 640x360 clip whose audio is the lavfi source ``audio``."""
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", audio,
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", "-metadata", f"title={title}", "-shortest", str(path)], check=True)
    return path


def quiet_source(path: Path, title: str = "") -> Path:
    """A 440 Hz tone 30 dB down: about -51 LUFS, far from any usual target."""
    return make_source(path, "sine=frequency=440:sample_rate=48000,volume=-30dB", title=title)


def integrated_loudness(path: Path) -> float:
    """The integrated loudness (LUFS) FFmpeg's ``ebur128`` measures on a file's audio."""
    done = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0",
                           "-filter:a", "ebur128", "-f", "null", "-"], capture_output=True, text=True, check=True)
    summary = done.stderr.rsplit("Summary:", 1)[1]
    return float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1))


def info_of(path: Path) -> object:
    return interpret_probe(ffmpeg.probe(str(path), formats=["mov"]))


def test_the_ladder_process_measures_and_an_audio_only_pass_reaches_the_target(tmp_path):
    # the source's title is printed among the info lines: it never reads as a decoder error
    source = quiet_source(tmp_path / "quiet.mp4", title="corrupt data found, error while decoding")
    info = info_of(source)
    config = LadderConfig(heights=(360,), loudness=TARGET)
    plan = plan_ladder(*info.video.display_size, info.video.frame_rate, config)
    (tmp_path / "360p").mkdir()
    ladder = ffmpeg.run_ffmpeg(ladder_encode_args(str(source), info, plan, config, [str(tmp_path / "360p")],
                                                  str(tmp_path / "audio")), timeout=120)
    assert ladder.errors == [] and ffmpeg.input_damage(ladder.errors) is None
    assert not (tmp_path / "audio" / "index.m3u8").exists()  # measured, not encoded
    measured = parse_loudnorm(ladder.info)
    assert measured.input_i == pytest.approx(integrated_loudness(source), abs=0.5) and measured.input_i < -45
    # the same measurement as an audio-only pass's (a retry's)
    alone = parse_loudnorm(ffmpeg.run_ffmpeg(loudness_measure_args(str(source), info, config), timeout=60).info)
    assert alone.input_i == pytest.approx(measured.input_i, abs=0.1)

    out = tmp_path / "normalised"
    out.mkdir()
    second = ffmpeg.run_ffmpeg(audio_args(str(source), info, config, str(out), measured), timeout=60)
    normalised = parse_loudnorm(second.info)
    assert normalised.normalization_type == "linear" and normalised.output_i == pytest.approx(-16, abs=0.5)
    joined = tmp_path / "joined.mp4"
    playlist = parse_media_playlist((out / "index.m3u8").read_text())
    joined.write_bytes(b"".join((out / name).read_bytes() for name in [playlist.init] + [u for u, _ in playlist.segments]))
    assert integrated_loudness(joined) == pytest.approx(-16, abs=1.0)
    probe = ffmpeg.probe(str(joined), formats=["mov"])
    assert [(s["codec_name"], s["sample_rate"], s["channels"]) for s in probe["streams"]] == [("aac", "48000", 2)]


def test_silent_audio_is_measured_without_a_crash_and_encoded_as_it_is(tmp_path):
    source = make_source(tmp_path / "silent.mp4", "anullsrc=channel_layout=stereo:sample_rate=48000")
    info = info_of(source)
    config = LadderConfig(loudness=TARGET)
    measured = parse_loudnorm(ffmpeg.run_ffmpeg(loudness_measure_args(str(source), info, config), timeout=60).info)
    assert measured.silent
    entry = loudness_entry(TARGET, measured, None)
    assert entry["normalization"] == "none" and entry["input_i"] is None
    json.dumps(entry, allow_nan=False)
    args = audio_args(str(source), info, config, str(tmp_path / "audio"), measured)
    assert "loudnorm" not in " ".join(args)
    (tmp_path / "audio").mkdir()
    assert ffmpeg.run_ffmpeg(args, timeout=60).returncode == 0


def test_an_unreadable_measurement_is_a_retried_transcode_failure():
    from tasks.encode import _loudnorm

    result = ffmpeg.FFmpegResult(args=[], returncode=0, elapsed=0.0, out_time=4.0,
                                 info=["[Parsed_loudnorm_0 @ 0x1] [info] ", "{", '\t"input_i" : "-20.0",', "}"])
    with pytest.raises(PixelFlowError) as raised:
        _loudnorm(result, "measuring the audio")
    assert raised.value.code == ErrorCode.TRANSCODE_FAILED and raised.value.retryable
    assert not raised.value.is_rejection and "loudness measurement" in raised.value.message


def test_a_quiet_upload_is_published_at_the_loudness_target_from_one_decode(prefect_server, buckets, tmp_path,
                                                                              monkeypatch):
    from flows.transcode import transcode

    monkeypatch.setenv("PIXELFLOW_LOUDNESS_TARGET", "-16")
    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    up, out = buckets
    source = quiet_source(tmp_path / "quiet talk.mp4")
    source_loudness = integrated_loudness(source)
    assert source_loudness < -45  # far from the target
    manifest = transcode(bucket=up, key="quiet talk.mp4", etag=upload(source, up, "quiet talk.mp4"))
    assert manifest["status"] == "ready"

    # The published audio rendition (its init segment and segments, as a player joins them) is
    # within 1 LU of the target.
    prefix = f"assets/{manifest['asset_id']}/"
    download_asset(out, prefix, tmp_path / "asset")
    audio_dir = tmp_path / "asset" / manifest["audio"]["playlist"].rsplit("/", 1)[0]
    playlist = parse_media_playlist((audio_dir / "index.m3u8").read_text())
    joined = tmp_path / "audio-joined.mp4"
    joined.write_bytes(b"".join((audio_dir / name).read_bytes()
                                for name in [playlist.init] + [uri for uri, _ in playlist.segments]))
    assert integrated_loudness(joined) == pytest.approx(-16, abs=1.0)
    assert playlist.duration == pytest.approx(4.0, abs=0.1)
    # so is the MP4 download, remuxed from it
    assert integrated_loudness(tmp_path / "asset" / manifest["downloads"][0]["file"]) == pytest.approx(-16, abs=1.0)

    # The manifest records the target, the source's measurement and the result.
    stored = json.loads(s3_client().get_object(Bucket=out, Key=f"{prefix}manifest.json")["Body"].read())
    loudness = stored["audio"]["loudness"]
    assert (loudness["target_i"], loudness["target_tp"], loudness["target_lra"]) == (-16, -1.5, 11)
    assert loudness["input_i"] == pytest.approx(source_loudness, abs=0.5)
    assert loudness["output_i"] == pytest.approx(-16, abs=0.5) and loudness["normalization"] == "linear"
    assert stored["ladder"].endswith("-loud-16/-1.5/11")
    assert "loudness" not in stored["renditions"][0]

    # The video was decoded once: the ladder process measured the audio; the only other
    # processes are the audio-only second pass (no video decoded) and the MP4 remux.
    started = ffmpeg_commands(manifest["flow_run_id"])
    ladder = [line for line in started if "-filter_complex" in line]
    assert len(ladder) == 1 and "loudnorm=I=-16:TP=-1.5:LRA=11:print_format=json" in ladder[0]
    others = [line for line in started if line not in ladder]
    normalise = [line for line in others if "loudnorm" in line]
    assert len(normalise) == 1 and "measured_I=" in normalise[0] and " -vn " in normalise[0]
    assert normalise[0].count(" -map ") == 1 and " -map 0:1 " in normalise[0]
    assert len(others) == 2 and "-c copy" in [line for line in others if line not in normalise][0], started


def test_a_quiet_audio_only_upload_is_measured_alone_then_normalised(prefect_server, buckets, tmp_path, monkeypatch):
    from flows.transcode import transcode

    monkeypatch.setenv("PIXELFLOW_LOUDNESS_TARGET", "-23")
    up, out = buckets
    source = tmp_path / "quiet memo.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=330:sample_rate=48000,volume=-30dB", "-t", "4", "-c:a", "aac", str(source)],
                   check=True)
    manifest = transcode(bucket=up, key="quiet memo.m4a", etag=upload(source, up, "quiet memo.m4a"))
    assert manifest["status"] == "ready" and manifest["renditions"] == []
    assert manifest["audio"]["loudness"]["output_i"] == pytest.approx(-23, abs=0.5)
    download_asset(out, f"assets/{manifest['asset_id']}/", tmp_path / "asset")
    assert integrated_loudness(tmp_path / "asset" / manifest["downloads"][0]["file"]) == pytest.approx(-23, abs=1.0)
    # no ladder process: the audio is measured in a pass of its own, then normalised, then remuxed
    started = ffmpeg_commands(manifest["flow_run_id"])
    assert len(started) == 3 and "print_format=json -f null -" in started[0] and "measured_I=" in started[1], started
