"""Parsing of S3 notification bodies as they arrive in SQS (recorded shapes from S3 and moto)."""

from __future__ import annotations

import json
import uuid

import pytest

from pixelflow.core.ids import asset_id
from pixelflow.core.s3events import (
    UPLOAD_CREATED,
    Malformed,
    S3Notification,
    S3Record,
    S3TestEvent,
    event_id,
    event_payload,
    occurred,
    parse_body,
    resource_id,
    resource_labels,
)

# An ObjectCreated:Put notification as Amazon S3 sends it (versioned bucket).
AWS_PUT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "eu-west-1",
            "eventTime": "2024-05-01T10:00:00.123Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "203.0.113.9"},
            "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "pixelflow-upload-created",
                "bucket": {"name": "uploads", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": "arn:aws:s3:::uploads"},
                "object": {
                    "key": "videos/Holiday+2024%2Fday+1.mp4",
                    "size": 1048576,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}

# What moto's server delivers (no versionId or sequencer; key URL-encoded with quote_plus).
MOTO_PUT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-24T06:12:13.578Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "pixelflow-upload-created",
                "bucket": {"name": "pixelflow-uploads", "arn": "arn:aws:s3:::pixelflow-uploads"},
                "object": {"key": "dir%2Fmy+clip%2B1.mp4", "size": 10, "eTag": "336311a016184326ddbdd61edd4eeb52"},
            },
        }
    ]
}

TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2026-11-24T06:12:12.034Z",
    "Bucket": "pixelflow-uploads",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


def _record(event_name: str, key: str, **obj) -> dict:
    return {
        "eventSource": "aws:s3",
        "eventName": event_name,
        "eventTime": "2024-05-01T10:00:00.000Z",
        "s3": {"bucket": {"name": "uploads"}, "object": {"key": key, **obj}},
    }


def test_aws_put_record_is_fully_parsed():
    parsed = parse_body(json.dumps(AWS_PUT))
    assert isinstance(parsed, S3Notification)
    (record,) = parsed.records
    assert record == S3Record(
        event_name="ObjectCreated:Put",
        bucket="uploads",
        key="videos/Holiday 2024/day 1.mp4",
        size=1048576,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        sequencer="0055AED6DCD90281E5",
        event_time="2024-05-01T10:00:00.123Z",
        region="eu-west-1",
    )
    assert record.is_created


def test_moto_record_key_is_url_decoded():
    parsed = parse_body(json.dumps(MOTO_PUT).encode())
    (record,) = parsed.records
    # '+' is a space, '%2B' a literal plus, '%2F' a slash.
    assert record.key == "dir/my clip+1.mp4"
    assert record.version_id is None and record.sequencer is None
    assert record.size == 10


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a+b.mp4", "a b.mp4"),
        ("a%2Bb.mp4", "a+b.mp4"),
        ("f%C3%AAte%2F%E5%8B%95%E7%94%BB.mov", "fête/動画.mov"),
        ("100%25.mp4", "100%.mp4"),
        ("plain/key.mp4", "plain/key.mp4"),
    ],
)
def test_encoded_keys(encoded, decoded):
    parsed = parse_body(json.dumps({"Records": [_record("ObjectCreated:Put", encoded, size=1)]}))
    assert parsed.records[0].key == decoded


def test_test_event():
    parsed = parse_body(json.dumps(TEST_EVENT))
    assert parsed == S3TestEvent(bucket="pixelflow-uploads", time="2026-11-24T06:12:12.034Z")


def test_multi_record_message_keeps_order_and_event_names():
    body = {
        "Records": [
            _record("ObjectCreated:Put", "one.mp4", size=1, eTag="e1"),
            _record("ObjectCreated:CompleteMultipartUpload", "two.mp4", size=2, eTag="e2-3"),
            _record("ObjectRemoved:Delete", "three.mp4"),
            _record("s3:ObjectCreated:Copy", "four.mp4", size=4, eTag="e4"),
        ]
    }
    parsed = parse_body(json.dumps(body))
    assert [r.key for r in parsed.records] == ["one.mp4", "two.mp4", "three.mp4", "four.mp4"]
    assert [r.event_name for r in parsed.records] == [
        "ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete", "ObjectCreated:Copy"]
    assert [r.is_created for r in parsed.records] == [True, True, False, True]
    assert parsed.records[2].size is None


@pytest.mark.parametrize(
    "event_name",
    ["ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated", "ObjectRestore:Completed", "LifecycleExpiration:Delete",
     "ObjectTagging:Put", "SomethingNew:Later"],
)
def test_unknown_event_names_are_parsed_but_not_created(event_name):
    parsed = parse_body(json.dumps({"Records": [_record(event_name, "k.mp4")]}))
    assert isinstance(parsed, S3Notification)
    assert not parsed.records[0].is_created


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "body is not JSON"),
        ("not json", "body is not JSON"),
        ('{"Records": [', "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"Records"', "JSON str, not an object"),
        ("{}", "not an S3 notification"),
        ('{"hello": "world"}', "top-level keys: hello"),
        ('{"Records": []}', "'Records' is not a non-empty list"),
        ('{"Records": {"a": 1}}', "'Records' is not a non-empty list"),
        ('{"Records": ["x"]}', "record 0 is not an object"),
        (json.dumps({"Records": [{"eventSource": "aws:sqs", "eventName": "x", "s3": {}}]}), "comes from 'aws:sqs'"),
        (json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {}}]}), "record 0 has no eventName"),
        (json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}), "has no 's3' object"),
        (json.dumps({"Records": [_record("ObjectCreated:Put", "")]}), "has no object key"),
        (json.dumps({"Records": [{**_record("ObjectCreated:Put", "k"), "s3": {"object": {"key": "k"}}}]}), "has no bucket name"),
        (json.dumps({"Records": [_record("ObjectCreated:Put", "k", size="big")]}), "non-numeric size"),
        (json.dumps({"Records": [_record("ObjectCreated:Put", "k", size=-1)]}), "negative size"),
        (json.dumps({"Records": [_record("ObjectCreated:Put", "ok.mp4"), "bad"]}), "record 1 is not an object"),
        (json.dumps({"Type": "Notification", "Message": "nope"}), "SNS message is not JSON"),
    ],
)
def test_malformed_bodies_come_back_with_a_reason(body, reason):
    parsed = parse_body(body)
    assert isinstance(parsed, Malformed), parsed
    assert reason in parsed.reason


def test_sns_envelope_is_unwrapped():
    envelope = {"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": json.dumps(MOTO_PUT)}
    parsed = parse_body(json.dumps(envelope))
    assert parsed.records[0].key == "dir/my clip+1.mp4"
    wrapped_test = {"Type": "Notification", "Message": json.dumps(TEST_EVENT)}
    assert isinstance(parse_body(json.dumps(wrapped_test)), S3TestEvent)


def test_eventbridge_object_created():
    body = {
        "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created",
        "source": "aws.s3", "account": "123456789012", "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
        "resources": ["arn:aws:s3:::uploads"],
        "detail": {
            "version": "0", "bucket": {"name": "uploads"},
            "object": {"key": "a+b.mp4", "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184",
                       "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mppbm", "sequencer": "00617F08299329D189"},
            "request-id": "N4N7GDK58NMKJ12R", "reason": "PutObject",
        },
    }
    (record,) = parse_body(json.dumps(body)).records
    assert record.is_created and record.event_name == "ObjectCreated:PutObject"
    assert (record.key, record.size, record.version_id, record.sequencer) == (
        "a b.mp4", 5, "IYV3p45BT0ac8hjHg1houSdS1a.Mppbm", "00617F08299329D189")
    deleted = {**body, "detail-type": "Object Deleted", "detail": {**body["detail"], "reason": "DeleteObject"}}
    assert not parse_body(json.dumps(deleted)).records[0].is_created


def test_event_ids_are_deterministic_and_distinguish_revisions():
    (record,) = parse_body(json.dumps(AWS_PUT)).records
    again = parse_body(json.dumps(AWS_PUT)).records[0]
    assert event_id(record) == event_id(again)
    assert isinstance(event_id(record), uuid.UUID) and event_id(record).version == 5
    changed = [
        S3Record(**{**record.__dict__, "key": "other.mp4"}),
        S3Record(**{**record.__dict__, "bucket": "other"}),
        S3Record(**{**record.__dict__, "version_id": "v2"}),
        S3Record(**{**record.__dict__, "sequencer": "0055AED6DCD90281E6"}),
    ]
    assert len({event_id(r) for r in [record, *changed]}) == 5
    # Without a version id, the ETag is the revision; quoting does not matter.
    a = S3Record("ObjectCreated:Put", "b", "k", etag='"e1"')
    assert event_id(a) == event_id(S3Record("ObjectCreated:Put", "b", "k", etag="e1", event_time="later"))
    assert event_id(a) != event_id(S3Record("ObjectCreated:Put", "b", "k", etag="e2"))


def test_payload_and_resource():
    (record,) = parse_body(json.dumps(AWS_PUT)).records
    payload = event_payload(record)
    assert payload == {
        "bucket": "uploads",
        "key": "videos/Holiday 2024/day 1.mp4",
        "size": 1048576,
        "etag": "d41d8cd98f00b204e9800998ecf8427e",
        "version_id": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
        "sequencer": "0055AED6DCD90281E5",
        "event_time": "2024-05-01T10:00:00.123Z",
        "event_name": "ObjectCreated:Put",
        "region": "eu-west-1",
        "asset_id": asset_id("uploads", "videos/Holiday 2024/day 1.mp4", "d41d8cd98f00b204e9800998ecf8427e",
                             "096fKKXTRTtl3on89fVO.nfljtsv6qko"),
    }
    json.dumps(payload)  # JSON-serializable as is
    labels = resource_labels(record)
    assert labels["prefect.resource.id"] == resource_id("uploads", record.key) == "pixelflow.upload.uploads/videos/Holiday 2024/day 1.mp4"
    assert all(isinstance(v, str) for v in labels.values())
    assert UPLOAD_CREATED == "pixelflow.upload.created"


def test_occurred():
    (record,) = parse_body(json.dumps(AWS_PUT)).records
    when = occurred(record)
    assert when is not None and when.utcoffset().total_seconds() == 0
    assert when.isoformat() == "2024-05-01T10:00:00.123000+00:00"
    assert occurred(S3Record("ObjectCreated:Put", "b", "k", event_time="yesterday")) is None
    assert occurred(S3Record("ObjectCreated:Put", "b", "k")) is None
