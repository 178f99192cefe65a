"""The reconciler retries failed uploads: a run that failed for a service reason is run again once
its backoff has passed and publishes; a rejected upload is never run again; the retry limit holds
across reconciler rounds (it is kept in S3, not in a process).

Real parts: the flow in-process on the session's Prefect server and moto; the reconciler creates
real runs of a real deployment, which the test then executes (as a worker would) with
``prefect.flow_engine.run_flow``. Time is passed to the reconciler (``now``), never slept."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.upload import Upload
from pixelflow.settings import PixelFlowSettings
from tests.conftest import make_clip

pytestmark = pytest.mark.integration

#: A scratch disk too small for any source (claimed capacity huge, so it is no rejection): the
#: download fails with ``insufficient_disk``, a service failure.
DISK_FULL = {"PIXELFLOW_SCRATCH_HEADROOM": "1e15", "PIXELFLOW_SCRATCH_BYTES": str(10**30),
             "PIXELFLOW_TASK_RETRIES": "0"}


@pytest.fixture
def deployment(prefect_server):
    """A deployment of the transcode flow (no trigger, no worker: the test executes its runs)."""
    from prefect.client.orchestration import get_client

    from flows.transcode import transcode

    name = f"retries-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow(transcode), name=name)
    return name


def _upload(buckets, media_dir, key: str, *, media: bool = True) -> Upload:
    up, _ = buckets
    s3 = s3_client()
    if media:
        clip = make_clip(media_dir / f"retry-{uuid.uuid4().hex[:6]}.mp4", seconds=2, size="640x360")
        s3.upload_file(str(clip), up, key)
    else:
        s3.put_object(Bucket=up, Key=key, Body=b"these are meeting notes, not a video\n" * 40)
    head = s3.head_object(Bucket=up, Key=key)
    return Upload.from_head(up, key, head)


def _run_now(upload: Upload, monkeypatch, env: dict[str, str]):
    from flows.transcode import transcode

    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return transcode(bucket=upload.bucket, key=upload.key, etag=upload.etag, return_state=True)


def _execute(flow_run_id: str, monkeypatch, env: dict[str, str]):
    """Run a created flow run in this process, as a worker would (``env`` its environment)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from flows.transcode import transcode

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return run_flow(transcode, flow_run=flow_run, return_type="state")


def _reconcile(deployment: str, now: datetime):
    from prefect.client.orchestration import get_client

    from pixelflow.ops.retries import retry_failed

    with get_client(sync_client=True) as client:
        return retry_failed(PixelFlowSettings(), s3_client(), client, deployment, now=now)


def _record(upload: Upload) -> dict:
    from pixelflow.ops.assets import read_rejection

    return read_rejection(upload.asset_id, PixelFlowSettings(), s3_client())


def _published(upload: Upload) -> bool:
    from pixelflow.ops.assets import READY, get_asset

    return get_asset(upload.asset_id, PixelFlowSettings(), s3_client()).status == READY


def _failed_at(upload: Upload) -> datetime:
    return datetime.fromisoformat(_record(upload)["recorded_at"])


def test_a_failed_upload_is_retried_after_its_backoff_and_publishes(prefect_server, deployment, buckets, media_dir,
                                                                    monkeypatch):
    from pixelflow.ops.retries import RETRIED_TAG, read_retries

    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    monkeypatch.setenv("PIXELFLOW_FAILED_RETRY_BACKOFF_SECONDS", "600")
    upload = _upload(buckets, media_dir, "retry/transient.mp4")
    state = _run_now(upload, monkeypatch, DISK_FULL)
    assert state.is_failed() and state.message.startswith("insufficient_disk:"), state.message
    assert _record(upload)["status"] == "failed"
    failed_at = _failed_at(upload)

    assert _reconcile(deployment, failed_at + timedelta(seconds=599)) == []  # still within its backoff
    (retry,) = _reconcile(deployment, failed_at + timedelta(seconds=601))
    assert (retry.asset_id, retry.attempt, retry.code) == (upload.asset_id, 1, "insufficient_disk")
    # Another reconciler round while the retry waits for a worker starts nothing more.
    assert _reconcile(deployment, failed_at + timedelta(days=1)) == []

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(retry.flow_run_id)
    assert RETRIED_TAG in run.tags and run.parameters["key"] == upload.key and run.parameters["etag"] == upload.etag
    done = _execute(retry.flow_run_id, monkeypatch, {})
    assert done.is_completed(), done.message
    assert _published(upload)
    # Published: the failure record and the retries' record are gone, nothing is retried again.
    assert _record(upload) is None and read_retries(upload.asset_id, PixelFlowSettings(), s3_client()) == {}
    assert _reconcile(deployment, failed_at + timedelta(days=2)) == []


def test_a_rejected_upload_is_never_retried(prefect_server, deployment, buckets, media_dir, monkeypatch):
    monkeypatch.setenv("PIXELFLOW_FAILED_RETRY_BACKOFF_SECONDS", "1")
    upload = _upload(buckets, media_dir, "retry/notes.mp4", media=False)
    state = _run_now(upload, monkeypatch, {})
    assert state.is_failed() and state.message.startswith("not_media:"), state.message
    assert _record(upload)["status"] == "rejected"
    for days in (1, 10, 100):
        assert _reconcile(deployment, _failed_at(upload) + timedelta(days=days)) == []
    # A failure with a code retrying cannot help is not retried either, whatever its status says.
    from pixelflow.ops.retries import is_retryable

    assert not is_retryable({**_record(upload), "status": "failed"})


def test_the_retry_limit_stops_retries_across_reconciler_rounds(prefect_server, deployment, buckets, media_dir,
                                                                monkeypatch):
    from pixelflow.ops.retries import read_retries

    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    monkeypatch.setenv("PIXELFLOW_FAILED_RETRY_LIMIT", "2")
    monkeypatch.setenv("PIXELFLOW_FAILED_RETRY_BACKOFF_SECONDS", "60")
    upload = _upload(buckets, media_dir, "retry/always-full.mp4")
    assert _run_now(upload, monkeypatch, DISK_FULL).is_failed()

    clock = _failed_at(upload)  # the reconciler's time: ahead of the real one, never behind a failure
    for attempt in (1, 2):
        since = max(clock, _failed_at(upload))  # the backoff counts from the latest failure or retry
        wait = 60 * 2 ** (attempt - 1)  # and doubles with each retry
        assert _reconcile(deployment, since + timedelta(seconds=wait - 1)) == []
        clock = since + timedelta(seconds=wait + 1)
        (retry,) = _reconcile(deployment, clock)
        assert retry.attempt == attempt
        again = _execute(retry.flow_run_id, monkeypatch, DISK_FULL)  # the disk is still full
        assert again.is_failed() and again.message.startswith("insufficient_disk:")
    # The limit is reached: the next round reports it once, later rounds start nothing.
    (given_up,) = _reconcile(deployment, clock + timedelta(days=1))
    assert given_up.flow_run_id is None and given_up.attempt == 2
    for days in (2, 30):
        assert _reconcile(deployment, clock + timedelta(days=days)) == []
    state = read_retries(upload.asset_id, PixelFlowSettings(), s3_client())
    assert state["attempts"] == 2 and len(state["flow_run_ids"]) == 2 and state["gave_up_at"]
    assert not _published(upload)


def test_the_scheduled_reconciler_function_retries_a_failed_upload(prefect_server, deployment, buckets, media_dir,
                                                                   monkeypatch):
    """The Lambda entry point EventBridge Scheduler invokes, with the schedule's input: one round
    starts the retry of a failed upload whose backoff has passed; bad input is refused with a code."""
    from pixelflow.errors import PixelFlowError
    from pixelflow.ops.lambda_handlers import reconcile_handler

    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    monkeypatch.setenv("PIXELFLOW_FAILED_RETRY_BACKOFF_SECONDS", "0.001")
    upload = _upload(buckets, media_dir, "retry/scheduled.mp4")
    assert _run_now(upload, monkeypatch, DISK_FULL).is_failed()
    for bad, code in (({"deployment": "a b"}, "invalid_request"), ({"older_than": -1}, "invalid_request"),
                      ({"within": "1d"}, "invalid_request"), ({"repair": "yes"}, "invalid_request"),
                      ({"deployment": deployment, "extra": 1}, "unknown_field")):
        with pytest.raises(PixelFlowError) as refused:
            reconcile_handler(bad)
        assert refused.value.code.value == code, bad
    done = reconcile_handler({"deployment": deployment, "older_than": 300, "within": 86400, "repair": False})
    (retried,) = done["retried"]
    assert retried["asset_id"] == upload.asset_id and retried["attempt"] == 1
    assert (done["started"], done["given_up"], done["repaired"]) == ([], [], 0)
    assert _execute(retried["flow_run_id"], monkeypatch, {}).is_completed()
    assert _published(upload)
