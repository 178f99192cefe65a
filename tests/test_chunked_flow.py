"""Chunked encoding through the real flow: a source longer than ``PIXELFLOW_CHUNK_SECONDS`` is
encoded as chunks (one task each, one decode of its range for every rung), and the published
renditions are what one pass makes: every packet's timestamps, keyframes and segment
boundaries, one init segment per rendition, the exact duration, and pictures within 0.003 SSIM
of one pass's at every cut. A killed chunk is retried alone, a later run reuses the chunks an
earlier one published, and a source damaged in a middle chunk publishes nothing."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.chunks import decode_time
from pixelflow.core.ffmpeg_args import ladder_encode_args
from pixelflow.core.hls import parse_master_playlist, parse_media_playlist
from pixelflow.core.ids import asset_id
from pixelflow.core.ladder import LadderConfig, plan_ladder
from pixelflow.core.probe import interpret_probe
from pixelflow.pipeline.ffmpeg import probe, run_ffmpeg
from tests.bad_media import mdat_range
from tests.conftest import make_clip
from tests.fault_helpers import Killer
from tests.player_helpers import player_page
from tests.test_flow_e2e import download_asset, ffmpeg_commands, ffprobe_json
from tests.test_retry import task_runs

pytestmark = pytest.mark.integration

SECONDS = 26  # four chunks of 8 s (two 4 s segments each), the last one 2 s
CHUNK_SECONDS = "8"
LADDER = "240,360"


@pytest.fixture(scope="module")
def long_clip(media_dir) -> Path:
    # 640x360 at 30 fps, its hue turning so that pictures at different times tell apart; the
    # source's own keyframes every 5 s, off the chunks' cuts (a chunk's decode starts before it)
    return make_clip(media_dir / "long-360p.mp4", seconds=SECONDS, size="640x360", vf="hue=h=t*20",
                     extra_video_args=["-g", "150"])


@pytest.fixture
def chunked(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELFLOW_LADDER", LADDER)
    monkeypatch.setenv("PIXELFLOW_CHUNK_SECONDS", CHUNK_SECONDS)
    monkeypatch.setenv("PIXELFLOW_SCRATCH_DIR", str(tmp_path / "scratch"))
    return tmp_path / "scratch"


def _upload(path: Path, bucket: str, key: str) -> str:
    s3 = s3_client()
    s3.upload_file(str(path), bucket, key)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def _one_pass(source: Path, out: Path) -> dict[str, Path]:
    """The same ladder encoded by the single-pass ladder process, rung folder by name."""
    info = interpret_probe(probe(str(source), "mov"))
    config = LadderConfig(heights=tuple(int(h) for h in LADDER.split(",")))
    plan = plan_ladder(*info.video.display_size, info.video.frame_rate, config)
    dirs = {r.name: out / r.name for r in plan}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    run_ffmpeg(ladder_encode_args(str(source), info, plan, config, [str(d) for d in dirs.values()]), timeout=600,
               sandbox="off")
    return dirs


def _joined(playlist: Path, dest: Path) -> tuple[Path, list[Path]]:
    """A rendition's init segment and segments (as its playlist names them) as one fMP4 file,
    and the segment files."""
    parsed = parse_media_playlist(playlist.read_text())
    segments = [(playlist.parent / uri).resolve() for uri, _ in parsed.segments]
    with open(dest, "wb") as out:
        for part in [(playlist.parent / parsed.init).resolve(), *segments]:
            out.write(part.read_bytes())
    return dest, segments


def _packets(path: Path) -> list[tuple[int, int, int, bool]]:
    """``(pts, dts, duration, keyframe)`` of every video packet, in the file's time base."""
    data = ffprobe_json(path, select_streams="v:0", show_entries="packet=pts,dts,duration,flags")
    return [(int(p["pts"]), int(p["dts"]), int(p["duration"]), "K" in p["flags"]) for p in data["packets"]]


def _ssim_per_frame(a: Path, b: Path, size: str, log: Path) -> list[float]:
    """SSIM of every picture of ``a`` against ``b`` scaled to ``size`` (the rung's)."""
    subprocess.run(["nice", "-n", "10", "ffmpeg", "-hide_banner", "-v", "error", "-i", str(a), "-i", str(b),
                    "-filter_complex", f"[1:v]scale={size.replace('x', ':')}:flags=bicubic,format=yuv420p[ref];"
                    f"[0:v]format=yuv420p,setpts=PTS-STARTPTS[enc];[ref]setpts=PTS-STARTPTS[r];"
                    f"[enc][r]ssim=stats_file={log}", "-f", "null", "-"], check=True)
    return [float(line.split("All:")[1].split()[0]) for line in log.read_text().splitlines()]


def _check_against_one_pass(manifest: dict, local: Path, source: Path, tmp_path: Path) -> dict[str, tuple[float, float]]:
    """Check a chunked asset downloaded to ``local`` against one pass of ``source`` (the same
    ladder, encoded here): every rendition decodes without an error, lasts the source within a
    frame, numbers its segments on from 0 with one init segment (one pass's, byte for byte) and
    no discontinuity, has one pass's packets (timestamps, durations, keyframe flags) and
    fragment decode times, keyframes aligned across the rungs, SSIM against the source within
    0.003 of one pass's around every cut and overall; the audio lasts the source.

    Returns the SSIM of the six pictures around the cuts (chunked, one pass), by rung."""
    variants = parse_master_playlist((local / "master.m3u8").read_text())
    assert [v["RESOLUTION"] for v in variants] == ["426x240", "640x360"]
    one_pass = _one_pass(source, tmp_path / "one-pass")
    source_duration = float(ffprobe_json(source)["format"]["duration"])
    frames = round(source_duration * 30)
    cuts = [round(c["start"] * 30) for c in manifest["chunks"][1:]]
    segments_count = math.ceil(source_duration / 4 - 1e-6)
    keyframes, boundary_ssim = {}, {}
    for v in variants:
        rung = Path(v["URI"]).parent.name
        playlist = local / v["URI"]
        text = playlist.read_text()
        assert "#EXT-X-DISCONTINUITY" not in text and text.count("#EXT-X-MAP") == 1 and "#EXT-X-ENDLIST" in text
        parsed = parse_media_playlist(text)
        # segment numbers continuous from 0 over the chunks; the duration the source's, within a frame
        assert [int(uri[-9:-4]) for uri, _ in parsed.segments] == list(range(segments_count))
        assert parsed.duration == pytest.approx(source_duration, abs=1 / 30)
        joined, segments = _joined(playlist, tmp_path / f"{rung}-chunked.mp4")
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-f", "null", "-"], capture_output=True,
                                 text=True)
        assert decoded.returncode == 0 and decoded.stderr.strip() == ""
        # every packet as one pass wrote it: timestamps, durations and keyframes continuous
        # through every cut, with one init segment (that of one pass, byte for byte)
        reference, _ = _joined(one_pass[rung] / "index.m3u8", tmp_path / f"{rung}-one-pass.mp4")
        packets = _packets(joined)
        assert packets == _packets(reference)
        assert (playlist.parent / parsed.init).read_bytes() == (one_pass[rung] / "init.mp4").read_bytes()
        pts = sorted(p[0] for p in packets)
        assert len({b - a for a, b in zip(pts, pts[1:])}) == 1  # no gap, no overlap anywhere
        # each segment's fragment starts where one pass's does (tfdt)
        one_pass_segments = sorted(one_pass[rung].glob("seg_*.m4s"))
        assert [decode_time(s.read_bytes()) for s in segments] == [decode_time(s.read_bytes()) for s in one_pass_segments]
        keyframes[rung] = [p[0] for p in packets if p[3]]
        # quality at the cuts: the pictures around each cut against the source, as one pass's
        chunked_ssim = _ssim_per_frame(joined, source, v["RESOLUTION"], tmp_path / f"{rung}-c.log")
        one_ssim = _ssim_per_frame(reference, source, v["RESOLUTION"], tmp_path / f"{rung}-o.log")
        assert len(chunked_ssim) == len(one_ssim) == frames
        around = [f for cut in cuts for f in range(cut - 3, cut + 3)]
        boundary_ssim[rung] = (round(sum(chunked_ssim[f] for f in around) / len(around), 4),
                               round(sum(one_ssim[f] for f in around) / len(around), 4))
        assert boundary_ssim[rung][0] >= boundary_ssim[rung][1] - 0.003
        assert sum(chunked_ssim) / len(chunked_ssim) >= sum(one_ssim) / len(one_ssim) - 0.003
    # keyframes aligned across the rungs, every 2 s (the rungs share a time base here: 30 fps)
    assert keyframes["240p"] == keyframes["360p"] and len(keyframes["360p"]) == math.ceil(source_duration / 2 - 1e-6)
    # the audio, encoded once, lasts the source
    audio = parse_media_playlist((local / manifest["audio"]["playlist"]).read_text())
    assert audio.duration == pytest.approx(source_duration, abs=0.05)
    return boundary_ssim


def test_a_long_source_is_encoded_in_chunks_that_one_pass_cannot_be_told_from(prefect_server, buckets, long_clip,
                                                                              chunked, tmp_path):
    from flows.transcode import transcode

    up, out = buckets
    etag = _upload(long_clip, up, "talks/long talk.mp4")
    state = transcode(bucket=up, key="talks/long talk.mp4", etag=etag, return_state=True)
    assert state.is_completed(), state.message
    manifest = state.result()
    aid = asset_id(up, "talks/long talk.mp4", etag)
    run = manifest["folder"]
    # the manifest records how the asset was encoded: four chunks, each its range and attempt
    assert manifest["encoding"] == "chunked"
    assert [(c["index"], c["start"], c["end"], c["first_segment"], c["attempt"], c["folder"])
            for c in manifest["chunks"]] == [(0, 0.0, 8.0, 0, 1, run), (1, 8.0, 16.0, 2, 1, run),
                                             (2, 16.0, 24.0, 4, 1, run), (3, 24.0, 26.0, 6, 1, run)]
    # one task run per chunk, each run once; the audio encoded once, for the whole file
    names = sorted(r.name for r in task_runs(state.state_details.flow_run_id))
    assert [n for n in names if n.startswith("encode-chunk")] == [f"encode-chunk-{i}" for i in range(4)]
    assert names.count("transcode-audio") == 1 and "encode-ladder" not in names
    # the chunks are the only decodes of the source's video: the audio's process maps the audio
    # alone, the poster's seeks to one picture, the storyboard is made from the 240p rendition
    reads = [c for c in ffmpeg_commands(str(state.state_details.flow_run_id)) if re.search(r"-i file:\S+/source ", c)]
    assert len([c for c in reads if "-start_number" in c]) == 4
    assert all("-start_number" in c or " -vn " in c or "-frames:v 1" in c for c in reads), reads

    local = tmp_path / "asset"
    keys = download_asset(out, f"assets/{aid}/", local)
    # one init segment per rendition: chunk 0's serves every chunk
    assert sorted(k.split(f"{aid}/", 1)[1] for k in keys if k.endswith("init.mp4")) == [
        f"{run}/240p/init.mp4", f"{run}/360p/init.mp4", f"{run}/audio/init.mp4"]
    boundary_ssim = _check_against_one_pass(manifest, local, long_clip, tmp_path)
    print("SSIM of the 6 pictures around each cut against the source (chunked, one pass):", boundary_ssim)
    stored = json.loads((local / "manifest.json").read_text())
    assert stored["chunks"] == manifest["chunks"] and stored["status"] == "ready"


def test_a_killed_chunk_is_retried_alone_and_a_later_run_reuses_the_published_chunks(
        prefect_server, buckets, long_clip, chunked, monkeypatch):
    from flows.transcode import transcode

    up, out = buckets

    def run_killing(key: str, seek: str):
        """Transcode the clip as ``key`` while the FFmpeg process of the chunk starting at ``seek``
        is killed part way through."""
        etag = _upload(long_clip, up, key)
        killer = Killer(str(chunked), f"-ss {seek}", after=0.3)
        killer.start()
        state = transcode(bucket=up, key=key, etag=etag, return_state=True)
        killer.join(5)
        assert killer.killed
        return state, etag

    # chunk 1's process killed: its task alone runs again
    state, _ = run_killing("talks/killed.mp4", "8.000000")
    assert state.is_completed(), state.message
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["encode-chunk-1"].run_count == 2
    assert all(runs[f"encode-chunk-{i}"].run_count == 1 for i in (0, 2, 3))

    # Without retries, chunk 2's process killed fails the run; a later run of the upload
    # encodes chunk 2 alone and takes the others from the first run's persisted results.
    monkeypatch.setenv("PIXELFLOW_TASK_RETRIES", "0")
    key = "talks/retried.mp4"
    failed, etag = run_killing(key, "16.000000")
    assert failed.is_failed()
    aid = asset_id(up, key, etag)
    assert "Contents" not in s3_client().list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/manifest.json")
    state = transcode(bucket=up, key=key, etag=etag, return_state=True)
    assert state.is_completed(), state.message
    encoded = sorted(r.name for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("encode-chunk"))
    assert encoded == ["encode-chunk-2"]
    chunks = state.result()["chunks"]
    first_folder = {c["folder"] for c in chunks if c["index"] != 2}
    assert len(first_folder) == 1 and first_folder != {state.result()["folder"]}
    assert [c["folder"] for c in chunks if c["index"] == 2] == [state.result()["folder"]]
    # the stitched playlist names the reused segments where the first run put them, and plays
    listed = {o["Key"].split(f"{aid}/", 1)[1]: o["Size"]
              for o in s3_client().list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/")["Contents"]}
    for rendition in state.result()["renditions"]:
        assert all(path in listed for path in rendition["files"])
        assert rendition["segments"] == 7


def _damaged_in_the_middle(source: Path, dest: Path) -> Path:
    """``source`` without its audio, its coded pictures overwritten with noise at the middle of
    the file (about 13 s in: the second chunk of four)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-map", "0:v", "-c", "copy", str(dest)],
                   check=True)
    return _noise_in_the_middle(dest, 8192, seed=11)


def _noise_in_the_middle(path: Path, count: int, seed: int) -> Path:
    """``path`` (an MP4) with ``count`` bytes at the middle of its media data overwritten with noise."""
    data = bytearray(path.read_bytes())
    start, end = mdat_range(bytes(data))
    noise = random.Random(seed)
    middle = start + (end - start) // 2
    for i in range(middle, middle + count):
        data[i] = noise.randrange(256)
    path.write_bytes(bytes(data))
    return path


def test_a_source_damaged_in_a_middle_chunk_is_rejected_and_nothing_is_published(prefect_server, buckets, long_clip,
                                                                                  chunked, tmp_path):
    from flows.transcode import transcode

    up, out = buckets
    damaged = _damaged_in_the_middle(long_clip, tmp_path / "damaged.mp4")
    etag = _upload(damaged, up, "talks/damaged.mp4")
    state = transcode(bucket=up, key="talks/damaged.mp4", etag=etag, return_state=True)
    assert state.is_failed() and state.message.startswith("corrupt_stream"), state.message
    aid = asset_id(up, "talks/damaged.mp4", etag)
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["encode-chunk-1"].state.is_failed() and runs["encode-chunk-1"].run_count == 1  # never retried
    # nothing of the asset is in the output bucket (what other chunks made was removed); the
    # rejection is recorded
    assert "Contents" not in s3_client().list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/")
    record = json.loads(s3_client().get_object(Bucket=out, Key=f"records/{aid}/error.json")["Body"].read())
    assert record["code"] == "corrupt_stream"


def _play_to_the_end(browser, asset: str, rate: float, timeout: float) -> tuple[dict, float]:
    """Play ``asset`` in Chromium (the player page: hls.js) from its start to its end at ``rate``
    times its speed, through the player server; returns what happened once playing
    (``waiting`` events, hls.js errors, fatal or not, the time ranges buffered at the end) and
    the duration the video element read."""
    with player_page(browser, asset) as (page, errors):
        page.wait_for_selector("body[data-state=playing]", timeout=20_000)
        page.evaluate("""rate => {
            const video = document.getElementById('video');
            window.playback = {waiting: [], hlsErrors: [], ended: false};
            video.addEventListener('waiting', () => window.playback.waiting.push(video.currentTime));
            video.addEventListener('ended', () => {
                window.playback.ended = true;
                window.playback.buffered = Array.from({length: video.buffered.length},
                                                      (_, i) => [video.buffered.start(i), video.buffered.end(i)]);
            });
            window.pixelflow.hls.on(window.Hls.Events.ERROR, (_e, data) => window.playback.hlsErrors.push(data.details));
            video.playbackRate = rate;
        }""", rate)
        page.wait_for_function("window.playback.ended", timeout=timeout * 1000)
        playback = page.evaluate("window.playback")
        duration = page.eval_on_selector("#video", "v => v.duration")
    assert not errors, errors
    return playback, duration


def test_a_source_whose_audio_is_damaged_is_rejected_by_the_audios_decode(prefect_server, buckets, long_clip,
                                                                            chunked, tmp_path):
    """The chunks decode the video alone: the audio's own process vouches for the audio."""
    from flows.transcode import transcode

    up, out = buckets
    tone = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=duration={SECONDS}:sample_rate=48000",
                    "-c:a", "aac", "-movflags", "+faststart", str(tone)], check=True)
    _noise_in_the_middle(tone, 2048, seed=7)
    damaged = tmp_path / "damaged-audio.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(long_clip), "-i", str(tone), "-map", "0:v", "-map", "1:a",
                    "-c", "copy", str(damaged)], check=True)  # the damaged AAC frames copied as they are
    etag = _upload(damaged, up, "talks/damaged-audio.mp4")
    state = transcode(bucket=up, key="talks/damaged-audio.mp4", etag=etag, return_state=True)
    assert state.is_failed() and state.message.startswith("corrupt_stream"), state.message
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["transcode-audio"].state.is_failed() and runs["transcode-audio"].run_count == 1
    aid = asset_id(up, "talks/damaged-audio.mp4", etag)
    assert "Contents" not in s3_client().list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/")


@pytest.mark.browser
def test_a_chunked_asset_plays_through_every_cut_in_chromium_without_a_stall(prefect_server, buckets, media_dir,
                                                                             browser, monkeypatch, tmp_path):
    """hls.js in Chromium plays a chunked asset (four chunks of two 2 s segments, two rungs) from
    its start to its end at twice the speed: no ``waiting`` once playing, no hls.js error, and
    the end reached."""
    from flows.transcode import transcode

    for name, value in {"PIXELFLOW_LADDER": LADDER, "PIXELFLOW_PRESET": "ultrafast", "PIXELFLOW_SEGMENT_SECONDS": "2",
                        "PIXELFLOW_CHUNK_SECONDS": "4", "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "chunked-play.mp4", seconds=16, size="640x360", vf="hue=h=t*20")
    up, _ = buckets
    etag = _upload(clip, up, "talks/play.mp4")
    manifest = transcode(bucket=up, key="talks/play.mp4", etag=etag)
    assert [c["start"] for c in manifest["chunks"]] == [0.0, 4.0, 8.0, 12.0]
    playback, duration = _play_to_the_end(browser, manifest["asset_id"], rate=2, timeout=60)
    assert playback["waiting"] == [] and playback["hlsErrors"] == [], playback
    assert duration == pytest.approx(16.0, abs=0.1)
    # what the browser buffered is one range, start to end: no hole at any cut
    assert len(playback["buffered"]) == 1 and playback["buffered"][0][0] < 0.1 <= 16.0 <= playback["buffered"][0][1]


@pytest.mark.browser
@pytest.mark.skipif(os.environ.get("PIXELFLOW_ACCEPTANCE") != "1",
                    reason="the issue's 6-minute acceptance run (several minutes): PIXELFLOW_ACCEPTANCE=1")
def test_six_minutes_in_sixty_second_chunks_publish_an_asset_one_pass_cannot_be_told_from(
        prefect_server, buckets, media_dir, browser, monkeypatch, tmp_path):
    """Issue 17's acceptance: a 6-minute source with PIXELFLOW_CHUNK_SECONDS=60 publishes an asset
    from 6 chunks whose renditions decode without an error, last the source, keep their
    keyframes aligned, stay within 0.003 SSIM of one pass (at the cuts and overall) and play in
    Chromium through every cut without a stall (at twice the speed: at four times, this loaded
    2-core machine's player server fell behind once, the buffered media whole all the same)."""
    from flows.transcode import transcode

    for name, value in {"PIXELFLOW_LADDER": LADDER, "PIXELFLOW_CHUNK_SECONDS": "60",
                        "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "six-minutes.mp4", seconds=360, size="640x360", vf="hue=h=t*20",
                     extra_video_args=["-g", "150"])
    up, out = buckets
    etag = _upload(clip, up, "talks/six minutes.mp4")
    started = time.monotonic()
    manifest = transcode(bucket=up, key="talks/six minutes.mp4", etag=etag)
    print(f"published in {time.monotonic() - started:.1f} s")
    assert [(c["start"], c["end"]) for c in manifest["chunks"]] == [(60.0 * k, 60.0 * (k + 1)) for k in range(6)]
    local = tmp_path / "asset"
    download_asset(out, f"assets/{manifest['asset_id']}/", local)
    print("SSIM of the 6 pictures around each cut (chunked, one pass):",
          _check_against_one_pass(manifest, local, clip, tmp_path))
    playback, duration = _play_to_the_end(browser, manifest["asset_id"], rate=2, timeout=400)
    assert playback["waiting"] == [] and playback["hlsErrors"] == [], playback
    assert duration == pytest.approx(360.0, abs=0.1)
    assert len(playback["buffered"]) == 1 and playback["buffered"][0][0] < 0.1 <= 360.0 <= playback["buffered"][0][1]
