"""The real event chain on loopback, end to end.

A dedicated local stack (:class:`pixelflow.local.stack.Stack`) with its own Prefect server, on the
session's moto server with fresh bucket and queue names: ``prefect deploy --name local``
creates the deployment trigger, a process worker and the bridge run as real processes. An upload
made with boto3 must become exactly one flow run, created by the automation, that completes and
publishes the asset; a redelivered notification must not start a second run; a malformed
message must end in the dead-letter queue and nowhere else.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from pathlib import Path

import pytest

from pixelflow.core.ids import asset_id, normalize_etag
from pixelflow.local.stack import Stack
from tests.conftest import make_clip
from tests.events_helpers import queue_counts, running_stack, stack_config, wait_for
from tests.fault_helpers import find_processes

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(moto_server, tmp_path_factory):
    config = stack_config(moto_server, tmp_path_factory.mktemp("stack"), "stack", PIXELFLOW_MAX_RECEIVE_COUNT="2",
                          PIXELFLOW_BRIDGE_WAIT_SECONDS="1", PIXELFLOW_BRIDGE_VISIBILITY_TIMEOUT="3",
                          PIXELFLOW_LADDER="240,360")
    with running_stack(config) as instance:
        yield instance


def _runs(stack: Stack) -> list[dict]:
    return stack.prefect.flow_runs()


def test_upload_starts_exactly_one_run_that_publishes_the_asset(stack, media_dir):
    settings = stack.settings()
    s3, sqs = stack.clients()
    queue_url, dlq_url = stack.provisioned.queue_url, stack.provisioned.dlq_url
    malformed = "this is not an S3 notification"
    sqs.send_message(QueueUrl=queue_url, MessageBody=malformed)

    clip = make_clip(media_dir / "stack-360p.mp4", seconds=2, size="640x360")
    key = "incoming/my first clip.mp4"
    etag = normalize_etag(s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=clip.read_bytes())["ETag"])
    uploaded_at = time.time()
    asset = asset_id(settings.upload_bucket, key, etag, None)

    manifest = stack.uploads.wait_for_manifest(asset, timeout=600)
    assert manifest["asset_id"] == asset and manifest["status"] == "ready"
    run = wait_for(lambda: (r := stack.prefect.flow_run_for(key, etag)) and r["state_type"] == "COMPLETED" and r,
                   timeout=120, what="the flow run to complete")
    print(f"upload -> manifest: {time.time() - uploaded_at:.1f} s")

    # Forked from the stack's flow starter, which had Prefect and the flow imported already.
    started = (stack.config.log_dir / "flow-starter.log").read_text()
    assert re.search(rf"flow run {run['id']}: pid \d+, warm start", started), started

    # Started by the deployment trigger, with typed parameters from the event payload.
    assert run["created_by"]["type"] == "AUTOMATION"
    assert run["created_by"]["display_value"] == "pixelflow-local-upload-created"
    assert run["parameters"] == {"bucket": settings.upload_bucket, "key": key, "etag": etag, "version_id": None}

    # The asset is in the production bucket.
    prefix = f"{settings.asset_prefix}{asset}/"
    keys = {o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=settings.output_bucket, Prefix=prefix)["Contents"]}
    assert {"master.m3u8", "manifest.json"} <= keys
    assert any(k.endswith("/index.m3u8") for k in keys)

    # A redelivered notification (same bucket, key and ETag) carries the same event id: no second run.
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    duplicate = {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": now,
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": settings.upload_bucket}, "object": {"key": "incoming/my+first+clip.mp4",
                                                                         "size": clip.stat().st_size, "eTag": etag}},
    }]}
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(duplicate))

    # The malformed message goes to the DLQ after max_receive_count receives; the queue drains.
    wait_for(lambda: queue_counts(sqs, dlq_url)[0] == 1, timeout=60, what="the malformed message in the DLQ")
    wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), timeout=60, what="an empty upload queue")
    time.sleep(5)  # several worker polls: a second run would have been created and picked up by now

    runs = _runs(stack)
    assert [r["id"] for r in runs] == [run["id"]], [(r["name"], r["parameters"]) for r in runs]
    assert runs[0]["state_type"] == "COMPLETED"

    assert queue_counts(sqs, queue_url) == (0, 0)
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10,
                                                     WaitTimeSeconds=1).get("Messages", [])]
    assert bodies == [malformed]


def test_a_cancelled_run_stops_its_encode_and_publishes_nothing(stack, media_dir):
    """Cancelling a run in Prefect (the UI's Cancel) reaches the run forked from the flow
    starter: it ends Cancelled, its FFmpeg processes end with it, and no manifest is written."""
    settings = stack.settings()
    s3, _ = stack.clients()
    upload = stack.uploads.upload_file(make_clip(media_dir / "stack-cancel.mp4", seconds=60, size="1280x720"),
                                       key="incoming/cancel me.mp4")
    key, etag, asset = upload["key"], upload["etag"], upload["asset_id"]
    scratch = str(Path(settings.scratch_dir) / asset)
    wait_for(lambda: find_processes(scratch, "ffmpeg"), timeout=300, interval=0.2, what="the run's FFmpeg")
    run = stack.prefect.flow_run_for(key, etag)
    stack.prefect.api("POST", f"/flow_runs/{run['id']}/set_state",
                      json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
    ended = wait_for(lambda: (r := stack.prefect.api("GET", f"/flow_runs/{run['id']}"))["state_type"] in
                     ("CANCELLED", "COMPLETED", "FAILED", "CRASHED") and r, timeout=120, what="the run to end")
    assert ended["state_type"] == "CANCELLED", ended["state"]
    wait_for(lambda: not find_processes(scratch, "ffmpeg"), timeout=30, what="the run's FFmpeg processes to end")
    listed = s3.list_objects_v2(Bucket=settings.output_bucket, Prefix=f"{settings.asset_prefix}{asset}/")
    assert not [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("manifest.json")]


def test_a_caption_sent_after_its_video_is_attached_by_its_own_deployment_without_a_transcode(stack, media_dir):
    """``prefect deploy --name local`` deploys the ``attach-captions`` flow with its trigger too: a
    caption file put beside a published video becomes a ``pixelflow.captions.created`` event, whose
    run (created by that trigger) attaches it to the asset; no transcode run starts for it."""
    settings = stack.settings()
    s3, _ = stack.clients()
    upload = stack.uploads.upload_file(make_clip(media_dir / "stack-captions.mp4", seconds=2, size="640x360"),
                                       key="incoming/talk.mp4")
    key, etag, asset = upload["key"], upload["etag"], upload["asset_id"]
    stack.uploads.wait_for_manifest(asset, timeout=600)
    wait_for(lambda: (r := stack.prefect.flow_run_for(key, etag)) and r["state_type"] == "COMPLETED", timeout=120,
             what="the video's run to complete")
    transcodes = [r["id"] for r in _runs(stack)]

    caption = "incoming/talk.en.vtt"
    s3.put_object(Bucket=settings.upload_bucket, Key=caption, Body=b"WEBVTT\n\n00:00:00.500 --> 00:00:01.500\nHi\n")
    master_key = f"{settings.asset_prefix}{asset}/master.m3u8"
    wait_for(lambda: 'LANGUAGE="en"' in s3.get_object(Bucket=settings.output_bucket, Key=master_key)["Body"].read()
             .decode(), timeout=300, what="the caption attached")
    attach = stack.prefect.api("GET", "/deployments/name/attach-captions/local")
    runs = stack.prefect.api("POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [attach["id"]]}}})
    assert [(r["parameters"]["key"], r["created_by"]["display_value"]) for r in runs] == [
        (caption, "pixelflow-local-captions-created")]
    time.sleep(5)  # several worker polls: a transcode run for the caption would have been created by now
    assert [r["id"] for r in _runs(stack)] == transcodes
