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
from pixelflow.settings import DEFAULT_AUDIO_CONTAINERS, DEFAULT_CONTAINERS
from tests import bad_media as bm

ALLOWED = DEFAULT_CONTAINERS + DEFAULT_AUDIO_CONTAINERS  # what the flow's probe admits


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe")


def probe_code(path: Path) -> str:
    from pixelflow.pipeline import ffmpeg

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
    (bm.make_mp3, "ok"),  # audio-only uploads
    (bm.make_m4a, "ok"),
    (bm.make_subtitles_only, "no_video_stream"),
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
    from pixelflow.pipeline import ffmpeg

    path = bm.make_live_webm(files / "live.webm")
    data = ffmpeg.probe(str(path), formats=ALLOWED)
    assert data["format"]["duration_measured"] is True
    assert interpret_probe(data).duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(PixelFlowError) as caught:
        ffmpeg.probe(str(bm.make_text(files / "notes.mp4")), formats=ALLOWED)
    assert str(files) not in str(caught.value.details) and "<file>" in str(caught.value.details)


def test_probe_refuses_playlists_without_opening_what_they_name(files):
    from pixelflow.pipeline import ffmpeg

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
    from pixelflow.pipeline import ffmpeg

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
    from pixelflow.pipeline import ffmpeg

    path = make(files / f"{make.__name__}.bin")
    assert (ffmpeg.input_damage(decode(path, demuxer)) is not None) is damaged


def test_a_truncated_mp4_fails_its_decode_as_truncated(files):
    path = bm.make_truncated_mdat(files / "cut.mp4")
    with pytest.raises(PixelFlowError) as caught:
        decode(path, "mov")
    assert caught.value.code is ErrorCode.TRUNCATED and not caught.value.retryable


def test_clean_stderr_drops_paths_and_addresses():
    from pixelflow.pipeline.ffmpeg import clean_stderr

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


# --- what FFmpeg and ffprobe may use: environment, network, memory, time, output --------------

def _slow_ffmpeg(marker: str) -> list[str]:
    """An FFmpeg command that runs for minutes (real-time reading) and is found by ``marker``."""
    return ["ffmpeg", "-hide_banner", "-nostdin", "-progress", "pipe:1", "-nostats", "-re", "-f", "lavfi", "-i",
            "testsrc2=size=64x48:rate=10:duration=600", "-metadata", f"title={marker}", "-f", "null", "-"]


def test_a_running_ffmpeg_holds_no_credential_and_has_no_network(monkeypatch):
    import os
    import threading
    import time
    import uuid

    from pixelflow.pipeline import ffmpeg
    from tests.fault_helpers import find_processes

    secrets = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret", "AWS_SESSION_TOKEN": "token-secret",
               "PREFECT_API_KEY": "pnu_secret", "PIXELFLOW_SECRET": "pixelflow-secret"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    marker = f"env-probe-{uuid.uuid4().hex}"
    seen: dict = {}

    def inspect():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = find_processes(marker)
            if pids:
                time.sleep(0.3)  # past unshare's exec: the process is FFmpeg itself
                pid = pids[0]
                seen["cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                seen["environ"] = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
                seen["netns"] = os.readlink(f"/proc/{pid}/ns/net")
                seen["interfaces"] = [line.split(":")[0].strip()
                                      for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]]
                os.kill(pid, 9)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=inspect, daemon=True)
    watcher.start()
    with pytest.raises(PixelFlowError):  # killed by the watcher
        ffmpeg.run_ffmpeg(_slow_ffmpeg(marker), timeout=30)
    watcher.join(5)
    assert seen, "the FFmpeg process was never seen"
    assert seen["cmdline"] == "ffmpeg"  # the sandbox execs FFmpeg: its pid and command line are FFmpeg's
    names = {entry.split("=", 1)[0] for entry in seen["environ"].split("\0") if entry}
    assert names <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "MALLOC_ARENA_MAX"}, names
    assert not any(value in seen["environ"] for value in secrets.values())
    assert "AWS_ACCESS_KEY_ID" not in names and "AWS_ENDPOINT_URL" not in names
    # on Linux, where a network namespace can be made (root, or unprivileged user namespaces)
    if ffmpeg.sandbox_prefix("auto"):
        assert seen["netns"] != os.readlink("/proc/self/ns/net")
        assert seen["interfaces"] == ["lo"]


def test_sandbox_modes():
    from pixelflow.pipeline import ffmpeg

    assert ffmpeg.sandbox_prefix("off") == []
    assert ffmpeg.sandbox_prefix("auto")[:1] in ([], ["unshare"])
    with pytest.raises(ValueError):
        ffmpeg.sandbox_prefix("sometimes")


def test_a_memory_limit_too_small_is_a_clear_error_not_a_crash(tmp_path):
    from pixelflow.pipeline import ffmpeg

    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "level+error", "-f", "lavfi", "-i",
            "testsrc2=size=1280x720:rate=30:duration=2", "-c:v", "libx264", "-preset", "ultrafast", "-f", "null", "-"]
    for limit in (64 * 1024**2, 300 * 1024**2):  # too small to load the libraries; to open the encoder
        with pytest.raises(PixelFlowError) as caught:
            ffmpeg.run_ffmpeg(args, timeout=60, memory_bytes=limit)
        assert caught.value.code is ErrorCode.MEMORY_LIMIT_EXCEEDED, caught.value
        assert caught.value.details["memory_bytes"] == limit and not caught.value.retryable
    assert ffmpeg.run_ffmpeg(args, timeout=60, memory_bytes=4 * 1024**3).returncode == 0
    clip = bm.lavfi_clip(tmp_path / "clip.mp4", seconds=1, fmt="mp4")
    with pytest.raises(PixelFlowError) as caught:  # ffprobe too: not mistaken for a file that is not media
        ffmpeg.probe(str(clip), formats=ALLOWED, memory_bytes=64 * 1024**2)
    assert caught.value.code is ErrorCode.MEMORY_LIMIT_EXCEEDED


def test_the_default_memory_limit_holds_a_4k_ladder(files):
    """The measured peak address space of the 4K ladder (six rungs, audio) stays under the default."""
    import os
    import threading
    import time

    from pixelflow.core.ffmpeg_args import ladder_encode_args
    from pixelflow.core.ladder import LadderConfig, plan_ladder
    from pixelflow.pipeline import ffmpeg
    from pixelflow.settings import PixelFlowSettings
    from tests.fault_helpers import find_processes

    source = bm.lavfi_clip(files / "4k.mp4", seconds=1, size="3840x2160", fmt="mp4")
    info = interpret_probe(ffmpeg.probe(str(source)), size=source.stat().st_size)
    config = LadderConfig(heights=(360, 480, 720, 1080, 1440, 2160))
    plan = plan_ladder(*info.video.display_size, info.video.frame_rate, config)
    dirs = [files / "4k" / r.name for r in plan] + [files / "4k" / "audio"]
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
    args = ladder_encode_args(str(source), info, plan, config, [str(d) for d in dirs[:-1]], str(dirs[-1]))
    peak = {"kib": 0}
    stop = threading.Event()

    def measure():
        while not stop.is_set():
            for pid in find_processes(str(files / "4k" / "2160p")):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmPeak:"):
                        peak["kib"] = max(peak["kib"], int(line.split()[1]))
            time.sleep(0.05)

    watcher = threading.Thread(target=measure, daemon=True)
    watcher.start()
    limit = PixelFlowSettings().ffmpeg_memory_bytes
    try:
        ffmpeg.run_ffmpeg(args, timeout=600, memory_bytes=limit)
    finally:
        stop.set()
        watcher.join(5)
    print(f"4K ladder peak address space {peak['kib'] / 1024:.0f} MiB, limit {limit / 1024**2:.0f} MiB, "
          f"{os.cpu_count()} CPUs")
    assert 0 < peak["kib"] * 1024 < limit


def test_a_stream_growing_past_max_pixels_is_stopped_as_too_large(files):
    """An MPEG-TS whose stream turns from 320x240 into 1280x720 half way: validation saw 320x240;
    the decode's ``-max_pixels`` refuses the larger frames instead of allocating them."""
    from pixelflow.core.ffmpeg_args import encode_args
    from pixelflow.core.ladder import LadderConfig, plan_ladder
    from pixelflow.pipeline import ffmpeg

    small = bm.lavfi_clip(files / "small.ts", seconds=1, size="320x240", audio=False, fmt="mpegts")
    large = bm.lavfi_clip(files / "large.ts", seconds=1, size="1280x720", audio=False, fmt="mpegts")
    grows = files / "grows.ts"
    grows.write_bytes(small.read_bytes() + large.read_bytes())
    info = interpret_probe(ffmpeg.probe(str(grows), formats=ALLOWED), size=grows.stat().st_size)
    assert (info.video.width, info.video.height) == (320, 240)
    config = LadderConfig(heights=(240,), decode_max_pixels=320 * 240)
    out = files / "grows-out"
    out.mkdir(exist_ok=True)
    args = encode_args(str(grows), info, plan_ladder(320, 240, info.video.frame_rate, config)[0], config, str(out))
    assert args[args.index("-max_pixels") + 1] == str(320 * 240)
    result = ffmpeg.run_ffmpeg(args, timeout=60)
    verdict = ffmpeg.input_damage(result.errors, result.out_time, info.duration)
    assert verdict is not None and verdict.code is ErrorCode.DIMENSIONS_TOO_LARGE and not verdict.retryable


def test_a_full_disk_during_the_encode_is_insufficient_disk():
    from pixelflow.pipeline import ffmpeg

    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "level+error", "-f", "lavfi", "-i",
            "testsrc2=size=320x240:rate=30:duration=2", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts",
            "-y", "file:/dev/full"]  # every write fails with ENOSPC
    with pytest.raises(PixelFlowError) as caught:
        ffmpeg.run_ffmpeg(args, timeout=60)
    assert caught.value.code is ErrorCode.INSUFFICIENT_DISK and caught.value.details["during"] == "encode"
    assert "No space left on device" in caught.value.message


def test_a_scratch_disk_filling_up_under_the_hls_muxer_is_insufficient_disk_not_truncated(tmp_path):
    """FFmpeg 5.1's HLS muxer truncates its segments on a full disk and exits 0 without a word: the
    full file system is what tells, not a rendition shorter than the source."""
    import subprocess as sp

    from pixelflow.pipeline import ffmpeg

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(tiny)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "level+error", "-f", "lavfi", "-i",
                "testsrc2=size=640x360:rate=30:duration=6", "-c:v", "libx264", "-preset", "ultrafast", "-f", "hls",
                "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_segment_filename", str(tiny / "seg_%05d.m4s"),
                str(tiny / "index.m3u8")]
        assert ffmpeg.run_ffmpeg(args, timeout=60).returncode == 0  # what FFmpeg itself says: nothing
        for entry in tiny.iterdir():
            entry.unlink()
        with pytest.raises(PixelFlowError) as caught:
            ffmpeg.run_ffmpeg(args, timeout=60, output_dir=str(tiny))
        assert caught.value.code is ErrorCode.INSUFFICIENT_DISK and caught.value.retryable
    finally:
        sp.run(["umount", str(tiny)], check=False)


def test_running_out_of_time_is_a_rejection_naming_its_cause():
    import time

    from pixelflow.pipeline.ffmpeg import ProcessLimits

    by_source = ProcessLimits.for_source(2.0, base=0.5, factor=0.25, started=time.time(), max_run_seconds=3600)
    with pytest.raises(PixelFlowError) as caught:
        by_source.run(_slow_ffmpeg("slow-source"))
    assert caught.value.code is ErrorCode.SOURCE_TOO_SLOW and not caught.value.retryable
    by_run = ProcessLimits.for_source(600.0, base=120, factor=20, started=time.time(), max_run_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(PixelFlowError) as caught:
        by_run.run(_slow_ffmpeg("slow-run"))
    assert caught.value.code is ErrorCode.RUN_TIME_EXCEEDED and not caught.value.retryable
    assert time.monotonic() - started < 10
    with pytest.raises(PixelFlowError) as caught:  # nothing left of the run: no process at all
        ProcessLimits(100.0, deadline=time.time() - 1, max_run_seconds=60).run(["false"])
    assert caught.value.code is ErrorCode.RUN_TIME_EXCEEDED


def test_probe_asks_only_for_the_fields_it_uses(files):
    import json

    from pixelflow.pipeline import ffmpeg

    tagged = bm.make_huge_tag(files / "huge-tag.mkv")  # a 1 MiB title
    data = ffmpeg.probe(str(tagged), formats=ALLOWED)
    assert len(json.dumps(data)) < 4096 and "AAAA" not in json.dumps(data)
    assert "tags" not in data["format"]
    info = interpret_probe(data, size=tagged.stat().st_size)
    assert (info.video.width, info.video.height, info.audio_stream_count) == (320, 240, 1)
    rotated = interpret_probe(ffmpeg.probe(str(bm.make_rotated(files / "rotated.mp4")), formats=ALLOWED))
    assert rotated.video.display_size == (360, 640)  # the display matrix is still read


def test_probe_output_is_capped_and_streams_are_counted(files):
    from pixelflow.pipeline import ffmpeg

    many = bm.make_many_streams(files / "many.mp4")
    data = ffmpeg.probe(str(many), formats=ALLOWED)
    assert interpret_probe(data).stream_count == 101
    with pytest.raises(PixelFlowError) as caught:
        validate_source(interpret_probe(data), Limits())
    assert caught.value.code is ErrorCode.TOO_MANY_STREAMS and not caught.value.retryable
    with pytest.raises(PixelFlowError) as caught:
        ffmpeg.probe(str(many), formats=ALLOWED, max_output=4096)
    assert caught.value.code is ErrorCode.METADATA_TOO_LARGE and not caught.value.retryable


def test_work_budget_is_judged_from_the_headers(files):
    from pixelflow.pipeline import ffmpeg

    path = bm.make_work_budget(files / "8k-240fps-2h.mp4")
    info = interpret_probe(ffmpeg.probe(str(path), formats=ALLOWED), size=path.stat().st_size)
    with pytest.raises(PixelFlowError) as caught:
        validate_source(info, Limits())
    assert caught.value.code is ErrorCode.WORK_BUDGET_EXCEEDED and not caught.value.retryable
    validate_source(info, Limits(max_work_pixels=1e15))  # within a larger budget, nothing else is wrong
