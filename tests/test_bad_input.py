"""Bad input never breaks the pipeline: every upload ends published or recorded as rejected.

The corpus (:mod:`tests.bad_media`) is generated here with FFmpeg and Python and run through the
real ``transcode`` flow on a real Prefect server, with a moto S3 server behind it. A rejection
must carry its exact code, fail the flow run with ``"<code>: <message>"``, keep the source under
``quarantine/<asset_id>/`` with ``error.json``, retry nothing and publish nothing. Unusual but
valid sources must publish playable renditions of the right size, orientation and aspect.
Hostile uploads (playlists, the AVI GAB2 trick) must never open the secret local file or reach
the network. Scratch space is empty after every run.

To stay fast, each group of cases (rejections, valid sources, hostile keys) runs as one batch of
concurrent flow runs in a module-scoped fixture; the parametrized tests then check each case's
outcome, so every case still passes or fails on its own.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist, parse_media_playlist
from pixelflow.core.ids import asset_id
from pixelflow.errors import PixelFlowError
from tests import bad_media as bm

pytestmark = pytest.mark.integration


# --- helpers ---------------------------------------------------------------------------------

def ffprobe_json(*args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def upload(path: Path, bucket: str, key: str) -> str:
    s3 = s3_client()
    s3.upload_file(str(path), bucket, key)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def all_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    s3 = s3_client()
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def flow_run_and_tasks(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return run, tasks


@dataclass
class Outcome:
    """What one upload became."""

    name: str
    key: str
    path: Path
    etag: str
    asset: str
    manifest: dict[str, Any] | None = None
    error: PixelFlowError | None = None
    crash: BaseException | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    upload_bucket: str
    output_bucket: str
    scratch: Path
    outcomes: dict[str, Outcome]

    def leftovers(self, asset: str | None = None) -> list[str]:
        """Scratch entries left behind (by one asset's runs, or by any)."""
        return sorted(p.name for p in self.scratch.iterdir() if asset is None or p.name.startswith(asset))


def run_batch(tmp_path_factory, cases: list[tuple[str, str, Path]], workers: int, env: dict[str, str] | None = None) -> Batch:
    """Upload every ``(name, key, path)`` and run the flow for each, ``workers`` at a time."""
    from flows.transcode import transcode

    suffix = uuid.uuid4().hex[:8]
    up, out = f"bad-up-{suffix}", f"bad-out-{suffix}"
    s3 = s3_client()
    s3.create_bucket(Bucket=up)
    s3.create_bucket(Bucket=out)
    scratch = tmp_path_factory.mktemp("scratch")
    outcomes = {}
    for name, key, path in cases:
        etag = upload(path, up, key)
        outcomes[name] = Outcome(name, key, path, etag, asset_id(up, key, etag))

    def run(outcome: Outcome) -> None:
        started = time.monotonic()
        try:
            outcome.manifest = transcode(bucket=up, key=outcome.key, etag=outcome.etag)
        except PixelFlowError as error:
            outcome.error = error
        except BaseException as exc:  # noqa: BLE001 - reported by the case's test
            outcome.crash = exc
        outcome.seconds = time.monotonic() - started

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELFLOW_UPLOAD_BUCKET", up)
        patch.setenv("PIXELFLOW_OUTPUT_BUCKET", out)
        patch.setenv("PIXELFLOW_SCRATCH_DIR", str(scratch))
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, outcomes.values()))
    print(f"{len(outcomes)} flow runs, {workers} at a time, in {time.monotonic() - started:.1f} s:",
          ", ".join(f"{o.name} {o.seconds:.1f} s" for o in outcomes.values()))
    return Batch(up, out, scratch, outcomes)


def check_rejected(batch: Batch, outcome: Outcome) -> dict[str, Any]:
    """The rejection contract; returns the ``error.json`` record."""
    assert outcome.crash is None, f"the flow crashed: {outcome.crash!r}"
    assert outcome.manifest is None, "a bad upload was published"
    error = outcome.error
    assert error is not None
    s3 = s3_client()
    assert s3.list_objects_v2(Bucket=batch.output_bucket, Prefix=f"assets/{outcome.asset}/").get("KeyCount", 0) == 0
    # The record is in the output bucket's records, where uploaders cannot write.
    record = json.loads(s3.get_object(Bucket=batch.output_bucket, Key=f"records/{outcome.asset}/error.json")["Body"].read())
    assert record["code"] == error.code.value and record["message"] == error.message
    assert record["status"] == ("rejected" if error.is_rejection else "failed")
    assert record["source"]["key"] == outcome.key and record["asset_id"] == outcome.asset
    size = outcome.path.stat().st_size
    assert s3.head_object(Bucket=batch.upload_bucket, Key=outcome.key)["ContentLength"] == size  # kept where it was
    if error.is_rejection:  # a rejected source is also copied aside; a failed run's source is fine as it is
        assert s3.head_object(Bucket=batch.upload_bucket, Key=f"quarantine/{outcome.asset}/source")["ContentLength"] == size
    else:
        assert record["kept_at"] is None
    text = json.dumps(record)
    assert str(batch.scratch) not in text and "file:/" not in text, record  # no local paths in the record
    assert batch.leftovers(outcome.asset) == []
    run, tasks = flow_run_and_tasks(record["flow_run_id"])
    assert run.state.is_failed()
    assert run.state.message == f"{error.code.value}: {error.message}"
    assert all(t.run_count <= 1 for t in tasks), [(t.name, t.run_count) for t in tasks]  # never retried
    return record


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-media")


@pytest.fixture(scope="module")
def secret(corpus):
    holder = bm.SecretFile(corpus / "private")
    canary = bm.TcpCanary()
    yield holder, canary
    holder.close()
    canary.close()


# --- rejections ---------------------------------------------------------------------------------

REJECTIONS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty", bm.make_empty, "empty_file"),
    ("text", bm.make_text, "not_media"),
    ("random", bm.make_random, "not_media"),
    ("png", bm.make_png, "not_media"),
    ("jpeg", bm.make_jpeg, "not_media"),
    ("gif", bm.make_gif, "unsupported_container"),
    ("y4m", bm.make_y4m, "unsupported_container"),
    ("subtitles-only", bm.make_subtitles_only, "no_video_stream"),
    ("wma-only", bm.make_wma_only, "unsupported_codec"),
    ("truncated-m4a", bm.make_truncated_m4a, "truncated"),
    ("corrupt-m4a", bm.make_corrupt_m4a, "corrupt_stream"),
    ("ffv1", bm.make_ffv1, "unsupported_codec"),
    ("tiny", bm.make_tiny, "dimensions_too_small"),
    ("huge-h264-sps", bm.make_huge_dimensions_h264, "dimensions_too_large"),
    ("huge-mpeg2", bm.make_huge_dimensions_mpeg2, "dimensions_too_large"),
    ("zero-duration", bm.make_zero_duration, "invalid_duration"),
    ("negative-duration", bm.make_negative_duration, "invalid_duration"),
    ("ten-hours-mp4", bm.make_long_duration_mp4, "too_long"),
    ("ten-hours-mkv", bm.make_long_duration_mkv, "too_long"),
    ("fps-1000", bm.make_fps_1000, "frame_rate_out_of_range"),
    ("fps-zero", bm.make_fps_zero, "frame_rate_out_of_range"),
    ("fps-tiny", bm.make_fps_tiny, "frame_rate_out_of_range"),
    ("truncated-mdat", bm.make_truncated_mdat, "truncated"),
    ("truncated-no-moov", bm.make_truncated_no_moov, "truncated"),
    ("truncated-mkv", bm.make_truncated_mkv, "truncated"),
    ("truncated-avi", bm.make_truncated_avi, "truncated"),
    ("corrupt-mp4", bm.make_corrupt_mp4, "corrupt_stream"),
    ("corrupt-ts", bm.make_corrupt_ts, "corrupt_stream"),
    ("work-budget", bm.make_work_budget, "work_budget_exceeded"),
    ("many-streams", bm.make_many_streams, "too_many_streams"),
]

#: Uploads that try to make FFmpeg read a local file or a URL: all ``unsupported_container``.
HOSTILE = [
    ("hls-playlist", bm.make_hls),
    ("ffconcat", bm.make_ffconcat),
    ("sdp", bm.make_sdp),
    ("avi-gab2-hls", bm.make_gab2_hls),
    ("avi-gab2-hls-only", lambda path, s, c: bm.make_gab2_hls(path, s, c, keep_video=False)),
]


@pytest.fixture(scope="module")
def rejections(prefect_server, moto_server, tmp_path_factory, corpus, secret) -> Batch:
    holder, canary = secret
    cases = [(name, f"uploads/{name}.mp4", make(corpus / f"{name}.mp4")) for name, make, _ in REJECTIONS]
    cases += [(name, f"uploads/{name}.mp4", make(corpus / f"{name}.mp4", holder, canary)) for name, make in HOSTILE]
    return run_batch(tmp_path_factory, cases, workers=6)


@pytest.mark.parametrize("name,code", [(r[0], r[2]) for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_bad_source_is_rejected_with_its_code(rejections, name, code):
    outcome = rejections.outcomes[name]
    check_rejected(rejections, outcome)
    assert outcome.error.code.value == code, f"{name}: {outcome.error}"
    assert not outcome.error.retryable


@pytest.mark.parametrize("name", [h[0] for h in HOSTILE])
def test_playlists_never_read_local_files_or_the_network(rejections, secret, name):
    holder, canary = secret
    outcome = rejections.outcomes[name]
    check_rejected(rejections, outcome)
    assert outcome.error.code.value == "unsupported_container", outcome.error
    assert not holder.opened.is_set(), "an FFmpeg process opened the secret file"
    assert canary.connections == 0, "an FFmpeg process connected to the network"
    token = holder.token.encode()
    objects = {**all_objects(rejections.output_bucket), **all_objects(rejections.upload_bucket, "quarantine/")}
    assert [key for key, body in objects.items() if token in body] == []


def test_every_rejection_left_the_output_bucket_and_scratch_empty(rejections):
    # nothing but each rejection's record (under records/, never served)
    keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket=rejections.output_bucket).get("Contents", [])]
    assert sorted(keys) == sorted(f"records/{o.asset}/error.json" for o in rejections.outcomes.values())
    assert rejections.leftovers() == []


def test_size_limit_is_a_setting(prefect_server, moto_server, tmp_path_factory, corpus):
    path = bm.make_no_audio(corpus / "over-limit.mp4")
    batch = run_batch(tmp_path_factory, [("big", "big.mp4", path)], workers=1,
                      env={"PIXELFLOW_MAX_SOURCE_BYTES": "1000"})
    record = check_rejected(batch, batch.outcomes["big"])
    assert record["code"] == "too_large"
    assert record["details"] == {"size": path.stat().st_size, "max_bytes": 1000}


def test_work_budget_and_stream_limit_are_judged_before_any_decode(rejections):
    # an 8K 240 fps file claiming two hours, and one with 101 streams: rejected by validation,
    # from the headers; no FFmpeg decode ever started for them
    for name in ("work-budget", "many-streams"):
        record = check_rejected(rejections, rejections.outcomes[name])
        _, tasks = flow_run_and_tasks(record["flow_run_id"])
        names = {t.name for t in tasks}
        assert "validate" in names and not [n for n in names if n.startswith(("encode", "transcode", "poster"))], names
    record = json.loads(s3_client().get_object(Bucket=rejections.output_bucket, Key=(
        f"records/{rejections.outcomes['work-budget'].asset}/error.json"))["Body"].read())
    assert record["details"]["work_pixels"] > record["details"]["max_work_pixels"] == 3840 * 2160 * 60 * 6 * 3600


def test_an_upload_that_can_never_fit_in_scratch_is_rejected_before_download(prefect_server, moto_server,
                                                                              tmp_path_factory, corpus):
    path = bm.make_no_audio(corpus / "never-fits.mp4")
    size = path.stat().st_size
    # workers with twice the upload's size of scratch space: it needs 2.5 times
    batch = run_batch(tmp_path_factory, [("never-fits", "never-fits.mp4", path)], workers=1,
                      env={"PIXELFLOW_SCRATCH_BYTES": str(2 * size)})
    record = check_rejected(batch, batch.outcomes["never-fits"])  # a rejection, never retried
    assert record["code"] == "too_large" and record["status"] == "rejected" and not record["retryable"]
    assert record["details"]["scratch_bytes"] == 2 * size and record["details"]["max_bytes"] == int(2 * size / 2.5)
    _, tasks = flow_run_and_tasks(record["flow_run_id"])
    assert "download" not in {t.name for t in tasks}


def test_rejection_event_reaches_the_prefect_server(rejections, prefect_server):
    outcome = rejections.outcomes["text"]
    resource = f"pixelflow.asset.{outcome.asset}"
    body = {"filter": {"event": {"name": ["pixelflow.asset.errored"]}, "resource": {"id": [resource]},
                       "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}, "limit": 5}
    deadline = time.monotonic() + 20
    events: list[dict] = []
    while time.monotonic() < deadline and not events:
        reply = httpx.post(f"{prefect_server}/events/filter", json=body, timeout=10)
        reply.raise_for_status()
        events = reply.json()["events"]
        if not events:
            time.sleep(0.5)
    assert len(events) == 1, events
    assert events[0]["payload"]["code"] == "not_media" and events[0]["payload"]["status"] == "rejected"
    assert events[0]["resource"]["prefect.resource.id"] == resource


# --- unusual but valid ------------------------------------------------------------------------------

def rendition_file(batch: Batch, outcome: Outcome, name: str, dest: Path) -> Path:
    """A rendition's init segment and media segments joined into one playable file."""
    s3 = s3_client()
    manifest = json.loads(s3.get_object(Bucket=batch.output_bucket, Key=f"assets/{outcome.asset}/manifest.json")["Body"].read())
    (published,) = [r for r in manifest["renditions"] + [manifest["audio"]] if r and r["name"] == name]
    prefix = f"assets/{outcome.asset}/{published['playlist'].rsplit('/', 1)[0]}/"
    playlist = parse_media_playlist(s3.get_object(Bucket=batch.output_bucket, Key=f"{prefix}index.m3u8")["Body"].read().decode())
    joined = dest / f"{outcome.name}-{name}.mp4"
    with open(joined, "wb") as target:
        for part in ["init.mp4", *[uri for uri, _ in playlist.segments]]:
            target.write(s3.get_object(Bucket=batch.output_bucket, Key=f"{prefix}{part}")["Body"].read())
    return joined


def decodes_cleanly(path: Path) -> None:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def loudness(path: Path, chain: str) -> float:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", f"{chain},volumedetect",
                           "-f", "null", "-"], capture_output=True, text=True)
    line = next(text for text in done.stderr.splitlines() if "mean_volume" in text)
    return float(line.split("mean_volume:")[1].split("dB")[0])


#: name, maker, expected video renditions (name, width, height, fps), audio expected. The ladder
#: is 360,480,720: no source here reaches 1080p.
VALID = [
    ("portrait-rotated", bm.make_rotated, [("360p", 360, 640, 30)], True),
    ("odd-853x479", bm.make_odd_size, [("360p", 640, 360, 30)], True),
    ("four-by-three", bm.make_four_by_three, [("360p", 480, 360, 30), ("480p", 640, 480, 30)], True),
    ("anamorphic", bm.make_anamorphic, [("360p", 640, 360, 30)], True),
    ("vfr", bm.make_vfr, [("240p", 320, 240, 24)], True),
    ("ten-bit", bm.make_ten_bit, [("240p", 320, 240, 30)], True),
    ("hdr-pq-hevc", bm.make_hdr_pq, [("240p", 320, 240, 30)], True),
    ("hdr-hlg-transfer-only", bm.make_hdr_hlg_transfer_only, [("240p", 320, 240, 30)], True),
    ("interlaced", bm.make_interlaced, [("240p", 320, 240, 25)], True),
    ("no-audio", bm.make_no_audio, [("240p", 320, 240, 30)], False),
    ("two-audio-tracks", bm.make_multi_audio, [("240p", 320, 240, 30)], True),
    ("sixty-fps", bm.make_sixty_fps, [("360p", 640, 360, 30), ("480p", 854, 480, 30), ("720p", 1280, 720, 60)], True),
    ("live-webm", bm.make_live_webm, [("240p", 320, 240, 30)], False),
    ("ts-cut-mid-gop", bm.make_ts_cut_mid_gop, [("240p", 320, 240, 30)], True),
]


@pytest.fixture(scope="module")
def valid(prefect_server, moto_server, tmp_path_factory, corpus) -> Batch:
    cases = [(name, f"phone/{name}.mp4", make(corpus / f"{name}.src")) for name, make, _, _ in VALID]
    return run_batch(tmp_path_factory, cases, workers=3, env={"PIXELFLOW_LADDER": "360,480,720"})


@pytest.mark.parametrize("name,expected,has_audio", [v[0:1] + v[2:] for v in VALID], ids=[v[0] for v in VALID])
def test_unusual_valid_source_is_published(valid, tmp_path, name, expected, has_audio):
    outcome = valid.outcomes[name]
    assert outcome.crash is None and outcome.error is None, outcome.error or outcome.crash
    manifest = outcome.manifest
    assert manifest["status"] == "ready" and manifest["asset_id"] == outcome.asset
    assert valid.leftovers(outcome.asset) == []
    master = s3_client().get_object(Bucket=valid.output_bucket, Key=f"assets/{outcome.asset}/master.m3u8")["Body"].read().decode()
    variants = parse_master_playlist(master)
    assert [(r["name"], r["width"], r["height"]) for r in manifest["renditions"]] == [e[:3] for e in expected]
    assert [v["RESOLUTION"] for v in variants] == [f"{w}x{h}" for _, w, h, _ in expected]
    assert [round(float(v["FRAME-RATE"])) for v in variants] == [e[3] for e in expected]
    assert ("TYPE=AUDIO" in master) is has_audio and (manifest["audio"] is not None) is has_audio
    for rung, width, height, fps in expected:
        joined = rendition_file(valid, outcome, rung, tmp_path)
        decodes_cleanly(joined)
        stream = ffprobe_json("-show_streams", "-select_streams", "v:0", str(joined))["streams"][0]
        assert (stream["width"], stream["height"]) == (width, height)
        assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
        assert stream["pix_fmt"] == "yuv420p" and stream["codec_name"] == "h264"
        assert not stream.get("side_data_list"), stream.get("side_data_list")  # no rotation left to apply
        assert stream.get("field_order", "progressive") in ("progressive", "unknown")
        num, den = stream["avg_frame_rate"].split("/")
        assert round(int(num) / int(den)) == fps
        if name.startswith("hdr"):
            assert stream.get("color_transfer") == "bt709" and stream.get("color_primaries") == "bt709"
            stats = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-vf",
                                    "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-", "-frames:v", "1",
                                    "-f", "null", "-"], capture_output=True, text=True, check=True).stdout
            assert 40 < float(stats.split("YAVG=")[1].split()[0]) < 200, stats  # tone mapped: not black, not blown out
    if name == "two-audio-tracks":
        audio = rendition_file(valid, outcome, "audio", tmp_path)
        highs = loudness(audio, "highpass=f=800,highpass=f=800,highpass=f=800")
        lows = loudness(audio, "lowpass=f=600,lowpass=f=600,lowpass=f=600")
        assert highs > lows + 10, (highs, lows)  # the default track (1000 Hz), not the first one (440 Hz)


def test_valid_runs_left_scratch_empty(valid):
    assert valid.leftovers() == []


# --- hostile object keys ------------------------------------------------------------------------------

KEYS = {
    "spaces": "with spaces/my holiday (final) v2.mp4",
    "unicode": "unicode/vidéo-日本語-🎬.mp4",
    "plus-percent": "plus+and%25percent%2F&amp;=?.mp4",
    "dot-dot": "../../etc/passwd.mp4",
    "dash": "-i file:secret.mp4",
    "http-url": "http://evil.example/x.mp4",
    "file-url": "file:///etc/passwd",
    "1024-bytes": "long/" + "a" * 1015 + ".mp4",
}


@pytest.fixture(scope="module")
def hostile_keys(prefect_server, moto_server, tmp_path_factory, corpus) -> Batch:
    clip = bm.lavfi_clip(corpus / "small.mp4", seconds=1, size="160x120", fmt="mp4")
    return run_batch(tmp_path_factory, [(name, key, clip) for name, key in KEYS.items()], workers=4)


@pytest.mark.parametrize("name", list(KEYS))
def test_hostile_keys_are_published_as_plain_names(hostile_keys, name):
    outcome = hostile_keys.outcomes[name]
    assert len(outcome.key.encode()) <= 1024
    assert outcome.crash is None and outcome.error is None, outcome.error or outcome.crash
    assert outcome.manifest["status"] == "ready" and outcome.manifest["source"]["key"] == outcome.key
    published = set(all_objects(hostile_keys.output_bucket, f"assets/{outcome.asset}/"))
    assert {f"assets/{outcome.asset}/manifest.json", f"assets/{outcome.asset}/master.m3u8"} <= published
    assert hostile_keys.leftovers(outcome.asset) == []


def test_hostile_keys_only_ever_name_asset_folders(hostile_keys):
    keys = set(all_objects(hostile_keys.output_bucket))
    assets = {o.asset for o in hostile_keys.outcomes.values()}
    assert {key.split("/")[1] for key in keys} == assets and all(key.startswith("assets/") for key in keys)


# --- FFmpeg hardening, piece by piece ---------------------------------------------------------------------

def test_run_ffmpeg_is_killed_at_its_wall_clock_limit():
    from pixelflow.pipeline.ffmpeg import run_ffmpeg

    args = ["ffmpeg", "-hide_banner", "-nostdin", "-progress", "pipe:1", "-nostats", "-re", "-f", "lavfi", "-i",
            "testsrc2=size=64x48:rate=10:duration=600", "-f", "null", "-"]
    started = time.monotonic()
    with pytest.raises(PixelFlowError) as caught:
        run_ffmpeg(args, timeout=1.5)
    assert caught.value.code.value == "transcode_timeout" and caught.value.retryable
    assert time.monotonic() - started < 10


def test_free_disk_is_checked_before_download(prefect_server, buckets, corpus, tmp_path):
    from pixelflow.core.upload import Upload
    from tasks.source import download_source

    up, _ = buckets
    clip = bm.make_no_audio(corpus / "disk.mp4")
    etag = upload(clip, up, "clip.mp4")
    source = Upload(up, "clip.mp4", etag, None, clip.stat().st_size)
    with pytest.raises(PixelFlowError) as caught:
        download_source.with_options(retries=0)(source, tmp_path / "dl" / "source", headroom=1e15)
    assert caught.value.code.value == "insufficient_disk"
    assert list((tmp_path / "dl").iterdir()) == []
