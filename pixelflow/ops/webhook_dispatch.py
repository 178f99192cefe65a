"""The webhook dispatcher: delivers what :mod:`pixelflow.outbox` queued, signed, at least once,
in order per endpoint.

Each message of the webhook queue (SQS FIFO, one message group per endpoint) names one
delivery. The dispatcher loads it, its event and its endpoint, renders the body
``{"id", "type", "created_at", "data"}`` (``data``: the API's own view of the asset or upload as
it was when the event happened, :func:`pixelflow.ops.api.assets.asset_view` and
:meth:`pixelflow.ops.api.uploads.UploadService.view`), signs it
(:func:`pixelflow.webhooks.signature_header`) and POSTs it to the address it has just checked
(:mod:`pixelflow.ops.webhook_urls`), following no redirect, within
``PIXELFLOW_WEBHOOK_TIMEOUT_SECONDS``. Every attempt (time, status code or error, duration) is
recorded on the delivery item.

* A 2xx answer: ``delivered``; the message is deleted.
* Anything else (another status, a timeout, a refused connection, an address no longer
  allowed): the message is hidden for ``base * 2^(attempts - 1)`` seconds (at most
  ``PIXELFLOW_WEBHOOK_RETRY_MAX_SECONDS``, SQS's 12 hours) with ``ChangeMessageVisibility``; once
  the next attempt would come after the deadline (``PIXELFLOW_WEBHOOK_MAX_AGE_SECONDS`` after
  the event) it is ``failed`` and deleted. While it is hidden, the endpoint's later messages wait
  (FIFO message group): each endpoint gets its events in order of creation.

The state is SQS's and the table's, never the process's: a dispatcher stopped (or killed) with a
retry pending leaves the message in the queue, and the next dispatcher delivers it when it
reappears. The secret is read from the table at each delivery and never logged.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import httpx

from pixelflow import webhooks
from pixelflow.errors import PixelFlowError
from pixelflow.outbox import CANCELLED, DELIVERED, FAILED, PENDING, Outbox
from pixelflow.ops.webhook_urls import Target, resolve
from pixelflow.records import now_iso
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.webhooks")

#: Seconds a received message stays hidden while it is being delivered.
IN_FLIGHT_SECONDS = 120
_BATCH = 10


@dataclass(frozen=True)
class Outcome:
    """What became of one message: ``done`` (delete it) or retry after ``delay`` seconds."""

    done: bool
    delay: int = 0
    status: str = ""


def render_body(settings: PixelFlowSettings, event: dict[str, Any]) -> bytes:
    """The body of an event's delivery: its ``data`` is the API's view of the record it was about."""
    from pixelflow.ops.api.assets import asset_view, playback_base
    from pixelflow.ops.api.uploads import UploadService

    record = event.get("record") or {}
    request = SimpleNamespace(base_url=(settings.api_public_url or "/"))
    if event.get("object") == "upload":
        data = UploadService(settings, None, None).view(request, record, [], fresh_urls=False)["data"]
    else:
        data = asset_view(record, playback_base(settings, request))
    return json.dumps({"id": event["id"], "type": event["type"], "created_at": event["created_at"], "data": data},
                      separators=(",", ":"), sort_keys=True, default=str).encode()


def backoff(settings: PixelFlowSettings, failed_attempts: int) -> int:
    """Seconds before the next attempt after ``failed_attempts`` failures.

    >>> s = PixelFlowSettings(webhook_retry_base_seconds=30)
    >>> [backoff(s, n) for n in (1, 2, 3, 12)]
    [30, 60, 120, 43200]
    """
    delay = settings.webhook_retry_base_seconds * 2 ** max(0, failed_attempts - 1)
    return int(max(1, min(delay, settings.webhook_retry_max_seconds)))


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to the checked address of ``target`` (TLS verified against its host name);
    the status code. No redirect is followed, no proxy used, the answer's body is not read."""
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("POST", target.connect_url, content=body, extensions=extensions,
                                       headers={**headers, "Host": target.host_header})
        response = client.send(request, stream=True)
        response.close()
        return response.status_code


class Dispatcher:
    """Delivers the webhook queue's messages (see the module's description).

    Args:
        settings: The queue, the records table, retries, timeouts, allowed networks.
        outbox: The outbox (default: one on ``settings``).
        sender: Sends one request (default: :func:`post`); tests keep the default.
        clock: The time (default: :func:`time.time`).
    """

    def __init__(self, settings: PixelFlowSettings, outbox: Outbox | None = None,
                 sender: Callable[[Target, bytes, dict[str, str], float], int] = post,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.outbox = outbox or Outbox(settings)
        self.sender = sender
        self.clock = clock
        self._stop = threading.Event()
        self.delivered = 0

    # --- one delivery ------------------------------------------------------------------------
    def attempt(self, delivery_id: str) -> Outcome:
        """Make one attempt at a delivery and record it."""
        outbox = self.outbox
        delivery = outbox.get_delivery(delivery_id)
        if delivery is None or delivery.get("status") != PENDING:
            return Outcome(True, status=(delivery or {}).get("status", "unknown"))
        endpoint = outbox.get_endpoint(delivery["endpoint_id"])
        secret = outbox.secret(delivery["endpoint_id"]) if endpoint else None
        event = outbox.get_event(delivery["event_id"])
        if endpoint is None or not secret or event is None:
            reason = "the endpoint was deleted" if endpoint is None or not secret else "the event is gone"
            outbox.finish(delivery_id, CANCELLED, reason)
            return Outcome(True, status=CANCELLED)
        body = render_body(self.settings, event)
        started = self.clock()
        attempt: dict[str, Any] = {"at": now_iso()}
        try:
            target = resolve(endpoint["url"], self.settings.webhook_allowed_networks)
            headers = {"Content-Type": "application/json", "User-Agent": "PixelFlow-Webhooks",
                       webhooks.SIGNATURE_HEADER: webhooks.signature_header(body, secret, int(self.clock())),
                       "PixelFlow-Event-Id": event["id"], "PixelFlow-Event-Type": event["type"]}
            status_code = self.sender(target, body, headers, self.settings.webhook_timeout_seconds)
            attempt["status_code"] = status_code
            if not 200 <= status_code < 300:
                attempt["error"] = f"HTTP {status_code}"
        except PixelFlowError as exc:
            attempt["error"] = f"{exc.code.value}: {exc.message}"
        except httpx.TimeoutException:
            attempt["error"] = "timeout"
        except httpx.HTTPError as exc:
            attempt["error"] = f"{type(exc).__name__}: could not connect" if isinstance(exc, httpx.ConnectError) \
                else type(exc).__name__
        attempt["duration_ms"] = int((self.clock() - started) * 1000)
        if "error" not in attempt:
            outbox.record_attempt(delivery_id, attempt, DELIVERED)
            self.delivered += 1
            logger.info("delivered %s %s to endpoint %s (HTTP %s)", event["type"], event["id"],
                        delivery["endpoint_id"], attempt["status_code"])
            return Outcome(True, status=DELIVERED)
        failures = int(delivery.get("failures") or 0) + 1
        delay = backoff(self.settings, failures)
        if self.clock() + delay > float(delivery.get("deadline_epoch") or 0):
            outbox.record_attempt(delivery_id, attempt, FAILED)
            logger.warning("giving up on %s %s to endpoint %s after %d attempts (%s)", event["type"], event["id"],
                           delivery["endpoint_id"], failures, attempt["error"])
            return Outcome(True, status=FAILED)
        next_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock() + delay))
        outbox.record_attempt(delivery_id, attempt, PENDING, next_attempt_at=next_at)
        logger.info("%s %s to endpoint %s failed (%s); attempt %d in %d s", event["type"], event["id"],
                    delivery["endpoint_id"], attempt["error"], failures + 1, delay)
        return Outcome(False, delay=delay, status=PENDING)

    def handle(self, body: str) -> Outcome:
        """One message: its delivery's attempt (a body that names none is dropped)."""
        try:
            delivery_id = json.loads(body)["delivery_id"]
            if not isinstance(delivery_id, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            logger.error("not a webhook delivery message: dropped")
            return Outcome(True, status="malformed")
        return self.attempt(delivery_id)

    def handle_batch(self, messages: list[dict[str, Any]], *, delete: bool) -> list[str]:
        """Handle received messages in order; a message to retry holds back the rest of its
        message group (released at once: they come back after it). Messages done with are
        deleted when ``delete`` (the service; Lambda deletes the successes itself).

        Returns:
            The ids of the messages not done with (Lambda's ``batchItemFailures``).
        """
        held_groups: set[str] = set()
        not_done: list[str] = []
        for message in messages:
            group = (message.get("Attributes") or message.get("attributes") or {}).get("MessageGroupId", "")
            receipt = message.get("ReceiptHandle") or message.get("receiptHandle")
            message_id = message.get("MessageId") or message.get("messageId")
            if group in held_groups or self._stop.is_set():
                self._hide(receipt, 0)
                not_done.append(message_id)
                continue
            try:
                outcome = self.handle(message.get("Body") or message.get("body") or "")
            except Exception:  # noqa: BLE001 - one message never stops the others; it comes back
                logger.exception("unexpected error on webhook message %s; it is retried", message_id)
                outcome = Outcome(False, delay=int(self.settings.webhook_retry_base_seconds))
            if outcome.done:
                if delete:
                    self.outbox.sqs.delete_message(QueueUrl=self.outbox.queue_url, ReceiptHandle=receipt)
                continue
            self._hide(receipt, outcome.delay)
            held_groups.add(group)
            not_done.append(message_id)
        return not_done

    def _hide(self, receipt: str, seconds: int) -> None:
        try:
            self.outbox.sqs.change_message_visibility(QueueUrl=self.outbox.queue_url, ReceiptHandle=receipt,
                                                      VisibilityTimeout=int(seconds))
        except Exception as exc:  # noqa: BLE001 - the message reappears after its visibility timeout anyway
            logger.warning("could not change a webhook message's visibility (%s)", type(exc).__name__)

    # --- the service ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT: the poll in progress ends (within
        ``PIXELFLOW_WEBHOOK_WAIT_SECONDS``), the attempt in hand is finished and recorded, and the
        messages not attempted yet are released at once (never left hidden)."""

        def handler(signum, _frame):
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, *, max_idle_polls: int | None = None) -> int:
        """Poll the webhook queue until stopped; the number of deliveries made."""
        try:
            self.outbox.ensure_settings_endpoint()
        except Exception as exc:  # noqa: BLE001 - the other endpoints are still served
            logger.error("PIXELFLOW_WEBHOOK_URL is not registered: %s", exc)
        logger.info("webhook dispatcher started: queue %s", self.settings.webhook_queue_name)
        idle = 0
        while not self._stop.is_set():
            try:
                response = self.outbox.sqs.receive_message(
                    QueueUrl=self.outbox.queue_url, MaxNumberOfMessages=_BATCH, VisibilityTimeout=IN_FLIGHT_SECONDS,
                    WaitTimeSeconds=self.settings.webhook_wait_seconds, AttributeNames=["MessageGroupId"])
            except Exception as exc:  # noqa: BLE001 - SQS unreachable, queue missing...
                logger.warning("cannot receive from %s (%s); retrying", self.settings.webhook_queue_name,
                               type(exc).__name__)
                self._stop.wait(5)
                continue
            messages = response.get("Messages", [])
            if not messages:
                idle += 1
                if max_idle_polls is not None and idle >= max_idle_polls:
                    break
                continue
            idle = 0
            self.handle_batch(messages, delete=True)
        logger.info("webhook dispatcher stopped (%d delivered)", self.delivered)
        return self.delivered

