"""The Lambda entry points with real payloads: the bridge handler fed the SQS event a Lambda event
source mapping delivers (built from messages S3 notifications really put in moto's SQS), and the
API handler fed Function URL requests, its tokens read from Secrets Manager (moto)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from pixelflow.ops import lambda_handlers
from pixelflow.aws import s3_client, secretsmanager_client, sqs_client
from pixelflow.core.s3events import CAPTIONS_CREATED, S3Notification, event_id, parse_body
from pixelflow.local.stack import provision
from tests.api_helpers import make_settings
from tests.events_helpers import closed_port, isolated_settings, upload_events, wait_for

pytestmark = pytest.mark.integration


def _lambda_event(messages: list[dict], queue_arn: str) -> dict:
    """The event an SQS event source mapping hands a function, for these received messages."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": m["Attributes"].get("ApproximateReceiveCount", "1"),
                       "SentTimestamp": m["Attributes"].get("SentTimestamp", str(int(time.time() * 1000))),
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                       "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn, "awsRegion": "us-east-1"} for m in messages]}


def _receive_all(sqs, url: str, expected: int) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + 20
    while len(messages) < expected and time.monotonic() < deadline:
        messages += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        AttributeNames=["All"]).get("Messages", [])
    return messages


def test_the_bridge_handler_forwards_real_sqs_event_payloads(moto_server, prefect_server):
    settings = isolated_settings()
    chain = provision(settings)
    s3, sqs = s3_client(), sqs_client()
    sqs.purge_queue(QueueUrl=chain.queue_url)  # the s3:TestEvent of the new notification, if any
    keys = ["incoming/a clip.mp4", "incoming/b.mov"]
    for key in keys:
        s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=uuid.uuid4().bytes)
    s3.put_object(Bucket=settings.upload_bucket, Key=f"{settings.quarantine_prefix}x/source", Body=b"ours")
    s3.put_object(Bucket=settings.upload_bucket, Key="incoming/a clip.en.vtt", Body=b"WEBVTT\n")  # a sidecar: no run
    sqs.send_message(QueueUrl=chain.queue_url, MessageBody="definitely not an S3 notification")
    sqs.send_message(QueueUrl=chain.queue_url, MessageBody=json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": settings.upload_bucket}))
    messages = _receive_all(sqs, chain.queue_url, 5)
    assert len(messages) == 6
    malformed = [m["MessageId"] for m in messages if m["Body"].startswith("definitely")]

    result = lambda_handlers.bridge_handler(_lambda_event(messages, chain.queue_arn), None, settings=settings,
                                            post=lambda_handlers.poster(prefect_server))
    assert result == {"batchItemFailures": [{"itemIdentifier": malformed[0]}]}
    # The same events, with the same ids, as the container bridge posts: a message delivered by
    # both (or twice) starts one run.
    records = [r for m in messages if isinstance(n := parse_body(m["Body"]), S3Notification) for r in n.records]
    ours = {str(event_id(r)) for r in records if r.key in keys}
    assert len(ours) == 2
    stored = wait_for(lambda: (found := upload_events(prefect_server, event_ids=sorted(ours))) and len(found) == 2
                      and found, timeout=30, what="the forwarded events")
    assert sorted(e["payload"]["key"] for e in stored) == sorted(keys)
    # a caption file is a captions event (the attach-captions trigger's), never an upload event
    caption = [r for r in records if r.key == "incoming/a clip.en.vtt"]
    assert len(caption) == 1 and upload_events(prefect_server, event_ids=[str(event_id(caption[0]))]) == []
    wait_for(lambda: upload_events(prefect_server, event_ids=[str(event_id(caption[0], CAPTIONS_CREATED))],
                                   name=CAPTIONS_CREATED), timeout=30, what="the caption's event")

    # With Prefect unreachable, every message that carries an upload or a caption is reported failed (retried).
    down = lambda_handlers.bridge_handler(_lambda_event(messages, chain.queue_arn), None, settings=settings,
                                          post=lambda_handlers.poster(f"http://127.0.0.1:{closed_port()}/api",
                                                                      timeout=2))
    uploads = {m["MessageId"] for m in messages if any(r.key in keys + ["incoming/a clip.en.vtt"] for r in
                                                       getattr(parse_body(m["Body"]), "records", []))}
    assert {f["itemIdentifier"] for f in down["batchItemFailures"]} == uploads | set(malformed)


def _url_event(method: str, path: str, headers: dict[str, str], query: str = "") -> dict:
    """A Lambda Function URL request (payload format 2.0)."""
    host = "abcdefghij.lambda-url.us-east-1.on.aws"
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
            "headers": {"host": host, "user-agent": "curl/8", **headers}, "isBase64Encoded": False,
            "requestContext": {"accountId": "anonymous", "apiId": "abcdefghij", "domainName": host,
                               "domainPrefix": "abcdefghij", "requestId": str(uuid.uuid4()), "routeKey": "$default",
                               "stage": "$default", "time": "02/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
                               "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.7", "userAgent": "curl/8"}}}


def test_the_api_handler_serves_function_url_requests_with_tokens_from_secrets_manager(moto_server, monkeypatch):
    settings = make_settings(api_tokens=[])
    token = uuid.uuid4().hex
    secret = secretsmanager_client().create_secret(Name=f"pixelflow-api-tokens-{uuid.uuid4().hex[:8]}",
                                                   SecretString=json.dumps([token, "rotated-out-later"]))
    for name, value in {"PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket,
                        "PIXELFLOW_OUTPUT_BUCKET": settings.output_bucket,
                        "PIXELFLOW_RECORDS_TABLE": settings.records_table,
                        "PIXELFLOW_API_TOKENS_SECRET_ID": secret["ARN"]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PIXELFLOW_API_TOKENS", raising=False)
    monkeypatch.setattr(lambda_handlers, "_api", None)

    listed = lambda_handlers.api_handler(_url_event("GET", "/v1/assets", {"authorization": f"Bearer {token}"}), None)
    assert listed["statusCode"] == 200 and json.loads(listed["body"]) == {"data": [], "next_cursor": None}
    refused = lambda_handlers.api_handler(_url_event("GET", "/v1/assets", {"authorization": "Bearer nope"}), None)
    assert refused["statusCode"] == 401 and json.loads(refused["body"])["error"]["code"] == "unauthorized"
    created = lambda_handlers.api_handler(dict(_url_event("POST", "/v1/uploads", {
        "authorization": f"Bearer {token}", "content-type": "application/json"}),
        body=json.dumps({"filename": "a.mp4", "size": 10})), None)
    assert created["statusCode"] == 201
    upload = json.loads(created["body"])["data"]
    assert upload["url"].startswith(f"{moto_server}/{settings.upload_bucket}/uploads/{upload['id']}/a.mp4?")
