"""Chunks dispatched as flow runs of their own (flows/chunk.py, tasks/dispatch.py).

Through a real local stack (Prefect server, process worker forking from the flow starter, the
bridge, moto): an upload longer than ``PIXELFLOW_CHUNK_SECONDS`` is published from one
``transcode-chunk`` flow run per chunk, each a child of the upload's ``transcode`` run, with
the renditions the run's own task runner makes; a child whose process is killed is run again
alone, and a retry of a run whose chunk failed every try redoes that chunk alone; a source damaged in its middle is rejected as the in-run path rejects it, leaving nothing
in the output bucket. On the production pool, the real ECS worker submits one ECS task per
chunk (moto's ECS records them and runs nothing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelflow.core.hls import parse_media_playlist
from pixelflow.core.ids import asset_id, normalize_etag
from pixelflow.local.stack import Stack
from tests.conftest import make_clip
from tests.events_helpers import running_stack, stack_config, wait_for
from tests.test_chunked_flow import _damaged_in_the_middle

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

#: Four chunks of two 2 s segments, two small rungs, the fastest preset.
CHUNKED = {"PIXELFLOW_LADDER": "240,360", "PIXELFLOW_PRESET": "ultrafast", "PIXELFLOW_SEGMENT_SECONDS": "2",
           "PIXELFLOW_CHUNK_SECONDS": "4"}
SECONDS = 16


@pytest.fixture(scope="module")
def stack(moto_server, tmp_path_factory):
    # progressive: the EVENT playlists grow from the chunks' results as their flow runs end
    config = stack_config(moto_server, tmp_path_factory.mktemp("dispatch-stack"), "dispatch",
                          PIXELFLOW_BRIDGE_WAIT_SECONDS="1", PIXELFLOW_PROGRESSIVE="true", **CHUNKED)
    with running_stack(config) as instance:
        yield instance


@pytest.fixture(scope="module")
def clip(media_dir) -> Path:
    return make_clip(media_dir / "dispatch-16s.mp4", seconds=SECONDS, size="640x360", vf="hue=h=t*20")


def _upload(stack: Stack, path: Path, key: str) -> tuple[str, str]:
    s3, _ = stack.clients()
    bucket = stack.settings().upload_bucket
    etag = normalize_etag(s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())["ETag"])
    return etag, asset_id(bucket, key, etag)


def _parent(stack: Stack, key: str, etag: str, states: tuple[str, ...]) -> dict:
    return wait_for(lambda: (r := stack.prefect.flow_run_for(key, etag)) and r["state_type"] in states and r,
                    timeout=300, what=f"the transcode run of {key} to end {states}")


def _children(stack: Stack, parent_id: str) -> list[dict]:
    """The ``transcode-chunk`` runs that are subflows of ``parent_id`` (through their parent
    task runs), oldest first."""
    prefect = stack.prefect
    deployment = prefect.api("GET", "/deployments/name/transcode-chunk/local")["id"]
    runs = prefect.api("POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment]}},
                                                          "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return [r for r in runs if r["parent_task_run_id"]
            and prefect.api("GET", f"/task_runs/{r['parent_task_run_id']}")["flow_run_id"] == parent_id]


def _chunk_index(run: dict) -> int:
    return run["parameters"]["chunk"]["index"]


def _task_runs(stack: Stack, flow_run_id: str) -> list[dict]:
    return stack.prefect.api("POST", "/task_runs/filter", json={
        "flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})


def _segments(s3, bucket: str, prefix: str, manifest: dict) -> dict[str, list[float]]:
    """Each video rendition's segment durations, as its published playlist lists them."""
    found = {}
    for rendition in manifest["renditions"]:
        text = s3.get_object(Bucket=bucket, Key=f"{prefix}{rendition['playlist']}")["Body"].read().decode()
        found[rendition["name"]] = [duration for _, duration in parse_media_playlist(text).segments]
    return found


def test_each_chunk_is_its_own_flow_run_and_the_asset_is_the_in_run_one(stack, clip, prefect_server, buckets,
                                                                       monkeypatch, tmp_path):
    settings = stack.settings()
    s3, _ = stack.clients()
    started = time.monotonic()
    etag, asset = _upload(stack, clip, "long/talk.mp4")
    manifest = stack.uploads.wait_for_manifest(asset, timeout=300)
    print(f"upload -> manifest through the stack: {time.monotonic() - started:.1f} s")
    parent = _parent(stack, "long/talk.mp4", etag, ("COMPLETED",))
    assert manifest["encoding"] == "chunked" and [c["index"] for c in manifest["chunks"]] == [0, 1, 2, 3]

    # one transcode-chunk flow run per chunk, each completed once, each a subflow of the upload's run
    children = _children(stack, parent["id"])
    assert sorted(_chunk_index(r) for r in children) == [0, 1, 2, 3], [r["name"] for r in children]
    assert all(r["state_type"] == "COMPLETED" and r["run_count"] == 1 for r in children)
    assert all(r["parameters"]["folder"] == manifest["folder"] for r in children)
    # the parent dispatched them (dispatch-chunk-<n>) and encoded no chunk itself
    names = sorted(t["name"] for t in _task_runs(stack, parent["id"]))
    assert [n for n in names if n.startswith("dispatch-chunk")] == [f"dispatch-chunk-{i}" for i in range(4)]
    assert not [n for n in names if n.startswith("encode-chunk")]
    # each child ran the chunk's encode-chunk task once, in its own process
    for child in children:
        assert [t["name"] for t in _task_runs(stack, child["id"]) if t["name"].startswith("encode-chunk")] == [
            f"encode-chunk-{_chunk_index(child)}"]
    starter = (stack.config.log_dir / "flow-starter.log").read_text()
    pids = {re.search(rf"flow run {c['id']}: pid (\d+), warm start", starter).group(1) for c in children}
    assert len(pids) == 4  # each forked from the flow starter, which imported flows/chunk.py

    # The same upload through the run's own task runner (the flow called in-process: no
    # deployment, so no dispatch): the same renditions, segment for segment.
    from flows.transcode import transcode
    from pixelflow.aws import s3_client

    for name, value in {**CHUNKED, "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    up, out = buckets
    s3_client().upload_file(str(clip), up, "long/talk.mp4")
    in_run = transcode(bucket=up, key="long/talk.mp4")
    assert [(c["index"], c["start"], c["end"]) for c in in_run["chunks"]] == [
        (c["index"], c["start"], c["end"]) for c in manifest["chunks"]]

    def shape(m):
        return [(r["name"], r["segments"], r["duration"], r["width"], r["height"]) for r in m["renditions"]]

    assert shape(manifest) == shape(in_run)
    dispatched = _segments(s3, settings.output_bucket, f"{settings.asset_prefix}{asset}/", manifest)
    assert dispatched == _segments(s3_client(), out, f"assets/{in_run['asset_id']}/", in_run)
    assert all(len(durations) == 8 for durations in dispatched.values()), dispatched
    # published progressively from the dispatched chunks: EVENT playlists, closed at the end
    for rendition in manifest["renditions"]:
        text = s3.get_object(Bucket=settings.output_bucket,
                             Key=f"{settings.asset_prefix}{asset}/{rendition['playlist']}")["Body"].read().decode()
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and text.rstrip().endswith("#EXT-X-ENDLIST")


def test_a_killed_child_is_run_again_alone_and_a_retry_of_the_run_redoes_only_its_chunk(stack, clip, tmp_path):
    from prefect.client.orchestration import SyncPrefectClient

    from pixelflow.ops.runs import retry_flow_run

    other = tmp_path / "killed.mp4"  # other bytes than the first test's clip: another asset
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-metadata", "title=killed",
                    str(other)], check=True)
    etag, asset = _upload(stack, other, "long/killed.mp4")
    parent = wait_for(lambda: stack.prefect.flow_run_for("long/killed.mp4", etag), timeout=120,
                      what="the transcode run")
    log = stack.config.log_dir / "flow-starter.log"

    def kill_chunk_1(tries: int) -> None:
        """Kill the process of chunk 1's next flow run, forked from the flow starter, as it runs."""
        (child,) = wait_for(lambda: [c for c in _children(stack, parent["id"]) if _chunk_index(c) == 1][tries - 1:],
                            timeout=180, what=f"chunk 1's flow run number {tries}")
        pid = int(wait_for(lambda: re.search(rf"flow run {child['id']}: pid (\d+)", log.read_text()), timeout=120,
                           interval=0.05, what="chunk 1's process").group(1))
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)

    # every try of chunk 1 killed (PIXELFLOW_TASK_RETRIES=2: three tries): each crashed child is
    # followed by a new one for chunk 1 alone, then the run fails
    for tries in (1, 2, 3):
        kill_chunk_1(tries)
    failed = _parent(stack, "long/killed.mp4", etag, ("FAILED", "COMPLETED"))
    assert failed["state_type"] == "FAILED" and failed["state"]["message"].startswith("transcode_failed: ")
    children = _children(stack, parent["id"])
    by_chunk = {i: [r["state_type"] for r in children if _chunk_index(r) == i] for i in range(4)}
    assert by_chunk == {0: ["COMPLETED"], 1: ["CRASHED"] * 3, 2: ["COMPLETED"], 3: ["COMPLETED"]}, by_chunk
    dispatches = {t["name"]: t for t in _task_runs(stack, parent["id"]) if t["name"].startswith("dispatch-chunk")}
    assert dispatches["dispatch-chunk-1"]["run_count"] == 3
    assert all(dispatches[f"dispatch-chunk-{i}"]["run_count"] == 1 for i in (0, 2, 3))

    # A retry of the run (its second attempt) dispatches chunk 1 alone; the others are the
    # first attempt's, from their flow runs' persisted results.
    with SyncPrefectClient(stack.api_url) as client:
        assert retry_flow_run(client, parent["id"]).scheduled
    manifest = stack.uploads.wait_for_manifest(asset, timeout=300)
    _parent(stack, "long/killed.mp4", etag, ("COMPLETED",))
    second = [r for r in _children(stack, parent["id"]) if r["parameters"]["attempt"] == 2]
    assert [(_chunk_index(r), r["state_type"]) for r in second] == [(1, "COMPLETED")]
    folders = {c["index"]: c["folder"] for c in manifest["chunks"]}
    assert folders[1] == manifest["folder"] == second[0]["parameters"]["folder"]
    assert len({folders[i] for i in (0, 2, 3)}) == 1 and folders[0] != manifest["folder"]
    assert all(r["segments"] == 8 for r in manifest["renditions"])


def test_a_source_damaged_in_a_middle_chunk_is_rejected_as_in_the_run(stack, clip, prefect_server, buckets,
                                                                       monkeypatch, tmp_path):
    settings = stack.settings()
    s3, _ = stack.clients()
    damaged = _damaged_in_the_middle(clip, tmp_path / "damaged.mp4")
    etag, asset = _upload(stack, damaged, "long/damaged.mp4")
    parent = _parent(stack, "long/damaged.mp4", etag, ("FAILED", "COMPLETED", "CRASHED"))
    assert parent["state_type"] == "FAILED", parent["state"]
    code = parent["state"]["message"].split(":", 1)[0]
    # the child that decoded the damaged range failed with the rejection, and was not run again
    children = _children(stack, parent["id"])
    failed = [r for r in children if r["state_type"] == "FAILED"]
    assert failed and all(r["state"]["message"].startswith(f"{code}: ") for r in failed), children
    assert all(len([r for r in children if _chunk_index(r) == _chunk_index(f)]) == 1 for f in failed)
    # nothing of the asset is left in the output bucket; the rejection is recorded
    prefix = f"{settings.asset_prefix}{asset}/"
    assert "Contents" not in s3.list_objects_v2(Bucket=settings.output_bucket, Prefix=prefix)
    record = json.loads(s3.get_object(Bucket=settings.output_bucket,
                                      Key=f"{settings.record_prefix}{asset}/error.json")["Body"].read())
    assert record["code"] == code

    # the run's own task runner rejects it with the same code
    from flows.transcode import transcode
    from pixelflow.aws import s3_client

    for name, value in {**CHUNKED, "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    up, _ = buckets
    s3_client().upload_file(str(damaged), up, "long/damaged.mp4")
    state = transcode(bucket=up, key="long/damaged.mp4", return_state=True)
    assert state.is_failed() and state.message.split(":", 1)[0] == code == "corrupt_stream", state.message


@pytest.mark.timeout(300)
def test_on_the_ecs_pool_the_worker_starts_one_task_per_chunk(moto_server, prefect_server, buckets, clip,
                                                               monkeypatch, tmp_path):
    """A chunked run of the ``transcode/ecs`` deployment (its engine run here, as its container
    would) dispatches its four chunks to ``transcode-chunk/ecs``; the real ECS worker submits
    each to the cluster as its own task (moto records the tasks and runs none)."""
    import boto3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Cancelled

    from pixelflow.aws import s3_client
    from pixelflow.local.ecs import IMAGE, ROOT, create_ecs_pool, deploy_env, deploy_ecs, ecs_network

    network = ecs_network()
    pool = create_ecs_pool()
    up, out = buckets
    env = deploy_env(network, PIXELFLOW_UPLOAD_BUCKET=up, PIXELFLOW_OUTPUT_BUCKET=out,
                     PIXELFLOW_RECORDS_TABLE="pixelflow-records-test",
                     PIXELFLOW_WEBHOOK_QUEUE_NAME="pixelflow-webhooks-test.fifo")
    deployment_id = deploy_ecs(tmp_path, pool, IMAGE, env, chunks=True)
    s3_client().upload_file(str(clip), up, "long/ecs.mp4")
    etag = normalize_etag(s3_client().head_object(Bucket=up, Key="long/ecs.mp4")["ETag"])
    with get_client(sync_client=True) as client:
        chunk_deployment = client.read_deployment_by_name("transcode-chunk/ecs")
        assert chunk_deployment.work_pool_name == pool and chunk_deployment.global_concurrency_limit.limit == 16
        parent = client.create_flow_run_from_deployment(deployment_id, parameters={
            "bucket": up, "key": "long/ecs.mp4", "etag": etag})

    # The parent's engine, as the transcode task's container runs it (here, on this machine),
    # with every chunk in flight at once.
    run_env = {**os.environ, **CHUNKED, "PIXELFLOW_CHUNK_WORKERS": "4", "PREFECT__FLOW_RUN_ID": str(parent.id),
               "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch"), "PIXELFLOW_PROJECT_DIR": str(ROOT),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with open(tmp_path / "parent.log", "w") as log:
        engine = subprocess.Popen([sys.executable, "-m", "prefect.engine"], env=run_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def children():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[chunk_deployment.id])))
            return [r for r in runs if r.parent_task_run_id
                    and client.read_task_run(r.parent_task_run_id).flow_run_id == parent.id]

    try:
        dispatched = wait_for(lambda: len(found := children()) == 4 and found, timeout=120,
                              what="four transcode-chunk runs")
        assert sorted(r.parameters["chunk"]["index"] for r in dispatched) == [0, 1, 2, 3]
        assert all(r.state.is_scheduled() for r in dispatched)

        worker_env = {**os.environ, "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": network["events_queue"],
                      "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        prefect = Path(sys.executable).with_name("prefect")
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.run([str(prefect), "worker", "start", "--type", "ecs", "--pool", pool, "--run-once",
                                     "--install-policy", "never"], env=worker_env, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=180)
        output = (tmp_path / "worker.log").read_text()
        assert worker.returncode == 0 and "Failed to submit flow run" not in output, output

        ecs = boto3.client("ecs", region_name="us-east-1")
        arns = ecs.list_tasks(cluster=network["cluster"])["taskArns"]
        tasks = ecs.describe_tasks(cluster=network["cluster"], tasks=arns)["tasks"]
        started = sorted({item["name"]: item["value"] for item in t["overrides"]["containerOverrides"][0]["environment"]
                          }["PREFECT__FLOW_RUN_ID"] for t in tasks)
        # one task per chunk, each the chunk's own flow run; the parent runs here, not there
        assert started == sorted(str(r.id) for r in dispatched), (started, output)
        assert all("/pixelflow-transcode:" in t["taskDefinitionArn"] for t in tasks)  # the pool's task definition
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait(30)
        with get_client(sync_client=True) as client:
            for run_id in [parent.id, *(r.id for r in children())]:
                client.set_flow_run_state(run_id, Cancelled(message="end of test"), force=True)
