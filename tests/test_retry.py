"""Retries redo only what failed: a killed ladder process (the one FFmpeg process encoding every
rung) costs one retry of each rung, each alone, and never a second run; a killed encoder of a
rung retrying alone costs another retry of that rung only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ids import asset_id
from pixelflow.core.layout import manifest_objects
from tests.conftest import make_clip
from tests.fault_helpers import Killer

pytestmark = pytest.mark.integration


def task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)


def _transcode_killing(buckets, media_dir, tmp_path, monkeypatch, key: str, *kills: tuple[str, ...], retries: int = 1):
    """Transcode a 6 s 720p clip (rungs 360p-720p, ``retries`` task retries) while, for each of
    ``kills``, the first FFmpeg process whose command line holds its fragments is killed part
    way through.

    Returns the flow run's final state, its task runs, and a function reading the published
    playlist of a rung.
    """
    from flows.transcode import transcode

    up, out = buckets
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("PIXELFLOW_SCRATCH_DIR", str(scratch))
    monkeypatch.setenv("PIXELFLOW_LADDER", "360,480,720")
    monkeypatch.setenv("PIXELFLOW_TASK_RETRIES", str(retries))
    clip = make_clip(media_dir / "retry-720p.mp4", seconds=6, size="1280x720")
    s3 = s3_client()
    s3.upload_file(str(clip), up, key)
    etag = s3.head_object(Bucket=up, Key=key)["ETag"]

    killers = [Killer(str(scratch), *fragments, after=0.3) for fragments in kills]
    for killer in killers:
        killer.start()
    state = transcode(bucket=up, key=key, etag=etag, return_state=True)
    for killer, fragments in zip(killers, kills):
        killer.join(5)
        assert killer.killed, f"no process with {fragments} was seen"
    assert state.is_completed(), state.message
    assert [r["name"] for r in state.result()["renditions"]] == ["360p", "480p", "720p"]
    assert not any(scratch.iterdir()) if scratch.exists() else True
    aid = asset_id(up, key, etag)

    published = {r["name"]: r["playlist"] for r in state.result()["renditions"] + [state.result()["audio"]]}

    def playlist(rung: str) -> str:
        return s3.get_object(Bucket=out, Key=f"assets/{aid}/{published[rung]}")["Body"].read().decode()

    return state, task_runs(state.state_details.flow_run_id), playlist


LADDER_PROCESS = ("/360p/index.m3u8", "/720p/index.m3u8")  # every rung's output: the ladder process
LONE_720P = ("/720p/index.m3u8", "-filter:v")  # one rung, scaled from the source itself: a lone encode


def test_killed_encoder_is_retried_alone_and_the_asset_completes(prefect_server, buckets, media_dir, tmp_path, monkeypatch):
    # Kill the ladder process, then the 720p encoder retrying alone, each part way through.
    state, runs, playlist = _transcode_killing(buckets, media_dir, tmp_path, monkeypatch, "retry.mp4",
                                               LADDER_PROCESS, LONE_720P, retries=2)
    by_name = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    # the 720p task ran three times (its share of the killed ladder process, the killed lone
    # encode, then its retry from the source); every other rung twice, the ladder process once
    assert by_name["transcode-720p"][0].run_count == 3
    assert all(by_name[f"transcode-{r}"][0].run_count == 2 for r in ("360p", "480p"))
    assert [r.run_count for r in runs if r.name == "encode-ladder"] == [1]
    # and the published 720p rendition is whole
    text = playlist("720p")
    assert text.count("#EXTINF") == 2 and "#EXT-X-ENDLIST" in text


def test_killed_ladder_process_is_retried_rung_by_rung_and_the_asset_completes(prefect_server, buckets, media_dir,
                                                                                 tmp_path, monkeypatch):
    # Kill the one FFmpeg process encoding every rung, part way through.
    state, runs, playlist = _transcode_killing(buckets, media_dir, tmp_path, monkeypatch, "retry-single.mp4",
                                               LADDER_PROCESS)
    by_name = {run.name: run for run in runs}
    # the ladder process (every rung, the audio, the poster and the storyboard) failed once and
    # is not retried; every rendition, the poster and the storyboard then made alone, once
    assert by_name["encode-ladder"].state.is_failed() and by_name["encode-ladder"].run_count == 1
    assert all(by_name[f"transcode-{r}"].run_count == 2 and by_name[f"transcode-{r}"].state.is_completed()
               for r in ("360p", "480p", "720p", "audio"))
    assert by_name["poster"].run_count == 2 and by_name["poster"].state.is_completed()
    assert by_name["storyboard"].run_count == 2 and by_name["storyboard"].state.is_completed()
    board = state.result()["storyboard"]  # made alone from the source: the same sheet (6 s: 2 tiles)
    assert (board["count"], board["columns"], board["rows"]) == (2, 2, 1)
    vtt = s3_client().get_object(Bucket=buckets[1], Key=f"assets/{state.result()['asset_id']}/{board['vtt']}")
    assert vtt["Body"].read().decode().count("storyboard.jpg#xywh=") == 2
    for rung in ("360p", "480p", "720p", "audio"):
        text = playlist(rung)
        assert text.count("#EXTINF") == 2 and "#EXT-X-ENDLIST" in text


def test_a_second_trigger_for_the_same_upload_does_no_second_transcode(prefect_server, buckets, media_dir):
    from flows.transcode import transcode

    up, out = buckets
    clip = make_clip(media_dir / "dup-360p.mp4", seconds=2, size="640x360")
    s3 = s3_client()
    s3.upload_file(str(clip), up, "dup.mp4")
    etag = s3.head_object(Bucket=up, Key="dup.mp4")["ETag"]
    first = transcode(bucket=up, key="dup.mp4", etag=etag)
    objects = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=out)["Contents"]}

    again = transcode(bucket=up, key="dup.mp4", etag=etag, return_state=True)
    assert again.is_completed() and "already published" in again.message
    assert again.result()["asset_id"] == first["asset_id"]
    names = [r.name for r in task_runs(again.state_details.flow_run_id)]
    assert not [n for n in names if n.startswith(("transcode", "decode", "encode-ladder", "download"))], names
    assert {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=out)["Contents"]} == objects


def _assert_one_consistent_asset(s3, out: str, aid: str) -> dict:
    """The asset is exactly what its manifest names (nothing another run wrote is left beside
    it), each object with the size the manifest states, each rendition's playlist listing its
    own segments, and the master playlist the manifest's."""
    from pixelflow.core.hls import parse_media_playlist
    from pixelflow.core.layout import manifest_objects
    from pixelflow.core.manifest import master_from_manifest

    prefix = f"assets/{aid}/"
    stored = json.loads(s3.get_object(Bucket=out, Key=f"{prefix}manifest.json")["Body"].read())
    listed = {o["Key"][len(prefix):]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=out, Prefix=prefix) for o in page.get("Contents", [])}
    named = manifest_objects(stored)
    assert set(listed) == set(named) | {"manifest.json"}, sorted(set(listed) ^ (set(named) | {"manifest.json"}))
    assert all(size is None or listed[path] == size for path, size in named.items())
    for rendition in stored["renditions"] + [stored["audio"]]:
        playlist = parse_media_playlist(s3.get_object(Bucket=out, Key=prefix + rendition["playlist"])["Body"].read().decode())
        folder = rendition["playlist"].rsplit("/", 1)[0]
        assert [f"{folder}/{uri}" for uri, _ in playlist.segments] == [f for f in rendition["files"] if f.endswith(".m4s")]
    assert s3.get_object(Bucket=out, Key=f"{prefix}master.m3u8")["Body"].read().decode() == master_from_manifest(stored)
    return stored


def test_two_runs_racing_on_one_upload_publish_one_whole_asset(prefect_server, buckets, media_dir):
    from concurrent.futures import ThreadPoolExecutor

    from flows.transcode import transcode

    up, out = buckets
    clip = make_clip(media_dir / "race-360p.mp4", seconds=2, size="640x360")
    s3 = s3_client()
    s3.upload_file(str(clip), up, "race.mp4")
    etag = s3.head_object(Bucket=up, Key="race.mp4")["ETag"]
    with ThreadPoolExecutor(2) as pool:
        states = list(pool.map(lambda _: transcode(bucket=up, key="race.mp4", etag=etag, return_state=True), range(2)))
    assert all(s.is_completed() for s in states), [s.message for s in states]
    manifests = [s.result() for s in states]
    assert manifests[0]["asset_id"] == manifests[1]["asset_id"]
    # whichever run won, the asset is its objects alone, each with the size the manifest states
    stored = _assert_one_consistent_asset(s3, out, manifests[0]["asset_id"])
    assert all(m["flow_run_id"] == stored["flow_run_id"] for m in manifests)


def test_two_runs_with_different_ladders_racing_leave_one_consistent_asset(prefect_server, moto_server, buckets,
                                                                          media_dir, monkeypatch, tmp_path):
    """Run A (360p and 480p) is held right after it wrote its poster, the step before its
    manifest, while run B (360p alone, another process) publishes the same upload whole. A then
    loses the manifest's conditional write: it removes what it wrote, and the asset is B's,
    every object of it written once (the output bucket is versioned to count the writes)."""
    import os
    import subprocess
    import sys

    import boto3

    from flows.transcode import transcode
    from tests.s3_fault_proxy import S3FaultProxy, Trigger

    up, out = buckets
    direct = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    direct.put_bucket_versioning(Bucket=out, VersioningConfiguration={"Status": "Enabled"})
    clip = make_clip(media_dir / "race-480p.mp4", seconds=4, size="854x480")
    direct.upload_file(str(clip), up, "ladders.mp4")
    etag = direct.head_object(Bucket=up, Key="ladders.mp4")["ETag"]
    aid = asset_id(up, "ladders.mp4", etag)
    pixelflow = str(Path(sys.executable).with_name("pixelflow"))
    other: list[subprocess.CompletedProcess] = []

    def run_b() -> None:
        env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "PIXELFLOW_LADDER": "360",
               "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "b")}
        other.append(subprocess.run([pixelflow, "transcode", f"s3://{up}/ladders.mp4", "--json"], env=env,
                                    capture_output=True, text=True, timeout=240))

    proxy = S3FaultProxy(moto_server).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("PIXELFLOW_LADDER", "360,480")
        monkeypatch.setenv("PIXELFLOW_SCRATCH_DIR", str(tmp_path / "a"))
        held = proxy.on(Trigger("PUT", f"/{out}/assets/{aid}/[^/]+/poster\\.jpg$", run_b))
        state = transcode(bucket=up, key="ladders.mp4", etag=etag, return_state=True)
    finally:
        proxy.stop()
    assert held.fired == 1 and other and other[0].returncode == 0, other[0].stderr[-3000:] if other else "B never ran"
    assert state.is_completed(), state.message
    stored = _assert_one_consistent_asset(direct, out, aid)
    # B's asset: its ladder, its folder; A returned it too and left none of its own objects
    assert [r["name"] for r in stored["renditions"]] == ["360p"]
    assert state.result()["flow_run_id"] == stored["flow_run_id"] != str(state.state_details.flow_run_id)
    assert all(path.startswith(stored["folder"] + "/") for path in manifest_objects(stored) if path != "master.m3u8")
    # write-once: every object the manifest names has exactly one version, and so has the manifest
    versions: dict[str, int] = {}
    for page in direct.get_paginator("list_object_versions").paginate(Bucket=out, Prefix=f"assets/{aid}/"):
        for version in page.get("Versions", []):
            versions[version["Key"]] = versions.get(version["Key"], 0) + 1
    assert {key: count for key, count in versions.items()
            if key[len(f"assets/{aid}/"):] in manifest_objects(stored) or key.endswith("manifest.json")
            if count != 1} == {}
    runs = task_runs(state.state_details.flow_run_id)
    assert any(r.name == "upload-480p" and r.state.is_completed() for r in runs)  # A did write its own 480p


def _transcode_rejected(buckets, media_dir, monkeypatch, key: str, env: dict[str, str]):
    """Transcode a 6 s 720p clip under ``env``, expecting a rejection: returns the rejection code,
    the task runs and the error record."""
    from flows.transcode import transcode

    up, out = buckets
    monkeypatch.setenv("PIXELFLOW_LADDER", "360,480,720")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "retry-720p.mp4", seconds=6, size="1280x720")
    s3 = s3_client()
    s3.upload_file(str(clip), up, key)
    etag = s3.head_object(Bucket=up, Key=key)["ETag"]
    state = transcode(bucket=up, key=key, etag=etag, return_state=True)
    assert state.is_failed(), state.message
    aid = asset_id(up, key, etag)
    assert s3.list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/").get("KeyCount", 0) == 0  # nothing published
    record = json.loads(s3.get_object(Bucket=out, Key=f"records/{aid}/error.json")["Body"].read())
    assert s3.head_object(Bucket=up, Key=key)["ContentLength"] == clip.stat().st_size  # the source is kept
    return state.message.split(":")[0], task_runs(state.state_details.flow_run_id), record


def test_an_ffmpeg_stopped_at_its_source_derived_limit_is_a_rejection_and_never_retried(prefect_server, buckets,
                                                                                        media_dir, monkeypatch):
    # 0.5 s + 0.05 x 6 s: the ladder process is stopped at 0.8 s, by a limit the source's duration set
    code, runs, record = _transcode_rejected(buckets, media_dir, monkeypatch, "too-slow.mp4", {
        "PIXELFLOW_FFMPEG_TIMEOUT_BASE": "0.5", "PIXELFLOW_FFMPEG_TIMEOUT_FACTOR": "0.05", "PIXELFLOW_TASK_RETRIES": "2"})
    assert code == "source_too_slow" and record["code"] == code and record["status"] == "rejected"
    by_name = {run.name: run for run in runs}
    assert by_name["encode-ladder"].run_count == 1 and by_name["encode-ladder"].state.is_failed()
    # no rung re-decoded the source on a retry
    assert all(run.run_count <= 1 for run in runs), [(r.name, r.run_count) for r in runs]


def test_a_run_past_its_time_cap_is_a_rejection_and_never_retried(prefect_server, buckets, media_dir, monkeypatch):
    code, runs, record = _transcode_rejected(buckets, media_dir, monkeypatch, "run-cap.mp4", {
        "PIXELFLOW_MAX_RUN_SECONDS": "2", "PIXELFLOW_TASK_RETRIES": "2"})
    assert code == "run_time_exceeded" and record["code"] == code and record["status"] == "rejected"
    assert record["details"]["max_run_seconds"] == 2
    assert all(run.run_count <= 1 for run in runs), [(r.name, r.run_count) for r in runs]
