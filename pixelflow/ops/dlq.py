"""The dead-letter queue: messages the bridge could not turn into events, decoded for people."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pixelflow.core.s3events import Malformed, S3Notification, S3TestEvent, parse_body


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receive_count: int
    sent_at: str | None
    objects: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    body_preview: str = ""


def describe(message: dict[str, Any]) -> DeadLetter:
    """Decode one SQS message from the dead-letter queue."""
    body = message.get("Body", "")
    attributes = message.get("Attributes", {})
    parsed = parse_body(body)
    objects: list[dict[str, Any]] = []
    reason = None
    if isinstance(parsed, S3Notification):
        objects = [{"bucket": r.bucket, "key": r.key, "event": r.event_name, "size": r.size, "etag": r.etag}
                   for r in parsed.records]
        reason = "delivery to Prefect kept failing"
    elif isinstance(parsed, S3TestEvent):
        reason = "an s3:TestEvent"
    elif isinstance(parsed, Malformed):
        reason = parsed.reason
    return DeadLetter(
        message_id=message.get("MessageId", ""),
        receive_count=int(attributes.get("ApproximateReceiveCount", 0) or 0),
        sent_at=attributes.get("SentTimestamp"),
        objects=objects,
        reason=reason,
        body_preview=body[:200],
    )


def list_dead_letters(sqs, dlq_url: str, limit: int = 100) -> list[DeadLetter]:
    """Peek at up to ``limit`` messages: they are received, read, and made visible again at once."""
    seen: dict[str, DeadLetter] = {}
    handles: list[str] = []
    try:
        for _ in range(max(1, limit // 10) + 2):
            batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                        VisibilityTimeout=30, AttributeNames=["All"]).get("Messages", [])
            if not batch:
                break
            for message in batch:
                handles.append(message["ReceiptHandle"])
                seen.setdefault(message["MessageId"], describe(message))
            if len(seen) >= limit:
                break
    finally:
        for start in range(0, len(handles), 10):
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                       for i, h in enumerate(handles[start:start + 10])]
            sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=entries)
    return list(seen.values())[:limit]


def redrive(sqs, dlq_url: str, queue_url: str, limit: int | None = None) -> int:
    """Move messages from the dead-letter queue back to the upload queue (send, then delete)."""
    moved = 0
    while limit is None or moved < limit:
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    VisibilityTimeout=30, MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        for message in batch:
            if limit is not None and moved >= limit:
                break
            extra = {"MessageAttributes": message["MessageAttributes"]} if message.get("MessageAttributes") else {}
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"], **extra)
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved
