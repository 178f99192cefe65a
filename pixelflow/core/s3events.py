"""Parse S3 event notifications, as delivered to an SQS queue, into typed records.

Pure code: no AWS or Prefect imports. The bridge (:mod:`pixelflow.pipeline.bridge`) receives SQS
messages, calls :func:`parse_body` on each body and turns every created object into a Prefect
event with :func:`event_id`, :func:`resource_id` and :func:`event_payload`.

Three envelopes are understood:

* S3's own notification (``{"Records": [...]}``), sent straight to SQS;
* the same notification wrapped by SNS (``{"Type": "Notification", "Message": "..."}``);
* EventBridge's ``Object Created`` event (``{"source": "aws.s3", "detail": {...}}``).

S3 URL-encodes object keys in notifications (``/`` may appear as ``%2F`` and a space as ``+``);
keys are always decoded with :func:`urllib.parse.unquote_plus`.

Example:
    >>> body = ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",'
    ...         ' "s3": {"bucket": {"name": "up"}, "object": {"key": "my+clip.mp4", "size": 5}}}]}')
    >>> parsed = parse_body(body)
    >>> parsed.records[0].key, parsed.records[0].is_created
    ('my clip.mp4', True)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Union
from urllib.parse import unquote_plus

from pixelflow.core.ids import normalize_etag
from pixelflow.core.upload import Upload

#: Name of the Prefect event emitted for every object created in the upload bucket.
UPLOAD_CREATED = "pixelflow.upload.created"
#: ... and for a caption file (``talk.en.vtt``) created there: the ``attach-captions`` flow's
#: trigger, never a transcode's.
CAPTIONS_CREATED = "pixelflow.captions.created"

#: Prefix of the Prefect resource id of an upload: ``pixelflow.upload.<bucket>/<key>``.
RESOURCE_PREFIX = "pixelflow.upload."

#: Namespace of the deterministic event ids (uuid5).
EVENT_NAMESPACE = uuid.UUID("5b1e3c1e-6f0a-4f5e-9c55-7069786c666c")


@dataclass(frozen=True)
class S3Record:
    """One object-level record of an S3 notification.

    Attributes:
        event_name: S3's event name without the ``s3:`` prefix, e.g. ``ObjectCreated:Put``.
        bucket: Bucket name.
        key: Object key, URL-decoded.
        size: Object size in bytes, when S3 reports it.
        etag: ETag without quotes, when S3 reports it.
        version_id: Version id (versioned buckets only).
        sequencer: S3's per-key ordering token, when reported.
        event_time: ISO 8601 time of the event as sent by S3.
        region: AWS region of the bucket.
    """

    event_name: str
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None
    region: str | None = None

    @property
    def upload(self) -> Upload:
        """The upload this record announces."""
        return Upload(self.bucket, self.key, self.etag, self.version_id, self.size)

    @property
    def is_created(self) -> bool:
        """Whether this record announces a new object (``ObjectCreated:*``)."""
        return self.event_name.startswith("ObjectCreated:")


@dataclass(frozen=True)
class InvalidRecord:
    """One record of a notification that is not a record PixelFlow understands."""

    index: int
    reason: str
    raw: Any


@dataclass(frozen=True)
class S3Notification:
    """A message holding one or more S3 records (any event names).

    Attributes:
        records: The records that parsed.
        invalid: The records that did not (the message had valid ones too): each with its
            position, the reason and the record as it was.
    """

    records: tuple[S3Record, ...]
    invalid: tuple[InvalidRecord, ...] = ()


@dataclass(frozen=True)
class S3TestEvent:
    """``s3:TestEvent``: sent by S3 when a bucket's notification configuration is saved."""

    bucket: str | None = None
    time: str | None = None


@dataclass(frozen=True)
class Malformed:
    """A body that is not an S3 notification PixelFlow understands, with the reason."""

    reason: str


ParsedBody = Union[S3Notification, S3TestEvent, Malformed]


class _Invalid(ValueError):
    pass


def parse_body(body: str | bytes) -> ParsedBody:
    """Parse an SQS message body.

    Never raises: anything that is not a well-formed S3 notification is returned as
    :class:`Malformed` with a human-readable reason. A notification with valid and invalid
    records keeps the valid ones and lists the others in :attr:`S3Notification.invalid`.

    Args:
        body: The SQS message body.

    Returns:
        :class:`S3Notification`, :class:`S3TestEvent` or :class:`Malformed`.

    Example:
        >>> parse_body("not json")
        Malformed(reason='body is not JSON: Expecting value at line 1 column 1')
        >>> parse_body('{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "up"}')
        S3TestEvent(bucket='up', time=None)
        >>> mixed = parse_body('{"Records": [{"eventSource": "aws:s3"}, {"eventName": "ObjectCreated:Put",'
        ...                    ' "s3": {"bucket": {"name": "up"}, "object": {"key": "a.mp4"}}}]}')
        >>> [r.key for r in mixed.records], [(i.index, i.reason) for i in mixed.invalid]
        (['a.mp4'], [(0, 'record 0 has no eventName')])
    """
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return Malformed(f"body is not JSON: {detail}{where}")
    try:
        return _parse_document(document, depth=0)
    except _Invalid as exc:
        return Malformed(str(exc))


def _parse_document(document: Any, depth: int) -> ParsedBody:
    if not isinstance(document, dict):
        raise _Invalid(f"body is a JSON {type(document).__name__}, not an object")
    if document.get("Event") == "s3:TestEvent":
        return S3TestEvent(bucket=_opt_str(document.get("Bucket")), time=_opt_str(document.get("Time")))
    if "Records" in document:
        records = document["Records"]
        if not isinstance(records, list) or not records:
            raise _Invalid("'Records' is not a non-empty list")
        parsed, invalid = [], []
        for index, raw in enumerate(records):
            try:
                parsed.append(_parse_record(raw, index))
            except _Invalid as exc:
                invalid.append(InvalidRecord(index, str(exc), raw))
        if not parsed:  # nothing in it is a record: the message itself is malformed
            raise _Invalid(invalid[0].reason if len(invalid) == 1 else
                           f"no record is valid ({'; '.join(i.reason for i in invalid[:3])})")
        return S3Notification(tuple(parsed), tuple(invalid))
    if document.get("Type") == "Notification" and isinstance(document.get("Message"), str):
        if depth > 0:
            raise _Invalid("nested SNS envelopes")
        try:
            inner = json.loads(document["Message"])
        except json.JSONDecodeError as exc:
            raise _Invalid(f"SNS message is not JSON: {exc.msg}") from None
        return _parse_document(inner, depth + 1)
    if document.get("source") == "aws.s3" and isinstance(document.get("detail"), dict):
        return S3Notification((_parse_eventbridge(document),))
    keys = ", ".join(sorted(map(str, document))[:8]) or "none"
    raise _Invalid(f"not an S3 notification (top-level keys: {keys})")


def _parse_record(record: Any, index: int) -> S3Record:
    where = f"record {index}"
    if not isinstance(record, dict):
        raise _Invalid(f"{where} is not an object")
    source = record.get("eventSource")
    if source is not None and source != "aws:s3":
        raise _Invalid(f"{where} comes from {source!r}, not aws:s3")
    event_name = record.get("eventName")
    if not isinstance(event_name, str) or not event_name:
        raise _Invalid(f"{where} has no eventName")
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise _Invalid(f"{where} has no 's3' object")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(bucket.get("name"), str) or not bucket["name"]:
        raise _Invalid(f"{where} has no bucket name")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
        raise _Invalid(f"{where} has no object key")
    return S3Record(
        event_name=event_name.removeprefix("s3:"),
        bucket=bucket["name"],
        key=unquote_plus(obj["key"]),
        size=_opt_size(obj.get("size"), where),
        etag=normalize_etag(_opt_str(obj.get("eTag"))),
        version_id=_opt_str(obj.get("versionId")),
        sequencer=_opt_str(obj.get("sequencer")),
        event_time=_opt_str(record.get("eventTime")),
        region=_opt_str(record.get("awsRegion")),
    )


def _parse_eventbridge(document: dict[str, Any]) -> S3Record:
    detail = document["detail"]
    bucket = detail.get("bucket")
    obj = detail.get("object")
    if not isinstance(bucket, dict) or not isinstance(bucket.get("name"), str) or not bucket["name"]:
        raise _Invalid("EventBridge event has no bucket name")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
        raise _Invalid("EventBridge event has no object key")
    detail_type = str(document.get("detail-type", ""))
    # "Object Created" -> "ObjectCreated:<reason>", matching S3's own event names.
    kind = detail_type.replace(" ", "")
    reason = (_opt_str(detail.get("reason")) or "").removeprefix(kind).strip(":") or "*"
    return S3Record(
        event_name=f"{kind}:{reason}",
        bucket=bucket["name"],
        # EventBridge keys are URL-encoded like notification keys.
        key=unquote_plus(obj["key"]),
        size=_opt_size(obj.get("size"), "EventBridge event"),
        etag=normalize_etag(_opt_str(obj.get("etag", obj.get("eTag")))),
        version_id=_opt_str(obj.get("version-id")),
        sequencer=_opt_str(obj.get("sequencer")),
        event_time=_opt_str(document.get("time")),
        region=_opt_str(document.get("region")),
    )


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _opt_size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid(f"{where} has a non-numeric size")
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise _Invalid(f"{where} has a non-numeric size: {value!r}") from None
    if size < 0:
        raise _Invalid(f"{where} has a negative size")
    return size


def resource_id(bucket: str, key: str) -> str:
    """The Prefect resource id of an upload.

    Example:
        >>> resource_id("uploads", "cats/cat 1.mp4")
        'pixelflow.upload.uploads/cats/cat 1.mp4'
    """
    return f"{RESOURCE_PREFIX}{bucket}/{key}"


def event_id(record: S3Record, event: str = UPLOAD_CREATED) -> uuid.UUID:
    """A deterministic Prefect event id for a record.

    The same upload (bucket, key, revision and S3 sequencer) always gives the same id, so a
    redelivered SQS message produces an event Prefect has already seen and does not start a
    second flow run.

    Example:
        >>> r = S3Record("ObjectCreated:Put", "up", "a.mp4", etag="e1", sequencer="0A")
        >>> event_id(r) == event_id(S3Record("ObjectCreated:Put", "up", "a.mp4", etag='"e1"', sequencer="0A"))
        True
        >>> event_id(r) != event_id(S3Record("ObjectCreated:Put", "up", "a.mp4", etag="e2", sequencer="0B"))
        True
        >>> event_id(r) != event_id(r, CAPTIONS_CREATED)
        True
    """
    material = "\x00".join(
        [event, record.bucket, record.key, record.upload.revision, record.sequencer or ""]
    )
    return uuid.uuid5(EVENT_NAMESPACE, material)


def occurred(record: S3Record) -> datetime | None:
    """The record's event time as an aware datetime, or ``None`` when absent or unparsable.

    Example:
        >>> occurred(S3Record("ObjectCreated:Put", "b", "k", event_time="2024-05-01T10:00:00.123Z"))
        datetime.datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    """
    if not record.event_time:
        return None
    try:
        value = datetime.fromisoformat(record.event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def event_payload(record: S3Record) -> dict[str, Any]:
    """The payload of the ``pixelflow.upload.created`` event for a record.

    Example:
        >>> p = event_payload(S3Record("ObjectCreated:Put", "up", "a.mp4", size=3, etag="e1"))
        >>> p["bucket"], p["key"], p["size"], p["etag"], p["version_id"]
        ('up', 'a.mp4', 3, 'e1', None)
    """
    return {
        "bucket": record.bucket,
        "key": record.key,
        "size": record.size,
        "etag": record.etag,
        "version_id": record.version_id,
        "sequencer": record.sequencer,
        "event_time": record.event_time,
        "event_name": record.event_name,
        "region": record.region,
        "asset_id": record.upload.asset_id,
    }


def resource_labels(record: S3Record) -> dict[str, str]:
    """Labels of the event's primary resource (all values are strings, as Prefect requires)."""
    return {
        "prefect.resource.id": resource_id(record.bucket, record.key),
        "prefect.resource.name": record.key,
        "pixelflow.bucket": record.bucket,
        "pixelflow.key": record.key,
    }
