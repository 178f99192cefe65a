"""The bridge: S3 notifications in an SQS queue become Prefect events.

``pixelflow bridge`` long-polls the upload queue. Every ``ObjectCreated`` record becomes a
``pixelflow.upload.created`` event, posted to the Prefect server's ``POST /events`` endpoint;
the deployment trigger of the ``transcode`` deployment turns that event into a flow run. A
caption file (``talk.en.vtt``) becomes a ``pixelflow.captions.created`` event instead, which
starts no transcode: the ``attach-captions`` deployment's trigger attaches it to its video's
asset when that is already published (flows/captions.py).

Delivery guarantees:

* A message is deleted only after the Prefect server accepted its events (HTTP 2xx). If the
  server is unreachable or answers 5xx, the bridge keeps the message (extending its visibility
  while it waits) and retries with exponential backoff until the server is back.
* Event ids are deterministic (:func:`pixelflow.core.s3events.event_id`): a redelivered message
  yields events the server has already seen, so it does not start a second run.
* ``s3:TestEvent`` messages and records that are not ``ObjectCreated`` (e.g. ``ObjectRemoved``)
  are logged and deleted. Objects under the quarantine prefix (rejected sources PixelFlow
  copies there itself) are ignored the same way.
* Bodies that are not S3 notifications, and events the server rejects with a 4xx answer, are
  logged and left in the queue: after ``max_receive_count`` receives SQS moves them to the
  dead-letter queue.
* On SIGTERM/SIGINT the bridge stops receiving, finishes the message it is posting and makes the
  rest of its batch visible again at once. Nothing is deleted unless it was delivered.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import httpx

from pixelflow.core.captions import is_caption_key
from pixelflow.core.s3events import (
    CAPTIONS_CREATED,
    UPLOAD_CREATED,
    Malformed,
    S3Notification,
    S3Record,
    S3TestEvent,
    event_id,
    event_payload,
    occurred,
    parse_body,
    resource_labels,
)
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.pipeline.bridge")

#: SQS accepts at most 10 messages per receive.
_BATCH = 10


class _Interrupted(BaseException):
    """Raised by the signal handler to abandon a blocking long poll (a BaseException, so that
    no library code on the way swallows it)."""


class DeliveryRejected(Exception):
    """The Prefect server refused the events for good (4xx other than 408/429)."""


@dataclass
class BridgeStats:
    """Counters of what the bridge did (exposed for logs and tests)."""

    received: int = 0
    forwarded_events: int = 0
    deleted: int = 0
    test_events: int = 0
    ignored_records: int = 0
    malformed: int = 0
    rejected: int = 0
    post_failures: int = 0
    released: int = 0
    split_records: int = 0  # invalid records of otherwise valid messages, moved to the dead-letter queue alone


@dataclass
class _InFlight:
    message: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)

    @property
    def receipt(self) -> str:
        return self.message["ReceiptHandle"]

    @property
    def message_id(self) -> str:
        return self.message.get("MessageId", "?")

    @property
    def receive_count(self) -> str:
        return self.message.get("Attributes", {}).get("ApproximateReceiveCount", "?")


def prefect_api_url() -> str:
    """The Prefect API URL from Prefect's settings (``PREFECT_API_URL``).

    Raises:
        RuntimeError: When no API URL is configured. Without one Prefect would start a
            temporary in-process server, which nothing else could see.
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set: point it at your Prefect server, e.g. http://127.0.0.1:4200/api")
    return url.rstrip("/")


def _auth_headers() -> dict[str, str]:
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    key = api.key.get_secret_value() if api.key else None
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    if key:
        return {"Authorization": f"Bearer {key}"}
    if auth:
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    return {}


def build_event(record: S3Record) -> dict[str, Any]:
    """The JSON document of the Prefect event for one created object: ``pixelflow.upload.created``,
    or ``pixelflow.captions.created`` for a caption file.

    Built and validated with Prefect's own event schema, so the server accepts it as is.
    """
    from prefect.events.schemas.events import Event

    name = CAPTIONS_CREATED if is_caption_key(record.key) else UPLOAD_CREATED
    fields: dict[str, Any] = {
        "event": name,
        "resource": resource_labels(record),
        "related": [
            {
                "prefect.resource.id": f"pixelflow.bucket.{record.bucket}",
                "prefect.resource.role": "bucket",
                "prefect.resource.name": record.bucket,
            }
        ],
        "payload": event_payload(record),
        "id": event_id(record, name),
    }
    when = occurred(record)
    if when is not None:
        fields["occurred"] = when
    return Event(**fields).model_dump(mode="json")


def written_by_pixelflow(record: S3Record, settings: PixelFlowSettings) -> bool:
    """Whether the object is one PixelFlow wrote itself (a quarantined copy, a published file):
    never a new upload."""
    prefixes = [settings.quarantine_prefix]
    if record.bucket == settings.output_bucket:
        prefixes += [settings.asset_prefix, settings.record_prefix]
    return any(p and record.key.startswith(p) for p in prefixes)


def skip_reason(record: S3Record, settings: PixelFlowSettings) -> str | None:
    """Why a parsed record starts no run (``None``: it is a new upload to forward)."""
    if not record.is_created:
        return f"{record.event_name} is not an upload"
    if record.bucket != settings.upload_bucket:
        return f"not the upload bucket {settings.upload_bucket}"
    if written_by_pixelflow(record, settings):
        return "written by PixelFlow itself"
    return None


def dead_letter_records(sqs: Any, settings: PixelFlowSettings, invalid: list[dict[str, Any]], message_id: str) -> None:
    """Send the invalid records of a message whose other records were forwarded to the
    dead-letter queue, as a message of their own (``pixelflow dlq list`` shows it), with the
    reasons and the original message's id."""
    body = json.dumps({"Records": [bad["record"] for bad in invalid],
                       "PixelFlowReasons": [bad["reason"] for bad in invalid]}, default=str)
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageAttributes={
        "pixelflow-source-message": {"DataType": "String", "StringValue": message_id}})


class Bridge:
    """Moves S3 notifications from an SQS queue to the Prefect events API.

    Args:
        settings: PixelFlow settings (queue name, waits, visibility timeout, prefixes).
        api_url: Prefect API URL; defaults to ``PREFECT_API_URL``.
        sqs: A boto3 SQS client; defaults to :func:`pixelflow.aws.sqs_client`.
        queue_url: The queue's URL; looked up from ``settings.queue_name`` when omitted.
        max_backoff: Longest wait between two delivery attempts, in seconds.
        http_timeout: Timeout of one POST to the events API, in seconds.
    """

    def __init__(
        self,
        settings: PixelFlowSettings,
        *,
        api_url: str | None = None,
        sqs: Any = None,
        queue_url: str | None = None,
        max_backoff: float = 30.0,
        http_timeout: float = 10.0,
    ) -> None:
        if sqs is None:
            from pixelflow.aws import sqs_client

            sqs = sqs_client()
        self.settings = settings
        self.api_url = (api_url or prefect_api_url()).rstrip("/")
        self.sqs = sqs
        self._queue_url = queue_url
        self.max_backoff = max_backoff
        self.stats = BridgeStats()
        self._stop = threading.Event()
        self._receiving = False
        self._http = httpx.Client(timeout=http_timeout, headers=_auth_headers())

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = self.sqs.get_queue_url(QueueName=self.settings.queue_name)["QueueUrl"]
        return self._queue_url

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the bridge to stop after the message it is working on."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT (main thread only).

        A signal during a long poll abandons the poll: messages SQS may have handed out in that
        instant were never seen by the bridge and become visible again after the visibility
        timeout. A signal while a batch is being handled lets the current message finish.
        """

        def handler(signum, _frame):
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()
            if self._receiving:
                raise _Interrupted()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close(self) -> None:
        self._http.close()

    def run(self, *, max_idle_polls: int | None = None) -> BridgeStats:
        """Poll until stopped.

        Args:
            max_idle_polls: Return after this many consecutive empty polls (for tests and
                one-shot draining); ``None`` polls forever.

        Returns:
            The bridge's counters.
        """
        logger.info("bridge started: queue %s -> %s/events", self.settings.queue_name, self.api_url)
        idle = 0
        backoff = _Backoff(self.max_backoff)
        while not self.stopping:
            try:
                messages = self._receive()
            except _Interrupted:
                break
            except Exception as exc:  # SQS unreachable, queue missing, throttled...
                delay = backoff.next()
                logger.warning("cannot receive from %s: %s; retrying in %.1f s", self.settings.queue_name, exc, delay)
                self._stop.wait(delay)
                continue
            backoff.reset()
            if not messages:
                idle += 1
                if max_idle_polls is not None and idle >= max_idle_polls:
                    break
                continue
            idle = 0
            self.handle_batch(messages)
        logger.info("bridge stopped: %s", self.stats)
        return self.stats

    # --- receiving -------------------------------------------------------------------------
    def _receive(self) -> list[dict[str, Any]]:
        self._receiving = True
        try:
            if self.stopping:
                return []
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=_BATCH,
                WaitTimeSeconds=self.settings.bridge_wait_seconds,
                VisibilityTimeout=self.settings.bridge_visibility_timeout,
                AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        finally:
            self._receiving = False
        messages = response.get("Messages", [])
        self.stats.received += len(messages)
        return messages

    def handle_batch(self, messages: list[dict[str, Any]]) -> None:
        """Handle received messages one by one; on stop, release the ones not yet handled."""
        pending = [_InFlight(m) for m in messages]
        while pending:
            if self.stopping:
                self._release(pending)
                return
            current = pending[0]
            try:
                self._handle(current, pending)
            except Exception:
                # Never crash on one message: it stays in the queue and, if the problem
                # persists, ends in the dead-letter queue.
                logger.exception("unexpected error handling message %s; leaving it in the queue", current.message_id)
            pending.pop(0)

    def _handle(self, item: _InFlight, pending: list[_InFlight]) -> None:
        parsed = parse_body(item.message.get("Body", ""))
        if isinstance(parsed, S3TestEvent):
            logger.info("s3:TestEvent for bucket %s (message %s): deleting", parsed.bucket, item.message_id)
            self.stats.test_events += 1
            self._delete(item)
            return
        if isinstance(parsed, Malformed):
            self.stats.malformed += 1
            logger.error(
                "message %s is not an S3 notification (%s); leaving it in the queue, it moves to "
                "the dead-letter queue %s after %d receives (this was receive %s)",
                item.message_id, parsed.reason, self.settings.dlq_name, self.settings.max_receive_count,
                item.receive_count,
            )
            return
        assert isinstance(parsed, S3Notification)
        invalid = [{"reason": bad.reason, "record": bad.raw} for bad in parsed.invalid]
        records, events = [], []
        for record in parsed.records:
            if not self._wanted(record, item):
                continue
            try:
                events.append(build_event(record))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                invalid.append({"reason": f"cannot become a Prefect event: {exc}", "record": asdict(record)})
                continue
            records.append(record)
        if invalid and not records:
            self.stats.malformed += 1
            logger.error("message %s has no record that can become a Prefect event (%s); leaving it for the "
                         "dead-letter queue %s", item.message_id, invalid[0]["reason"], self.settings.dlq_name)
            return
        if not records:
            self._delete(item)
            return
        try:
            delivered = self._deliver(events, item, pending)
        except DeliveryRejected as exc:
            self.stats.rejected += 1
            logger.error(
                "Prefect rejected the events of message %s (%s); leaving it for the dead-letter queue %s",
                item.message_id, exc, self.settings.dlq_name,
            )
            return
        if not delivered:  # stopping while the server was unreachable
            self._release([item])
            return
        for record, event in zip(records, events):
            logger.info(
                "forwarded s3://%s/%s (etag %s) as event %s", record.bucket, record.key, record.etag, event["id"]
            )
        self.stats.forwarded_events += len(events)
        if invalid and not self._dead_letter(invalid, item):
            return  # kept: redelivered, its events are the same ids and start nothing twice
        self._delete(item)

    def _dead_letter(self, invalid: list[dict[str, Any]], item: _InFlight) -> bool:
        """:func:`dead_letter_records`; whether it worked (else the message is kept)."""
        try:
            dead_letter_records(self.sqs, self.settings, invalid, item.message_id)
        except Exception as exc:  # noqa: BLE001 - the message stays; the next receive tries again
            logger.warning("cannot move %d invalid records of message %s to the dead-letter queue %s: %s",
                           len(invalid), item.message_id, self.settings.dlq_name, exc)
            return False
        self.stats.split_records += len(invalid)
        logger.error("message %s: %d records are not S3 uploads PixelFlow understands (%s); moved to the "
                     "dead-letter queue %s, the others were forwarded", item.message_id, len(invalid),
                     invalid[0]["reason"], self.settings.dlq_name)
        return True

    def _wanted(self, record: S3Record, item: _InFlight) -> bool:
        reason = skip_reason(record, self.settings)
        if reason is not None:
            logger.info("ignoring %s for s3://%s/%s (message %s): %s", record.event_name, record.bucket, record.key,
                        item.message_id, reason)
            self.stats.ignored_records += 1
        return reason is None

    # --- delivery --------------------------------------------------------------------------
    def _deliver(self, events: list[dict[str, Any]], item: _InFlight, pending: list[_InFlight]) -> bool:
        """POST the events until the server accepts them.

        Returns:
            ``True`` once accepted, ``False`` when the bridge is stopping before that (the
            message is then released, visible again at once).

        Raises:
            DeliveryRejected: On a definitive 4xx answer.
        """
        backoff = _Backoff(self.max_backoff)
        while True:
            try:
                response = self._http.post(f"{self.api_url}/events", json=events)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    raise DeliveryRejected(f"HTTP {response.status_code}: {response.text[:500]}")
                problem = f"HTTP {response.status_code}"
            self.stats.post_failures += 1
            delay = backoff.next()
            logger.warning(
                "Prefect API %s unavailable (%s); keeping message %s, retrying in %.1f s",
                self.api_url, problem, item.message_id, delay,
            )
            self._keep_visible(pending, delay)
            if self._stop.wait(delay):
                return False

    def _keep_visible(self, pending: list[_InFlight], upcoming_wait: float) -> None:
        """Extend the visibility of held messages before it runs out during a wait."""
        timeout = self.settings.bridge_visibility_timeout
        now = time.monotonic()
        due = [p for p in pending if now + upcoming_wait + 5 >= p.received_at + timeout]
        if not due:
            return
        new_timeout = max(timeout, int(upcoming_wait) + 30)
        try:
            self._change_visibility(due, new_timeout)
        except Exception as exc:
            logger.warning("cannot extend the visibility of held messages: %s", exc)
            return
        for p in due:
            p.received_at = now + (new_timeout - timeout)

    def _release(self, pending: list[_InFlight]) -> None:
        """Make messages that were received but not handled visible again right away."""
        try:
            self._change_visibility(pending, 0)
            self.stats.released += len(pending)
            logger.info("released %d unhandled message(s) back to the queue", len(pending))
        except Exception as exc:
            logger.warning("cannot release %d message(s) (%s); they reappear after the visibility timeout", len(pending), exc)

    def _change_visibility(self, items: list[_InFlight], timeout: int) -> None:
        for start in range(0, len(items), _BATCH):
            chunk = items[start:start + _BATCH]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": p.receipt, "VisibilityTimeout": timeout} for i, p in enumerate(chunk)],
            )

    def _delete(self, item: _InFlight) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=item.receipt)
            self.stats.deleted += 1
        except Exception as exc:
            # The message comes back after its visibility timeout; its events have fixed ids,
            # so delivering them again does not start another run.
            logger.warning("cannot delete message %s: %s", item.message_id, exc)


class _Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to ``maximum``."""

    def __init__(self, maximum: float, first: float = 0.5) -> None:
        self.maximum = maximum
        self.first = first
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.first * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def run_bridge(settings: PixelFlowSettings | None = None, *, on_start: Callable[[Bridge], None] | None = None) -> BridgeStats:
    """Run a bridge in the foreground until SIGTERM/SIGINT (what ``pixelflow bridge`` does)."""
    bridge = Bridge(settings or PixelFlowSettings())
    bridge.install_signal_handlers()
    if on_start:
        on_start(bridge)
    try:
        return bridge.run()
    finally:
        bridge.close()
