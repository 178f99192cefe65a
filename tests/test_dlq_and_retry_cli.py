"""``pixelflow dlq`` and ``pixelflow retry`` against real SQS (moto server) and a real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from pixelflow.aws import sqs_client


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelflow.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture
def queues(moto_server, monkeypatch):
    sqs = sqs_client()
    suffix = uuid.uuid4().hex[:8]
    queue = sqs.create_queue(QueueName=f"q-{suffix}")["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    monkeypatch.setenv("PIXELFLOW_QUEUE_NAME", f"q-{suffix}")
    monkeypatch.setenv("PIXELFLOW_DLQ_NAME", f"dlq-{suffix}")
    return sqs, queue, dlq


def test_dlq_list_decodes_and_redrive_moves_back(queues):
    sqs, queue, dlq = queues
    notification = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": "uploads"},
                                        "object": {"key": "my+clip%2Fa.mp4", "size": 12, "eTag": "abc"}}}]}
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(notification))
    sqs.send_message(QueueUrl=dlq, MessageBody="garbage, not JSON")

    listed = cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert len(letters) == 2
    objects = [o for letter in letters for o in letter["objects"]]
    assert objects == [{"bucket": "uploads", "key": "my clip/a.mp4", "event": "ObjectCreated:Put", "size": 12,
                        "etag": "abc"}]
    assert any(letter["reason"] and not letter["objects"] for letter in letters)

    human = cli("dlq", "list")
    assert "s3://uploads/my clip/a.mp4" in human.stdout

    moved = cli("dlq", "redrive", "--json")
    assert json.loads(moved.stdout) == {"moved": 2}
    bodies = []
    for _ in range(3):
        bodies += [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])]
    assert sorted(bodies) == sorted([json.dumps(notification), "garbage, not JSON"])
    left = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages",
                                                                  "ApproximateNumberOfMessagesNotVisible"])
    assert left["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_retry_needs_a_run_or_a_time_and_reports_unknown_runs(prefect_server):
    assert cli("retry").returncode == 2
    # other tests in the session leave failed runs behind; a deployment no run belongs to selects none
    nothing = cli("retry", "--failed-since", "1h", "--deployment", f"none-{uuid.uuid4().hex[:8]}", "--json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == [], nothing.stderr
    missing = cli("retry", str(uuid.uuid4()))
    assert missing.returncode != 0
