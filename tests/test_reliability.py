"""Exactly one asset per upload, whatever happens: duplicates, crashes, outages, manual retries.

Every test runs on one dedicated local stack (:class:`pixelflow.local.stack.Stack`: its own Prefect
server with the ``local`` deployment, its upload trigger and the crash-recovery automations, a
process worker and the bridge, as real processes) on the session's moto server. The worker (and
so every flow run) reaches S3 through :class:`tests.s3_fault_proxy.S3FaultProxy`, which passes
everything through until a test arms a fault. The output bucket is versioned, so "published
once" is checked literally: every ``manifest.json`` has exactly one version.

Faults are real: FFmpeg, the worker, the flow-run process and the bridge are killed with
SIGKILL, the Prefect server is stopped, S3 answers 503/500, an upload's notification is never
sent. Two scenarios are set up early and checked late (module fixtures ``lost_run`` and
``lost_event``), so that their waits (missed heartbeats, the reconciler's grace period) overlap
the other tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from pixelflow.core.ids import asset_id
from pixelflow.core.s3events import resource_id
from pixelflow.local.processes import _bin, free_port
from pixelflow.ops.reconcile import RECONCILED_TAG
from pixelflow.local.stack import Stack, StackConfig
from tests.conftest import make_clip
from tests.events_helpers import queue_counts, wait_for
from tests.fault_helpers import Killer, find_processes
from tests.s3_fault_proxy import Fault, S3FaultProxy

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

#: The burst: distinct clips, each uploaded under every key prefix, topped up to BURST_PUTS
#: uploads with identical re-uploads (and three bad files). Every distinct upload costs one flow
#: run, i.e. one Python process start: the main cost on a small machine.
BURST_CLIPS = 5
BURST_KEYS = ("a", "b")
BURST_PUTS = 30


# --- the stack ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proxy(moto_server):
    instance = S3FaultProxy(moto_server).start()
    yield instance
    instance.stop()


def reliability_stack(moto_server: str, proxy: S3FaultProxy, home: Path, **fields: Any):
    """Start the reliability tests' stack in ``home`` (``fields``: other :class:`StackConfig`
    values, e.g. ``database``) and yield it; it is stopped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    config = StackConfig(
        home=home,
        prefect_port=free_port(),
        aws_endpoint=moto_server,
        env={
            "PIXELFLOW_UPLOAD_BUCKET": f"rel-up-{suffix}",
            "PIXELFLOW_OUTPUT_BUCKET": f"rel-out-{suffix}",
            "PIXELFLOW_QUEUE_NAME": f"rel-uploads-{suffix}",
            "PIXELFLOW_DLQ_NAME": f"rel-uploads-dlq-{suffix}",
            "PIXELFLOW_MAX_RECEIVE_COUNT": "3",
            "PIXELFLOW_BRIDGE_WAIT_SECONDS": "1",
            "PIXELFLOW_BRIDGE_VISIBILITY_TIMEOUT": "5",
            "PIXELFLOW_LADDER": "360,480,720",
            "PIXELFLOW_PRESET": "ultrafast",
            "PIXELFLOW_SCRATCH_DIR": str(home / "scratch"),
            # Failed runs are retried by hand here (prefect flow-run retry, pixelflow retry); the
            # reconciler's own retries of failed uploads are tests/test_failed_retries.py's.
            "PIXELFLOW_FAILED_RETRY_LIMIT": "0",
        },
        # Every flow run reaches S3 through the fault proxy; a failed task is retried once
        # within the run: a killed ladder process leaves each rung to its one retry, encoding
        # alone, so that a killed lone encoder then fails the run (for the manual retry) with
        # only its own rung missing.
        worker_env={"AWS_ENDPOINT_URL": proxy.url, "PIXELFLOW_TASK_RETRIES": "1"},
        reconcile_after_seconds=90,
    )
    for name, value in fields.items():
        setattr(config, name, value)
    instance = Stack(config, log=lambda message: print(f"{time.strftime('%H:%M:%S')} stack: {message}", flush=True))
    started = time.monotonic()
    instance.up()
    print(f"stack up in {time.monotonic() - started:.1f} s")
    s3, _ = instance.clients()
    s3.put_bucket_versioning(Bucket=instance.settings().output_bucket, VersioningConfiguration={"Status": "Enabled"})
    yield instance
    instance.down()


@pytest.fixture(scope="module")
def stack(moto_server, proxy, tmp_path_factory):
    yield from reliability_stack(moto_server, proxy, tmp_path_factory.mktemp("reliability"))


# --- helpers -----------------------------------------------------------------------------------
def _etag(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def runs_for(stack: Stack, key: str) -> list[dict[str, Any]]:
    return [r for r in stack.prefect.flow_runs() if (r.get("parameters") or {}).get("key") == key]


def reconciled(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs the stack's reconciler started (for uploads it found without a run)."""
    return [r for r in runs if RECONCILED_TAG in (r.get("tags") or [])]


def wait_run(stack: Stack, key: str, states: set[str], timeout: float = 240.0) -> dict[str, Any]:
    """Wait for the run of an upload to reach one of ``states``: the one its event started, or
    else the one the reconciler started (never two of either, and all of them finished)."""
    def done():
        stack.supervisor.check()
        runs = runs_for(stack, key)
        repaired = reconciled(runs)
        triggered = [r for r in runs if r not in repaired]
        assert len(triggered) <= 1 and len(repaired) <= 1, [(r["id"], r["tags"], r["state_name"]) for r in runs]
        if not runs or any(r["state_type"] not in states for r in runs):
            return None
        return (triggered or repaired)[0]
    return wait_for(done, timeout=timeout, interval=1.0, what=f"the run of {key} to be {'/'.join(sorted(states))}")


def task_runs(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    return stack.prefect.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})


def state_history(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    states = stack.prefect.api("GET", f"/flow_run_states/?flow_run_id={flow_run_id}")
    return sorted(states, key=lambda s: s["timestamp"])


def manifest_versions(stack: Stack, asset: str) -> int:
    settings = stack.settings()
    s3, _ = stack.clients()
    key = f"{settings.asset_prefix}{asset}/manifest.json"
    listed = s3.list_object_versions(Bucket=settings.output_bucket, Prefix=key)
    return len([v for v in listed.get("Versions", []) if v["Key"] == key])


def quarantined_keys(stack: Stack, asset: str) -> list[str]:
    settings = stack.settings()
    s3, _ = stack.clients()
    prefix = f"{settings.quarantine_prefix}{asset}/"
    listed = s3.list_objects_v2(Bucket=settings.upload_bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listed.get("Contents", []))


def failure_record(stack: Stack, asset: str) -> dict[str, Any]:
    settings = stack.settings()
    s3, _ = stack.clients()
    body = s3.get_object(Bucket=settings.output_bucket, Key=settings.layout(asset).error_key)["Body"]
    return json.loads(body.read())


def assert_complete_asset(stack: Stack, asset: str, renditions: list[str]) -> dict[str, Any]:
    """The asset is published once and whole: manifest, master playlist, every rendition's
    playlist ending with ``#EXT-X-ENDLIST`` and every segment it names present."""
    settings = stack.settings()
    s3, _ = stack.clients()
    prefix = f"{settings.asset_prefix}{asset}/"
    manifest = json.loads(s3.get_object(Bucket=settings.output_bucket, Key=f"{prefix}manifest.json")["Body"].read())
    assert manifest["status"] == "ready" and manifest["asset_id"] == asset
    assert [r["name"] for r in manifest["renditions"]] == renditions
    assert manifest_versions(stack, asset) == 1, "manifest.json was written more than once"
    keys = {o["Key"][len(prefix):] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.output_bucket, Prefix=prefix) for o in page.get("Contents", [])}
    master = s3.get_object(Bucket=settings.output_bucket, Key=f"{prefix}master.m3u8")["Body"].read().decode()
    for rendition in manifest["renditions"] + ([manifest["audio"]] if manifest.get("audio") else []):
        name, folder = rendition["name"], rendition["playlist"].rsplit("/", 1)[0]  # <attempt>/<rendition>
        assert f"{folder}/index.m3u8" in master
        playlist = s3.get_object(Bucket=settings.output_bucket, Key=f"{prefix}{folder}/index.m3u8")["Body"].read().decode()
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert "#EXT-X-ENDLIST" in playlist and len(segments) == rendition["segments"] > 0, (name, playlist)
        assert {f"{folder}/{s}" for s in segments} | {f"{folder}/init.mp4"} <= keys, name
    return manifest


def flow_run_processes(flow_run_id: str) -> list[int]:
    """PIDs of processes running a flow run (the engine gets ``PREFECT__FLOW_RUN_ID``)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def concurrency(stack: Stack, run_ids: list[str], holding: set[str],
                skew: float = 0.0) -> tuple[int, list[tuple[float, float]]]:
    """The most runs that were at once in one of the ``holding`` state types, from their state
    histories (recorded timestamps, no sampling); each interval starts ``skew`` seconds late."""
    intervals = []
    for run_id in run_ids:
        history = state_history(stack, run_id)
        for state, following in zip(history, history[1:] + [None]):
            if state["type"] in holding:
                end = _epoch(following["timestamp"]) if following else time.time()
                intervals.append((min(_epoch(state["timestamp"]) + skew, end), end))
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, delta in points:  # at equal times an end (-1) sorts before a start
        current += delta
        peak = max(peak, current)
    return peak, intervals


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=stack.env(), cwd=str(stack.config.project_dir), capture_output=True,
                          text=True, timeout=180)


def tiny_clips(directory: Path, count: int) -> list[Path]:
    """``count`` distinct 1-second 320x180 clips (one rendition each: no rung fits)."""
    paths = [directory / f"burst-{i}.mp4" for i in range(count)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: p[1].exists() or make_clip(p[1], seconds=1, size="320x180", rate=str(20 + p[0])),
                      enumerate(paths)))
    return paths


# --- manual retry --------------------------------------------------------------------------------
def test_manual_retry_redoes_only_the_failed_rendition(stack, media_dir):
    """A run whose ladder process, then 720p encoder (retrying alone), were killed fails; retried with ``prefect flow-run retry`` (and
    another with ``pixelflow retry --failed-since``), only 720p is encoded again: the other
    renditions come from the first attempt's persisted results (state Cached)."""
    settings = stack.settings()
    scratch = Path(settings.scratch_dir)
    clip = make_clip(media_dir / "reliability-720p.mp4", seconds=6, size="1280x720")
    cases = {}
    for name in ("prefect-cli", "pixelflow-cli"):
        upload = stack.uploads.upload_file(clip, key=f"retry/{name}.mp4")
        folder = str(scratch / upload["asset_id"])
        killers = [Killer(folder, "/360p/index.m3u8", "/720p/index.m3u8", after=0.3, timeout=300),  # the ladder process
                   Killer(folder, "/720p/index.m3u8", "-filter:v", after=0.3, timeout=300)]  # 720p, encoding alone
        for killer in killers:
            killer.start()
        cases[name] = (upload, killers)

    failed = {}
    for name, (upload, killers) in cases.items():
        failed[name] = wait_run(stack, upload["key"], TERMINAL)
        for killer in killers:
            killer.join(5)
        assert all(killer.killed for killer in killers), f"the ladder process or 720p encoder of {name} was never seen"
        assert failed[name]["state_type"] == "FAILED", failed[name]["state"]
        assert failed[name]["state"]["message"].startswith("transcode_failed:"), failed[name]["state"]["message"]
        # nothing is visible to clients: the renditions that finished are uploaded, no manifest
        assert manifest_versions(stack, upload["asset_id"]) == 0
        # a service failure is recorded for `pixelflow status`; the source is fine and not copied
        assert failure_record(stack, upload["asset_id"])["status"] == "failed"
        assert quarantined_keys(stack, upload["asset_id"]) == []

    prefect_run, pixelflow_run = failed["prefect-cli"]["id"], failed["pixelflow-cli"]["id"]
    done = cli(stack, _bin("prefect"), "flow-run", "retry", prefect_run)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli(stack, sys.executable, "-m", "pixelflow.cli", "retry", "--failed-since", "30m", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(r["flow_run_id"], r["scheduled"]) for r in json.loads(done.stdout)] == [(pixelflow_run, True)]

    for name, (upload, _) in cases.items():
        run = wait_run(stack, upload["key"], TERMINAL, timeout=300)
        assert run["state_type"] == "COMPLETED", run["state"]
        assert run["run_count"] == 2
        assert_complete_asset(stack, upload["asset_id"], ["360p", "480p", "720p"])
        # the published asset leaves no stale failure record behind
        assert quarantined_keys(stack, upload["asset_id"]) == []

        tasks = task_runs(stack, run["id"])
        first = {t["name"]: t for t in tasks if t["flow_run_run_count"] == 1}
        second = {t["name"]: t for t in tasks if t["flow_run_run_count"] == 2}
        print(name, "attempt 1:", sorted(f"{n}={t['state_name']}" for n, t in first.items()))
        print(name, "attempt 2:", sorted(f"{n}={t['state_name']}" for n, t in second.items()))
        assert first["transcode-720p"]["state_type"] == "FAILED"
        assert first["transcode-360p"]["state_type"] == first["transcode-480p"]["state_type"] == "COMPLETED"
        # the second attempt encoded 720p alone (one ladder process making it) ...
        assert second["transcode-720p"]["state_name"] == "Completed"
        assert second["encode-ladder"]["state_name"] == "Completed"
        assert not {"transcode-360p", "transcode-480p", "transcode-audio"} & set(second), sorted(second)
        # ... and took the renditions published by the first attempt from their results
        for rendition in ("360p", "480p", "audio"):
            assert second[f"upload-{rendition}"]["state_name"] == "Cached", second[f"upload-{rendition}"]
        assert second["upload-720p"]["state_name"] == "Completed"


# --- a lost machine ----------------------------------------------------------------------------
# The crash is set up early (right after the manual retry) and checked late: while the heartbeat
# automation waits for the lost run's missing heartbeats, the S3 and bridge fault tests run.
@pytest.fixture(scope="module")
def lost_run(stack, media_dir) -> dict[str, Any]:
    """Kill (SIGKILL) the worker and its flow-run process mid-transcode, as when a machine is
    lost, then start a new worker."""
    settings = stack.settings()
    scratch = Path(settings.scratch_dir)
    clip = make_clip(media_dir / "reliability-crash.mp4", seconds=4, size="1280x720")
    upload = stack.uploads.upload_file(clip, key="faults/lost-machine.mp4")
    wait_for(lambda: find_processes(str(scratch / upload["asset_id"]), "ffmpeg"), timeout=300, interval=0.2,
             what="the run's first FFmpeg")
    [run] = runs_for(stack, upload["key"])
    engine = flow_run_processes(run["id"])
    assert engine, "the flow-run process was not found"
    stack.stop_worker(kill=True)
    for pid in engine:
        try:
            os.killpg(pid, signal.SIGKILL)  # the run's own session: the engine and its FFmpeg processes
        except ProcessLookupError:
            pass
    killed_at = time.time()
    wait_for(lambda: not find_processes(str(scratch / upload["asset_id"])), timeout=10,
             what="the run's FFmpeg processes to die")
    stack.start_worker()
    return {"upload": upload, "flow_run_id": run["id"], "killed_at": killed_at}


def test_a_lost_run_stays_running_until_its_heartbeats_are_missed(stack, lost_run):
    """Nothing tells Prefect that the machine is gone: the run is still Running, unpublished."""
    [run] = runs_for(stack, lost_run["upload"]["key"])
    assert run["id"] == lost_run["flow_run_id"]
    if run["state_type"] == "RUNNING":
        assert manifest_versions(stack, lost_run["upload"]["asset_id"]) == 0
    else:  # a slow machine: the automation was quicker than this check
        assert any(s["type"] == "CRASHED" for s in state_history(stack, run["id"])), run["state"]


# --- a lost event --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lost_event(stack, media_dir) -> dict[str, Any]:
    """An upload made while the bucket sent no notification: no event, no run, until the
    reconciler notices it."""
    settings = stack.settings()
    s3, _ = stack.clients()
    saved = s3.get_bucket_notification_configuration(Bucket=settings.upload_bucket)
    saved.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=settings.upload_bucket, NotificationConfiguration={})
    try:
        upload = stack.uploads.upload_file(tiny_clips(media_dir, 1)[0], key="faults/event-lost.mp4")
    finally:
        s3.put_bucket_notification_configuration(Bucket=settings.upload_bucket, NotificationConfiguration=saved)
    return upload


def test_an_upload_without_an_event_has_no_run_at_first(stack, lost_event):
    """Nothing reached Prefect for this upload: no event, no run (the reconciler waits its grace period)."""
    events = stack.prefect.api("POST", "/events/filter", json={"filter": {
        "event": {"name": ["pixelflow.upload.created"]},
        "resource": {"id": [resource_id(lost_event["bucket"], lost_event["key"])]},
        "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}})["events"]
    assert events == []
    if time.time() - lost_event["uploaded_at"] < stack.config.reconcile_after_seconds:
        assert runs_for(stack, lost_event["key"]) == []


# --- faults ------------------------------------------------------------------------------------
def test_transient_s3_errors_do_not_stop_the_asset(stack, proxy, media_dir):
    """S3 answers 500/503 to the flow's HEAD, GET and PUTs (and fails the manifest write after
    it happened): retries publish the asset anyway, whole and once."""
    settings = stack.settings()
    clip = make_clip(media_dir / "reliability-360p.mp4", seconds=3, size="640x360")
    key = "faults/s3-errors.mp4"
    asset = asset_id(settings.upload_bucket, key, _etag(clip), None)
    up, out = f"/{settings.upload_bucket}/{key}$", f"/{settings.output_bucket}/{settings.asset_prefix}{asset}/"
    faults = {
        "head source": proxy.add(Fault("HEAD", up, first=1, status=500, code="InternalError")),
        "get source": proxy.add(Fault("GET", up, first=2)),
        "put 360p playlist": proxy.add(Fault("PUT", out + r"[^/]+/360p/index\.m3u8$", first=2)),
        "put segments": proxy.add(Fault("PUT", out + r".*\.m4s$", first=2)),
        "put manifest, after it was written": proxy.add(
            Fault("PUT", out + r"manifest\.json$", first=1, status=500, code="InternalError", after_forwarding=True)),
        "any put, at random": proxy.add(Fault("PUT", out, fraction=0.2, seed=11)),
    }
    try:
        stack.uploads.upload_file(clip, key=key)
        run = wait_run(stack, key, TERMINAL)
    finally:
        proxy.clear()
    print({name: (f.matched, f.injected) for name, f in faults.items()})
    assert run["state_type"] == "COMPLETED", run["state"]
    for name, fault in faults.items():
        if fault.first is not None:
            assert fault.injected == fault.first, name
    assert_complete_asset(stack, asset, ["360p"])


def test_bridge_killed_between_receive_and_delete_loses_nothing(stack, media_dir):
    """The bridge holds a message (the Prefect API does not answer) and is killed with SIGKILL
    before it could delete it: the message comes back, and the asset is published once."""
    settings = stack.settings()
    _, sqs = stack.clients()
    queue_url = stack.provisioned.queue_url
    clip = tiny_clips(media_dir, 1)[0]
    key = "faults/bridge-killed.mp4"
    with socket.socket() as blackhole:  # accepts connections (backlog), never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        stack.stop_bridge()
        stack.start_bridge(env={"PREFECT_API_URL": f"http://127.0.0.1:{blackhole.getsockname()[1]}/api"})
        upload = stack.uploads.upload_file(clip, key=key)
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 1), timeout=60, what="the bridge to receive the message")
        time.sleep(1.0)
        stack.stop_bridge(kill=True)
    assert queue_counts(sqs, queue_url) == (0, 1), "the killed bridge deleted its message"
    killed_at = time.monotonic()
    stack.start_bridge()
    wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=60, what="the redelivered message to be handled")
    run = wait_run(stack, key, TERMINAL)
    print(f"message redelivered and handled {time.monotonic() - killed_at:.1f} s after the kill")
    assert run["state_type"] == "COMPLETED", run["state"]
    assert_complete_asset(stack, upload["asset_id"], _rendition_names(stack, upload["asset_id"]))
    assert queue_counts(sqs, stack.provisioned.dlq_url) == (0, 0)


def test_a_run_retried_beyond_max_attempts_gives_up_with_an_alert(stack, media_dir):
    """A run scheduled again after ``PIXELFLOW_MAX_ATTEMPTS`` attempts does no work: it fails
    with ``too_many_attempts`` and emits ``pixelflow.asset.alert`` for notifications."""
    settings = stack.settings()
    s3, _ = stack.clients()
    side = f"{settings.upload_bucket}-side"  # no notification: only this test starts runs for it
    s3.create_bucket(Bucket=side)
    key = "faults/max-attempts.mp4"
    etag = s3.put_object(Bucket=side, Key=key, Body=b"not a video\n" * 50)["ETag"].strip('"')
    asset = asset_id(side, key, etag, None)
    run = stack.prefect.api("POST", f"/deployments/{stack.prefect.deployment_id()}/create_flow_run", json={
        "parameters": {"bucket": side, "key": key, "etag": etag},
        "job_variables": {"env": {"PIXELFLOW_MAX_ATTEMPTS": "1"}},
    })
    first = wait_run(stack, key, TERMINAL)
    assert first["state_type"] == "FAILED" and first["state"]["message"].startswith("not_media:"), first["state"]
    stack.prefect.api("POST", f"/flow_runs/{run['id']}/set_state",
              json={"state": {"type": "SCHEDULED", "message": "retried"}, "force": True})
    wait_for(lambda: (r := runs_for(stack, key)[0])["run_count"] == 2 and r["state_type"] in TERMINAL, timeout=240,
             interval=1.0, what="the second attempt to finish")
    [second] = runs_for(stack, key)
    assert second["state_type"] == "FAILED", second["state"]
    assert second["state"]["message"].startswith("too_many_attempts:"), second["state"]["message"]
    assert not [t["name"] for t in task_runs(stack, run["id"]) if t["flow_run_run_count"] == 2]

    def alerts():
        return stack.prefect.api("POST", "/events/filter", json={"filter": {
            "event": {"name": ["pixelflow.asset.alert"]}, "resource": {"id": [f"pixelflow.asset.{asset}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}})["events"]
    [alert] = wait_for(alerts, timeout=60, what="the pixelflow.asset.alert event")
    assert alert["payload"]["code"] == "too_many_attempts" and alert["payload"]["key"] == key


def test_a_lost_run_is_crashed_rescheduled_and_published_once(stack, lost_run):
    """The heartbeat automation marks the lost run Crashed, the re-run automation schedules it
    again, the new worker runs it to completion: the asset is published, once."""
    upload = lost_run["upload"]
    run = wait_run(stack, upload["key"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=480)
    assert run["state_type"] == "COMPLETED", run["state"]
    history = state_history(stack, run["id"])
    crashed = [s for s in history if s["type"] == "CRASHED"]
    assert crashed and "heartbeat" in crashed[0]["message"], [(s["type"], s["message"]) for s in history]
    rescheduled = [s for s in history if s["type"] == "SCHEDULED"
                   and _epoch(s["timestamp"]) > _epoch(crashed[0]["timestamp"])]
    assert rescheduled and rescheduled[0]["message"] == "Rescheduled after a crash"
    assert run["run_count"] == 2
    print(f"lost run marked Crashed {_epoch(crashed[0]['timestamp']) - lost_run['killed_at']:.0f} s after the kill, "
          f"rescheduled {_epoch(rescheduled[0]['timestamp']) - lost_run['killed_at']:.0f} s after it, published "
          f"{time.time() - lost_run['killed_at']:.0f} s after it")
    assert_complete_asset(stack, upload["asset_id"], ["360p", "480p", "720p"])


def test_an_upload_whose_event_was_lost_gets_its_run_from_the_reconciler(stack, lost_event):
    """The reconciler starts the run of an upload nobody heard of, once, after its grace period."""
    run = wait_run(stack, lost_event["key"], TERMINAL, timeout=300)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert RECONCILED_TAG in run["tags"] and len(runs_for(stack, lost_event["key"])) == 1
    # The grace period runs from the object's LastModified (what the reconciler reads; S3 keeps
    # it to the second), not from this process's clock after the PUT returned.
    s3, _ = stack.clients()
    modified = s3.head_object(Bucket=lost_event["bucket"], Key=lost_event["key"])["LastModified"].timestamp()
    created = _epoch(run["created"]) - modified
    print(f"the reconciler started the run {created:.0f} s after the upload")
    assert created >= stack.config.reconcile_after_seconds
    assert_complete_asset(stack, lost_event["asset_id"], _rendition_names(stack, lost_event["asset_id"]))


# --- burst -------------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_burst_of_uploads_and_duplicates_gives_one_asset_per_upload(stack, media_dir):
    """Uploads at once: distinct clips under several keys, identical re-uploads, redelivered
    and re-sent notifications, bad files. One asset per distinct (bucket, key, ETag), one
    rejection record per bad file, nothing left in the queues, and never more than the
    deployment's two concurrent runs."""
    settings = stack.settings()
    s3, sqs = stack.clients()
    provisioned = stack.provisioned

    # A second queue receives a copy of every real notification, to re-send some of them.
    tap_url = sqs.create_queue(QueueName=f"{settings.queue_name}-tap")["QueueUrl"]
    tap_arn = sqs.get_queue_attributes(QueueUrl=tap_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    notification = s3.get_bucket_notification_configuration(Bucket=settings.upload_bucket)
    notification.pop("ResponseMetadata", None)
    notification.setdefault("QueueConfigurations", []).append(
        {"Id": "reliability-tap", "QueueArn": tap_arn, "Events": ["s3:ObjectCreated:*"]})
    s3.put_bucket_notification_configuration(Bucket=settings.upload_bucket, NotificationConfiguration=notification)

    clips = tiny_clips(media_dir, BURST_CLIPS)
    good = [(clip, f"burst/{copy}/clip-{i}.mp4") for copy in BURST_KEYS for i, clip in enumerate(clips)]
    bad_dir = media_dir / "burst-bad"
    bad_dir.mkdir(exist_ok=True)
    (bad_dir / "notes.mp4").write_text("These are my notes, not a video.\n" * 20)
    (bad_dir / "empty.mp4").write_bytes(b"")
    (bad_dir / "noise.mov").write_bytes(os.urandom(50_000))
    bad = [(bad_dir / "notes.mp4", "burst/bad/notes.mp4", "not_media"),
           (bad_dir / "empty.mp4", "burst/bad/empty.mp4", "empty_file"),
           (bad_dir / "noise.mov", "burst/bad/noise.mov", "not_media")]
    # uploaded again, same bytes, same key: same ETag, same asset
    reput = [good[i % len(good)] for i in range(BURST_PUTS - len(good) - len(bad))]

    folders_before = asset_folders(stack)
    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        uploads = list(pool.map(lambda item: stack.uploads.upload_file(item[0], key=item[1]),
                                good + [(path, key) for path, key, _ in bad]))
        again = list(pool.map(lambda item: stack.uploads.upload_file(item[0], key=item[1]), reput))
    assert {(u["key"], u["etag"]) for u in again} <= {(u["key"], u["etag"]) for u in uploads}
    puts = len(good) + len(bad) + len(reput)

    # Copies of real notification bodies: plain redeliveries (SQS is at-least-once), and the
    # notification S3 sends for a second PUT of identical bytes (a new sequencer).
    bodies = []
    wait_for(lambda: bodies.extend(m["Body"] for m in _drain(sqs, tap_url)) or len(bodies) >= puts, timeout=60,
             what="every notification in the tap queue")
    good_keys = {key for _, key in good}
    created = [b for b in bodies if "ObjectCreated" in b]
    resent = created[:8] + created[:2]
    for body in resent:
        sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody=body)
    new_puts = []
    for body in [b for b in created if unquote_plus(json.loads(b)["Records"][0]["s3"]["object"]["key"]) in good_keys][3:5]:
        record = json.loads(body)
        record["Records"][0]["s3"]["object"]["sequencer"] = f"{int(time.time() * 1e6):016X}"
        new_puts.append(unquote_plus(record["Records"][0]["s3"]["object"]["key"]))
        sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody=json.dumps(record))
    print(f"{puts} PUTs ({len(good)} good, {len(reput)} identical re-uploads, {len(bad)} bad), "
          f"{len(resent)} re-sent notifications, {len(new_puts)} notifications of a second identical PUT")

    good_assets = {u["asset_id"] for u in uploads[:len(good)]}
    bad_assets = {u["asset_id"]: code for u, (_, _, code) in zip(uploads[len(good):], bad)}
    assert len(good_assets) == len(good)

    expected_keys = {key for _, key in good} | {key for _, key, _ in bad}

    def settled():
        stack.supervisor.check()
        runs = [r for r in stack.prefect.flow_runs() if (r.get("parameters") or {}).get("key", "").startswith("burst/")]
        finished = [r for r in runs if r["state_type"] in TERMINAL]
        return {r["parameters"]["key"] for r in finished} >= expected_keys and len(finished) == len(runs) \
            and len(runs) >= len(expected_keys) + len(new_puts) - len(reconciled(runs)) and runs
    try:
        runs = wait_for(settled, timeout=840, interval=2.0, what="every burst run to finish")
    except AssertionError:
        print(sorted((r["parameters"]["key"], r["state_name"], r["run_count"], r["tags"]) for r in stack.prefect.flow_runs()
                     if r["parameters"].get("key", "").startswith("burst/")))
        raise
    elapsed = time.time() - started

    # One run per distinct notification (redeliveries and identical re-uploads start none), plus
    # the runs the reconciler started for uploads whose run-deployment action the busy Prefect
    # server dropped.
    repaired = reconciled(runs)
    by_trigger = Counter(r["parameters"]["key"] for r in runs if r not in repaired)
    assert all(count <= (2 if unquote_plus(key) in new_puts else 1) for key, count in by_trigger.items()), by_trigger
    assert len(by_trigger) + len({r["parameters"]["key"] for r in repaired} - set(by_trigger)) == len(expected_keys)
    if stack.config.reconcile_after_seconds is None:
        # No reconciler to repair a dropped run-deployment action: every distinct notification
        # got its run from the trigger, exactly one (two for the second PUT of identical bytes).
        assert by_trigger == Counter({**{key: 1 for key in expected_keys}, **{key: 2 for key in new_puts}}), by_trigger
        assert len(runs) == len(expected_keys) + len(new_puts)
    if repaired:
        print(f"the reconciler started {len(repaired)} run(s) for uploads without one: "
              f"{sorted(r['parameters']['key'] for r in repaired)}")
    states = Counter((r["parameters"]["key"], r["state_type"]) for r in runs)
    assert {key for (key, state) in states if state == "FAILED"} == {key for _, key, _ in bad}, states
    assert not {state for (_, state) in states} - {"COMPLETED", "FAILED"}, states

    # Exactly one asset per distinct good upload, each whole and written once; none for the rest.
    assert asset_folders(stack) - folders_before == good_assets
    for asset in good_assets:
        assert_complete_asset(stack, asset, _rendition_names(stack, asset))
    # One rejection record per bad upload, with its code.
    for asset, code in bad_assets.items():
        record = json.loads(s3.get_object(Bucket=settings.output_bucket,
                                          Key=settings.layout(asset).error_key)["Body"].read())
        assert record["code"] == code and manifest_versions(stack, asset) == 0
    recorded = {o["Key"] for o in s3.list_objects_v2(Bucket=settings.output_bucket,
                                                     Prefix=settings.record_prefix).get("Contents", [])
                if o["Key"].endswith("/error.json")}
    assert recorded >= {settings.layout(a).error_key for a in bad_assets}

    # Nothing left behind, nothing in the dead-letter queue.
    wait_for(lambda: queue_counts(sqs, provisioned.queue_url) == (0, 0), timeout=30, what="an empty upload queue")
    assert queue_counts(sqs, provisioned.dlq_url) == (0, 0)

    running, _ = concurrency(stack, [r["id"] for r in runs], {"RUNNING"})
    # Pending's timestamp is the worker's clock when it proposed the state, which the server may
    # accept only after a slot was freed a moment later: overlaps under a second are that skew.
    holding, _ = concurrency(stack, [r["id"] for r in runs], {"PENDING", "RUNNING"}, skew=1.0)
    waited = sum(1 for r in runs for s in state_history(stack, r["id"]) if s["name"] == "AwaitingConcurrencySlot")
    print(f"burst: {len(runs)} runs in {elapsed:.0f} s; at most {running} Running at once "
          f"({holding} Pending or Running); {waited} waits for a concurrency slot")
    assert 1 <= running <= 2 and holding <= 2

    s3.put_bucket_notification_configuration(Bucket=settings.upload_bucket, NotificationConfiguration={
        k: [q for q in v if q.get("Id") != "reliability-tap"] if k == "QueueConfigurations" else v
        for k, v in notification.items()})


def asset_folders(stack: Stack) -> set[str]:
    """Asset ids with anything under ``<asset_prefix><asset_id>/`` in the output bucket."""
    settings = stack.settings()
    s3, _ = stack.clients()
    return {p["Prefix"][len(settings.asset_prefix):].rstrip("/")
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=settings.output_bucket, Prefix=settings.asset_prefix, Delimiter="/")
            for p in page.get("CommonPrefixes", [])}


def _rendition_names(stack: Stack, asset: str) -> list[str]:
    s3, _ = stack.clients()
    settings = stack.settings()
    manifest = json.loads(s3.get_object(Bucket=settings.output_bucket,
                                        Key=f"{settings.asset_prefix}{asset}/manifest.json")["Body"].read())
    assert len(manifest["renditions"]) == 1
    return [manifest["renditions"][0]["name"]]


def _drain(sqs, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


# --- outage ---
def test_prefect_server_outage_loses_no_upload(stack, media_dir):
    """Uploads arriving while the Prefect server is down wait in the queue, held by the bridge,
    and become runs once it is back: every asset is published once, nothing is dead-lettered."""
    _, sqs = stack.clients()
    wait_for(lambda: all(r["state_type"] in TERMINAL for r in stack.prefect.flow_runs()), timeout=120, what="an idle stack")
    clips = tiny_clips(media_dir, 2)
    bridge_log = stack.config.log_dir / "bridge.log"
    log_offset = bridge_log.stat().st_size
    stack.stop_prefect_server()
    down_at = time.monotonic()
    uploads = [stack.uploads.upload_file(clip, key=f"outage/clip-{i}.mp4") for i, clip in enumerate(clips)]
    wait_for(lambda: bridge_log.read_bytes()[log_offset:].count(b"unavailable") >= 3, timeout=60,
             what="the bridge to retry against the stopped server")
    while time.monotonic() - down_at < 15:  # the restart itself adds tens of seconds of outage
        assert sum(queue_counts(sqs, stack.provisioned.queue_url)) == len(uploads), "a message left the queue"
        time.sleep(2)
    stack.start_prefect_server()
    outage = time.monotonic() - down_at
    for upload in uploads:
        run = wait_run(stack, upload["key"], TERMINAL, timeout=300)
        assert run["state_type"] == "COMPLETED", run["state"]
        assert_complete_asset(stack, upload["asset_id"], _rendition_names(stack, upload["asset_id"]))
    print(f"Prefect server down for {outage:.0f} s; both uploads published {time.monotonic() - down_at:.0f} s after "
          f"it stopped; supervised restarts: {stack.supervisor.restarts}")
    wait_for(lambda: queue_counts(sqs, stack.provisioned.queue_url) == (0, 0), timeout=30, what="an empty queue")
    assert queue_counts(sqs, stack.provisioned.dlq_url) == (0, 0)
