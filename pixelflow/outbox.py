"""The webhook outbox: endpoints, events and deliveries in the records table, pending deliveries
in an SQS FIFO queue.

Emitting an event (:meth:`Outbox.emit`, called where PixelFlow itself changes a record: the
flow's :func:`pixelflow.records.record_asset_state` and the API's upload and asset routes; never
from a Prefect event) is:

1. a conditional put of ``event#<event_id>``: the id is derived from the resource, the event
   type and the resource's revision (an asset's life, the run that published it...), so the
   same change emitted twice (a re-run flow, a retried request) is one event;
2. for each endpoint, in the order they were created: a ``delivery#<event_id>.<endpoint_id>``
   item and one message on the webhook queue in the endpoint's message group
   (``MessageGroupId`` = endpoint id), so each endpoint gets its events in order;
3. ``fanned_out`` on the event, so an emission cut short between 1 and 3 is completed by the
   next one (SQS drops the repeated messages within five minutes, the dispatcher those later).

The dispatcher (:mod:`pixelflow.ops.webhook_dispatch`) delivers them and records every attempt on
the delivery item. Items (key ``pk``):

* ``webhook#<id>``: an endpoint (``kind`` ``webhook``: listed through the ``assets_by_created``
  index in creation order); its secret is a separate item, ``webhook-secret#<id>``, which only
  the API (that creates it) and the dispatcher (that signs with it) read.
* ``event#<event_id>``: the event's type, time, and the record it is about as it was then.
* ``delivery#<delivery_id>`` (``kind`` ``delivery``): status (``pending``, ``delivered``,
  ``failed``, ``cancelled``), attempts (time, status code, error), deadline, failures since it
  (re)started (its backoff).

Example:
    >>> event_id("video.asset.ready", "8786d6344a2df08b0a0bbdb0", "run-1") == \\
    ...     event_id("video.asset.ready", "8786d6344a2df08b0a0bbdb0", "run-1")
    True
    >>> delivery_id("e", "0123456789abcdef01234567")
    'e.0123456789abcdef01234567'
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

from botocore.exceptions import ClientError

from pixelflow.records import BY_CREATED, Records, _conditional_failed, _deserialize, _serialize, now_iso
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.outbox")

_NAMESPACE = uuid.UUID("0f5c7a52-8a57-4d8e-b7a4-7f6d1f0c5a21")
ENDPOINT_KIND, DELIVERY_KIND = "webhook", "delivery"
PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
#: The endpoint of ``PIXELFLOW_WEBHOOK_URL``.
SETTINGS_ENDPOINT = "default"
#: Attempts kept on a delivery item (the oldest are dropped beyond this).
MAX_ATTEMPTS_KEPT = 50
_INTERNAL = ("pk", "kind", "status_kind", "created_sk")


def event_id(event_type: str, object_id: str, revision: str) -> str:
    """The id of an event: the same resource, type and revision always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_type}:{object_id}:{revision}"))


def delivery_id(event: str, endpoint: str) -> str:
    """The id of one event's delivery to one endpoint."""
    return f"{event}.{endpoint}"


def _epoch(iso: str) -> float:
    return datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def snapshot(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without the table's own attributes (what an event keeps of it)."""
    return {k: v for k, v in record.items() if k not in _INTERNAL and v is not None}


class Outbox:
    """Endpoints, events and deliveries (see the module's description).

    Args:
        settings: The records table, the webhook queue, retry settings.
        records: The records store (default: :meth:`Records.from_settings`).
        sqs: A boto3 SQS client (default: :func:`pixelflow.aws.sqs_client`).
    """

    def __init__(self, settings: PixelFlowSettings, records: Records | None = None, sqs: Any = None):
        self.settings = settings
        self.records = records or Records.from_settings(settings)
        self._sqs = sqs
        self._queue_url: str | None = None

    @property
    def client(self):
        return self.records.client

    @property
    def table(self) -> str:
        return self.records.table

    @property
    def sqs(self):
        if self._sqs is None:
            from pixelflow.aws import sqs_client

            self._sqs = sqs_client()
        return self._sqs

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = self.sqs.get_queue_url(QueueName=self.settings.webhook_queue_name)["QueueUrl"]
        return self._queue_url

    # --- low level ------------------------------------------------------------------------
    def _get(self, pk: str) -> dict[str, Any] | None:
        return self.records._get(pk)

    def _put_new(self, item: Mapping[str, Any]) -> bool:
        """Put ``item`` unless its key exists; whether it was written."""
        try:
            self.client.put_item(TableName=self.table, Item=_serialize(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def _query_kind(self, kind: str, *, newest_first: bool, limit: int | None = None) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.table, "IndexName": BY_CREATED,
                                   "KeyConditionExpression": "#k = :k", "ExpressionAttributeNames": {"#k": "kind"},
                                   "ExpressionAttributeValues": {":k": {"S": kind}}, "ScanIndexForward": not newest_first}
        items: list[dict[str, Any]] = []
        while True:
            if limit is not None:
                request["Limit"] = limit - len(items)
            response = self.client.query(**request)
            items += [_deserialize(item) for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if not last or (limit is not None and len(items) >= limit):
                return items
            request["ExclusiveStartKey"] = last

    # --- endpoints ------------------------------------------------------------------------
    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint, oldest first (without secrets)."""
        return [snapshot(item) for item in self._query_kind(ENDPOINT_KIND, newest_first=False)]

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        item = self._get(f"webhook#{endpoint_id}")
        return snapshot(item) if item else None

    def secret(self, endpoint_id: str) -> str | None:
        item = self._get(f"webhook-secret#{endpoint_id}")
        return item.get("secret") if item else None

    def put_endpoint(self, endpoint: Mapping[str, Any], secret: str) -> None:
        """Store an endpoint (``id``, ``url``, ``created_at``...) and its secret."""
        created = endpoint["created_at"]
        self.client.put_item(TableName=self.table, Item=_serialize({"pk": f"webhook-secret#{endpoint['id']}",
                                                                    "secret": secret}))
        self.client.put_item(TableName=self.table, Item=_serialize({
            **endpoint, "pk": f"webhook#{endpoint['id']}", "kind": ENDPOINT_KIND,
            "created_sk": f"{created}#{endpoint['id']}"}))

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove an endpoint and its secret; whether it existed. Its pending deliveries are
        cancelled when the dispatcher reaches them."""
        try:
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"webhook#{endpoint_id}"}},
                                    ConditionExpression="attribute_exists(pk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        self.client.delete_item(TableName=self.table, Key={"pk": {"S": f"webhook-secret#{endpoint_id}"}})
        return True

    def ensure_settings_endpoint(self) -> bool:
        """Register ``PIXELFLOW_WEBHOOK_URL`` (with ``PIXELFLOW_WEBHOOK_SECRET``) as endpoint
        ``default``, or update it when either changed; whether anything was written."""
        url, secret = self.settings.webhook_url, self.settings.webhook_secret
        if not url:
            return False
        if not secret:
            raise ValueError("PIXELFLOW_WEBHOOK_URL is set without PIXELFLOW_WEBHOOK_SECRET")
        current = self.get_endpoint(SETTINGS_ENDPOINT)
        if current and current.get("url") == url and self.secret(SETTINGS_ENDPOINT) == secret:
            return False
        self.put_endpoint({"id": SETTINGS_ENDPOINT, "url": url, "description": "PIXELFLOW_WEBHOOK_URL",
                           "created_at": (current or {}).get("created_at") or now_iso()}, secret)
        return True

    # --- events ---------------------------------------------------------------------------
    def emit(self, event_type: str, kind: str, record: Mapping[str, Any], revision: str) -> str | None:
        """Emit one event about ``record`` (an ``asset`` or ``upload`` record) to every endpoint.

        Args:
            event_type: One of :data:`pixelflow.webhooks.EVENT_TYPES`.
            kind: ``asset`` or ``upload``: which API view the event's ``data`` is.
            record: The record as it is now.
            revision: What makes this change of the resource distinct (the same revision is the
                same event, whoever emits it and however often).

        Returns:
            The event id, or ``None`` when no endpoint is configured (nothing is stored).
        """
        endpoints = self.endpoints()
        if not endpoints:
            return None
        eid = event_id(event_type, str(record["id"]), revision)
        created = now_iso()
        item = {"pk": f"event#{eid}", "id": eid, "type": event_type, "created_at": created, "object": kind,
                "record": snapshot(record)}
        if not self._put_new(item):
            existing = self._get(f"event#{eid}") or {}
            if existing.get("fanned_out"):
                return eid
            created = existing.get("created_at", created)
        for endpoint in endpoints:
            self.enqueue(eid, event_type, created, endpoint["id"])
        self.client.update_item(TableName=self.table, Key={"pk": {"S": f"event#{eid}"}},
                                UpdateExpression="SET fanned_out = :t", ExpressionAttributeValues={":t": {"BOOL": True}})
        return eid

    def get_event(self, eid: str) -> dict[str, Any] | None:
        return self._get(f"event#{eid}")

    # --- deliveries -----------------------------------------------------------------------
    def enqueue(self, eid: str, event_type: str, created: str, endpoint_id: str) -> str:
        """The delivery of event ``eid`` to one endpoint: its item (once) and its message."""
        did = delivery_id(eid, endpoint_id)
        deadline = _epoch(created) + self.settings.webhook_max_age_seconds
        self._put_new({"pk": f"delivery#{did}", "id": did, "kind": DELIVERY_KIND, "created_sk": f"{created}#{did}",
                       "event_id": eid, "endpoint_id": endpoint_id, "type": event_type, "created_at": created,
                       "status": PENDING, "attempts": [], "deadline_epoch": int(deadline), "sends": 0,
                       "failures": 0})
        self._send(did, endpoint_id, 0)
        return did

    def _send(self, did: str, endpoint_id: str, serial: int) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"delivery_id": did}),
                              MessageGroupId=endpoint_id, MessageDeduplicationId=f"{did}.{serial}")

    def get_delivery(self, did: str) -> dict[str, Any] | None:
        item = self._get(f"delivery#{did}")
        return snapshot(item) if item else None

    def list_deliveries(self, limit: int = 25, endpoint_id: str | None = None) -> list[dict[str, Any]]:
        """Recent deliveries, newest first (of one endpoint with ``endpoint_id``)."""
        if endpoint_id is None:
            return [snapshot(i) for i in self._query_kind(DELIVERY_KIND, newest_first=True, limit=limit)]
        request: dict[str, Any] = {
            "TableName": self.table, "IndexName": BY_CREATED, "KeyConditionExpression": "#k = :k",
            "FilterExpression": "endpoint_id = :e", "ExpressionAttributeNames": {"#k": "kind"},
            "ExpressionAttributeValues": {":k": {"S": DELIVERY_KIND}, ":e": {"S": endpoint_id}},
            "ScanIndexForward": False}
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            response = self.client.query(**request)
            found += [snapshot(_deserialize(i)) for i in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]

    def record_attempt(self, did: str, attempt: Mapping[str, Any], status: str,
                       next_attempt_at: str | None = None) -> None:
        """Append one attempt (``at``, ``status_code``, ``error``, ``duration_ms``) and set the
        delivery's status."""
        names = {"#s": "status", "#a": "attempts"}
        values: dict[str, Any] = {":s": status, ":a": [dict(attempt)], ":empty": [], ":u": now_iso()}
        expression = "SET #s = :s, #a = list_append(if_not_exists(#a, :empty), :a), updated_at = :u"
        if attempt.get("status_code") is not None:
            expression += ", last_status_code = :c"
            values[":c"] = attempt["status_code"]
        if attempt.get("error"):  # failures since the delivery (re)started: its backoff
            expression += ", failures = if_not_exists(failures, :zero) + :one"
            values.update({":zero": 0, ":one": 1})
        if next_attempt_at:
            expression += ", next_attempt_at = :n"
            values[":n"] = next_attempt_at
        else:
            expression += " REMOVE next_attempt_at"
        self.client.update_item(TableName=self.table, Key={"pk": {"S": f"delivery#{did}"}},
                                UpdateExpression=expression, ExpressionAttributeNames=names,
                                ExpressionAttributeValues=_serialize(values))
        self._trim_attempts(did)

    def _trim_attempts(self, did: str) -> None:
        item = self.get_delivery(did) or {}
        extra = len(item.get("attempts") or []) - MAX_ATTEMPTS_KEPT
        if extra > 0:
            self.client.update_item(TableName=self.table, Key={"pk": {"S": f"delivery#{did}"}},
                                    UpdateExpression="REMOVE " + ", ".join(f"attempts[{i}]" for i in range(extra)))

    def finish(self, did: str, status: str, reason: str) -> None:
        """End a delivery without an attempt (its endpoint was deleted...)."""
        self.client.update_item(TableName=self.table, Key={"pk": {"S": f"delivery#{did}"}},
                                UpdateExpression="SET #s = :s, reason = :r, updated_at = :u",
                                ExpressionAttributeNames={"#s": "status"},
                                ExpressionAttributeValues=_serialize({":s": status, ":r": reason, ":u": now_iso()}))

    def resend(self, did: str) -> dict[str, Any] | None:
        """Deliver a finished delivery again (same event, same id), retried as a new one for
        ``PIXELFLOW_WEBHOOK_MAX_AGE_SECONDS`` from now. ``None`` when it is still pending."""
        deadline = int(time.time() + self.settings.webhook_max_age_seconds)
        try:
            response = self.client.update_item(
                TableName=self.table, Key={"pk": {"S": f"delivery#{did}"}}, ReturnValues="ALL_NEW",
                UpdateExpression="SET #s = :p, deadline_epoch = :d, sends = if_not_exists(sends, :zero) + :one, "
                                 "failures = :zero, updated_at = :u REMOVE next_attempt_at",
                ConditionExpression="attribute_exists(pk) AND #s <> :p",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=_serialize({":p": PENDING, ":d": deadline, ":zero": 0, ":one": 1,
                                                      ":u": now_iso()}))
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        item = snapshot(_deserialize(response["Attributes"]))
        self._send(did, item["endpoint_id"], int(item["sends"]))
        return item


def emit_safely(settings: PixelFlowSettings, event_type: str, kind: str, record: Mapping[str, Any] | None,
                revision: str, records: Records | None = None) -> str | None:
    """:meth:`Outbox.emit`, logged instead of raised: an event that cannot be stored never fails
    the transcode or the request that made the change (the id is stable: emitting it again
    later, from a re-run, is the same event)."""
    if not record:
        return None
    try:
        return Outbox(settings, records).emit(event_type, kind, record, revision)
    except Exception as exc:  # noqa: BLE001 - the change itself is recorded; the event is best effort here
        logger.warning("could not emit %s for %s %s (%s: %s)", event_type, kind, record.get("id"),
                       type(exc).__name__, exc)
        return None


def emit_asset_state(settings: PixelFlowSettings, record: Mapping[str, Any] | None, *,
                     manifest: Mapping[str, Any] | None = None, records: Records | None = None) -> str | None:
    """The event of an asset state the flow recorded (:func:`pixelflow.records.record_asset_state`):
    ``preparing`` is ``video.asset.created`` (once per life of the asset), ``ready`` is
    ``video.asset.ready`` (once per publication: the run that wrote the manifest), ``errored``
    is ``video.asset.errored`` (once per run and code)."""
    from pixelflow import webhooks
    from pixelflow.records import ERRORED, PREPARING, READY

    if not record:
        return None
    life = record.get("created_at", "")
    status = record.get("status")
    if status == PREPARING:
        return emit_safely(settings, webhooks.ASSET_CREATED, "asset", record, life, records)
    if status == READY:
        published_by = (manifest or {}).get("flow_run_id") or (manifest or {}).get("created_at") or ""
        return emit_safely(settings, webhooks.ASSET_READY, "asset", record, f"{life}:{published_by}", records)
    if status == ERRORED:
        code = (record.get("errors") or {}).get("code", "")
        return emit_safely(settings, webhooks.ASSET_ERRORED, "asset", record,
                           f"{life}:{record.get('flow_run_id', '')}:{code}", records)
    return None


def emit_upload_state(settings: PixelFlowSettings, event_type: str, record: Mapping[str, Any] | None,
                      records: Records | None = None) -> str | None:
    """The event of an upload's change (created, asset created, cancelled): once per upload."""
    return emit_safely(settings, event_type, "upload", record, "", records)


#: Receives of one webhook message before it moves to the dead-letter queue: far more than the
#: attempts of a day of backoff (the dispatcher gives up on a delivery itself, by its deadline);
#: only a message that keeps failing the dispatcher itself ends there.
WEBHOOK_MAX_RECEIVES = 100


def ensure_webhook_queues(settings: PixelFlowSettings, sqs: Any = None) -> str:
    """Create the webhook FIFO queue and its dead-letter queue unless they exist (what the
    CloudFormation template declares); the queue's URL."""
    if sqs is None:
        from pixelflow.aws import sqs_client

        sqs = sqs_client()

    def ensure(name: str, attributes: dict[str, str]) -> str:
        try:
            return sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if "NonExistentQueue" not in exc.response.get("Error", {}).get("Code", ""):
                raise
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]

    fifo = {"FifoQueue": "true", "MessageRetentionPeriod": str(4 * 24 * 3600)}
    dlq = ensure(settings.webhook_dlq_name, {**fifo, "MessageRetentionPeriod": str(14 * 24 * 3600)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return ensure(settings.webhook_queue_name, {
        **fifo, "VisibilityTimeout": "120",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(WEBHOOK_MAX_RECEIVES)})})
