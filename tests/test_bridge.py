"""The bridge against the session's moto server (S3 notifications -> SQS) and Prefect server.

Every test provisions its own buckets, queue and dead-letter queue (small visibility timeout,
``maxReceiveCount`` 2) with :func:`pixelflow.local.stack.provision`, uploads through S3 and checks
what the Prefect server stored and what is left in the queues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from pixelflow.aws import s3_client, sqs_client
from pixelflow.pipeline.bridge import Bridge
from pixelflow.core.ids import asset_id, normalize_etag
from pixelflow.core.s3events import CAPTIONS_CREATED, UPLOAD_CREATED, resource_id
from pixelflow.local.stack import provision

from tests.events_helpers import TcpForwarder, closed_port, isolated_settings, queue_counts, upload_events, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def chain(moto_server, prefect_server):
    settings = isolated_settings()
    provisioned = provision(settings)
    return settings, provisioned, s3_client(), sqs_client()


class _Running:
    """A bridge polling in a background thread."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.thread = threading.Thread(target=bridge.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.bridge.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "bridge did not stop"
        self.bridge.close()


def _drained(sqs, url):
    return queue_counts(sqs, url) == (0, 0)


def test_uploads_become_events_and_messages_are_deleted(chain, prefect_server):
    settings, provisioned, s3, sqs = chain
    keys = ["clips/first take.mp4", "clips/a+b%c/ü.mov"]
    etags = {}
    for key in keys:
        etags[key] = normalize_etag(s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=key.encode() * 100)["ETag"])

    running = _Running(Bridge(settings, queue_url=provisioned.queue_url))
    try:
        rids = [resource_id(settings.upload_bucket, k) for k in keys]
        events = wait_for(lambda: len(found := upload_events(prefect_server, resource_ids=rids)) == 2 and found,
                          what="two upload events in Prefect")
        wait_for(lambda: _drained(sqs, provisioned.queue_url), what="an empty queue")
    finally:
        running.stop()

    by_key = {e["payload"]["key"]: e for e in events}
    assert set(by_key) == set(keys)
    for key in keys:
        event = by_key[key]
        payload = event["payload"]
        assert event["resource"]["prefect.resource.id"] == f"pixelflow.upload.{settings.upload_bucket}/{key}"
        assert payload["bucket"] == settings.upload_bucket
        assert payload["size"] == len(key.encode()) * 100 and isinstance(payload["size"], int)
        assert payload["etag"] == etags[key]
        assert payload["version_id"] is None
        assert payload["asset_id"] == asset_id(settings.upload_bucket, key, etags[key], None)
        assert payload["event_name"] == "ObjectCreated:Put"
    stats = running.bridge.stats
    assert stats.test_events == 1  # saving the bucket notification sent s3:TestEvent
    assert stats.forwarded_events == 2 and stats.deleted == 3 and stats.malformed == 0
    assert queue_counts(sqs, provisioned.dlq_url) == (0, 0)


def test_redelivered_and_multi_record_messages(chain, prefect_server):
    """A duplicated message yields the same event id, stored once; a message with several
    records yields one event per created object; removals and quarantined keys are ignored."""
    settings, provisioned, s3, sqs = chain
    bucket = settings.upload_bucket

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def record(name, key, etag="e0", seq="00A1"):
        obj = {"key": key, "size": 7, "eTag": etag, "sequencer": seq}
        return {"eventSource": "aws:s3", "eventName": name, "eventTime": now,
                "awsRegion": "us-east-1", "s3": {"bucket": {"name": bucket}, "object": obj}}

    multi = {"Records": [record("ObjectCreated:Put", "multi%2Fone.mp4", "e1"),
                         record("ObjectRemoved:Delete", "multi%2Fgone.mp4"),
                         record("ObjectCreated:CompleteMultipartUpload", "multi%2Ftwo+2.mp4", "e2-2"),
                         record("ObjectCreated:Copy", "quarantine%2Frejected.mp4", "e3")]}
    duplicate = json.dumps({"Records": [record("ObjectCreated:Put", "dup.mp4", "d1", "00B2")]})
    removed_only = json.dumps({"Records": [record("ObjectRemoved:Delete", "old.mp4")]})
    for body in (json.dumps(multi), duplicate, duplicate, removed_only):
        sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody=body)

    running = _Running(Bridge(settings, queue_url=provisioned.queue_url))
    try:
        expected = {"multi/one.mp4", "multi/two 2.mp4", "dup.mp4"}
        rids = [resource_id(bucket, k) for k in sorted(expected | {"multi/gone.mp4", "quarantine/rejected.mp4", "old.mp4"})]
        wait_for(lambda: _drained(sqs, provisioned.queue_url), what="an empty queue")
        events = wait_for(lambda: len(found := upload_events(prefect_server, resource_ids=rids)) >= 3 and found,
                          what="three upload events")
        time.sleep(1.5)  # let any (wrong) extra event reach storage
        events = upload_events(prefect_server, resource_ids=rids)
    finally:
        running.stop()

    assert sorted(e["payload"]["key"] for e in events) == sorted(expected)
    stats = running.bridge.stats
    assert stats.forwarded_events == 4  # 2 from the multi-record message, 1 per duplicate
    assert stats.ignored_records == 3 and stats.malformed == 0
    assert queue_counts(sqs, provisioned.dlq_url) == (0, 0)


def test_a_caption_sidecar_starts_no_run_of_its_own(chain, prefect_server):
    """``talk.en.vtt`` and ``talk.SRT`` uploaded beside ``talk.mp4``: only the video becomes an
    upload event (its run reads the captions); each caption file becomes a
    ``pixelflow.captions.created`` event, which no transcode trigger expects (the
    ``attach-captions`` deployment's does)."""
    settings, provisioned, s3, sqs = chain
    keys = ["talks/talk.en.vtt", "talks/talk.fr.SRT", "talks/talk.mp4"]
    for key in keys:
        s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=b"WEBVTT\n" if key.endswith("vtt") else b"x" * 99)

    running = _Running(Bridge(settings, queue_url=provisioned.queue_url))
    try:
        rids = [resource_id(settings.upload_bucket, k) for k in keys]
        wait_for(lambda: _drained(sqs, provisioned.queue_url) and running.bridge.stats.deleted >= 4,
                 what="an empty queue")
        events = wait_for(lambda: upload_events(prefect_server, resource_ids=rids), what="the video's event")
        captions = wait_for(lambda: (found := upload_events(prefect_server, resource_ids=rids,
                                                            name=CAPTIONS_CREATED)) and len(found) == 2 and found,
                            what="the caption files' events")
    finally:
        running.stop()

    assert [e["payload"]["key"] for e in events] == ["talks/talk.mp4"]
    assert sorted(e["payload"]["key"] for e in captions) == ["talks/talk.en.vtt", "talks/talk.fr.SRT"]
    assert running.bridge.stats.forwarded_events == 3 and running.bridge.stats.ignored_records == 0
    assert queue_counts(sqs, provisioned.dlq_url) == (0, 0)
    # prefect.yaml: the transcode deployments' triggers expect upload events alone, the
    # attach-captions deployments' caption events alone
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        if deployment["entrypoint"].startswith("flows/chunk.py"):  # started by transcode runs alone
            assert "triggers" not in deployment, deployment["name"]
            continue
        expected = CAPTIONS_CREATED if deployment["entrypoint"].startswith("flows/captions.py") else UPLOAD_CREATED
        assert [t["expect"] for t in deployment["triggers"]] == [[expected]], deployment["entrypoint"]


def test_one_bad_record_does_not_send_its_message_to_the_dead_letter_queue(chain, prefect_server):
    """A message with a valid upload record, an invalid record and a record for another bucket:
    the upload becomes its event, the invalid record alone moves to the dead-letter queue, the
    other bucket's record is ignored, and the queue is left empty."""
    settings, provisioned, s3, sqs = chain
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def record(bucket, key):
        return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": now, "awsRegion": "us-east-1",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 7, "eTag": "e1", "sequencer": "0C"}}}

    broken = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": settings.upload_bucket}}}
    body = {"Records": [record(settings.upload_bucket, "split/good.mp4"), broken,
                        record("someone-elses-bucket", "split/foreign.mp4")]}
    sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody=json.dumps(body))
    running = _Running(Bridge(settings, queue_url=provisioned.queue_url))
    rids = [resource_id(settings.upload_bucket, "split/good.mp4"), resource_id("someone-elses-bucket", "split/foreign.mp4")]
    try:
        wait_for(lambda: _drained(sqs, provisioned.queue_url), what="an empty queue")
        events = wait_for(lambda: upload_events(prefect_server, resource_ids=rids), what="the upload's event")
        time.sleep(1.5)  # let any (wrong) extra event reach storage
        events = upload_events(prefect_server, resource_ids=rids)
    finally:
        running.stop()
    assert [e["payload"]["key"] for e in events] == ["split/good.mp4"]
    dead = sqs.receive_message(QueueUrl=provisioned.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                               MessageAttributeNames=["All"]).get("Messages", [])
    assert len(dead) == 1
    moved = json.loads(dead[0]["Body"])
    assert moved["Records"] == [broken] and "no object key" in moved["PixelFlowReasons"][0]
    stats = running.bridge.stats
    assert (stats.forwarded_events, stats.split_records, stats.ignored_records, stats.malformed) == (1, 1, 1, 0)


def test_prefect_unreachable_keeps_message_until_api_is_back(chain, prefect_server):
    settings, provisioned, s3, sqs = chain
    api = urlparse(prefect_server)
    port = closed_port()
    forwarder = TcpForwarder(port, (api.hostname, api.port))
    bridge = Bridge(settings, queue_url=provisioned.queue_url, api_url=f"http://127.0.0.1:{port}{api.path}",
                    max_backoff=1.0, http_timeout=3)
    key = "outage/clip.mp4"
    running = _Running(bridge)
    try:
        s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=b"x" * 1000)
        wait_for(lambda: bridge.stats.post_failures >= 3, what="failed deliveries")
        # The API stays down for several visibility timeouts: the bridge holds the message
        # (extending its visibility) instead of letting it be redelivered towards the DLQ.
        time.sleep(3 * settings.bridge_visibility_timeout)
        assert queue_counts(sqs, provisioned.queue_url) == (0, 1)
        assert upload_events(prefect_server, resource_ids=[resource_id(settings.upload_bucket, key)]) == []
        assert bridge.stats.forwarded_events == 0

        forwarder.start()  # the API is back
        events = wait_for(lambda: upload_events(prefect_server, resource_ids=[resource_id(settings.upload_bucket, key)]),
                          what="the held event")
        wait_for(lambda: _drained(sqs, provisioned.queue_url), what="an empty queue")
    finally:
        running.stop()
        forwarder.stop()
    assert len(events) == 1 and events[0]["payload"]["key"] == key
    assert queue_counts(sqs, provisioned.dlq_url) == (0, 0)


def test_malformed_message_ends_in_dead_letter_queue(chain):
    settings, provisioned, s3, sqs = chain
    sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody="this is not an S3 notification")
    sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody=json.dumps({"Records": [{"eventSource": "aws:s3"}]}))
    running = _Running(Bridge(settings, queue_url=provisioned.queue_url))
    try:
        wait_for(lambda: queue_counts(sqs, provisioned.dlq_url)[0] == 2, timeout=40, what="two messages in the DLQ")
        wait_for(lambda: _drained(sqs, provisioned.queue_url), what="an empty queue")
    finally:
        running.stop()
    bodies = set()
    for _ in range(3):
        for message in sqs.receive_message(QueueUrl=provisioned.dlq_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            bodies.add(message["Body"])
    assert "this is not an S3 notification" in bodies and len(bodies) == 2
    # Received max_receive_count times, then moved by SQS.
    assert running.bridge.stats.malformed == 2 * settings.max_receive_count
    assert running.bridge.stats.deleted == 1  # only the s3:TestEvent


def test_sigterm_releases_undelivered_message(chain, prefect_server, tmp_path):
    """``pixelflow bridge`` stopped while Prefect is unreachable exits cleanly and leaves the
    message visible in the queue; a later bridge delivers it."""
    settings, provisioned, s3, sqs = chain
    api = urlparse(prefect_server)
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}{api.path}",
        "PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket,
        "PIXELFLOW_QUEUE_NAME": settings.queue_name,
        "PIXELFLOW_DLQ_NAME": settings.dlq_name,
        "PIXELFLOW_BRIDGE_WAIT_SECONDS": "1",
        "PIXELFLOW_BRIDGE_VISIBILITY_TIMEOUT": "60",
    })
    log = tmp_path / "bridge.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "pixelflow.cli", "bridge"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    key = "sigterm/clip.mp4"
    try:
        s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=b"y" * 10)
        wait_for(lambda: "retrying in" in log.read_text(), timeout=60, what="a failed delivery in the bridge log")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "released 1 unhandled message(s)" in text, text
    # Visible again right away, although the visibility timeout was 60 s.
    assert queue_counts(sqs, provisioned.queue_url) == (1, 0)

    bridge = Bridge(settings, queue_url=provisioned.queue_url)
    try:
        bridge.run(max_idle_polls=1)
    finally:
        bridge.close()
    assert bridge.stats.forwarded_events == 1
    wait_for(lambda: upload_events(prefect_server, resource_ids=[resource_id(settings.upload_bucket, key)]),
             what="the delivered event")
    assert queue_counts(sqs, provisioned.queue_url) == (0, 0)


def test_provision_is_idempotent(chain):
    settings, provisioned, s3, sqs = chain
    again = provision(settings)
    assert again == provisioned
    attrs = sqs.get_queue_attributes(QueueUrl=provisioned.queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == provisioned.dlq_arn
    assert int(redrive["maxReceiveCount"]) == settings.max_receive_count
    assert json.loads(attrs["Policy"])["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == \
        f"arn:aws:s3:::{settings.upload_bucket}"
    notification = s3.get_bucket_notification_configuration(Bucket=settings.upload_bucket)["QueueConfigurations"]
    assert [(n["QueueArn"], n["Events"]) for n in notification] == [(provisioned.queue_arn, ["s3:ObjectCreated:*"])]
    # Re-provisioning did not rewrite the notification: a single s3:TestEvent in the queue.
    messages = sqs.receive_message(QueueUrl=provisioned.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(messages) == 1 and json.loads(messages[0]["Body"])["Event"] == "s3:TestEvent"
    # A changed maxReceiveCount converges.
    provision(settings.model_copy(update={"max_receive_count": 7}))
    attrs = sqs.get_queue_attributes(QueueUrl=provisioned.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == 7
