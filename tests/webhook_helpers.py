"""Helpers for the webhook tests: a real HTTP receiver on loopback that answers from a script and
keeps every request, settings with their own webhook queue, and the dispatcher as a real
``pixelflow webhooks dispatch`` process."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pixelflow.outbox import ensure_webhook_queues
from pixelflow.settings import PixelFlowSettings
from tests.api_helpers import env_for, make_settings

LOOPBACK = ["127.0.0.0/8"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with ``answers`` in turn (then 200), recording
    each request."""

    answers: list[int] = field(default_factory=list)
    location: str | None = None
    #: Answers for one event type (its attempts only), before ``answers``.
    answers_by_type: dict[str, list[int]] = field(default_factory=dict)
    #: Seconds to wait before answering (a receiver too slow for the attempt's time limit).
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k: v for k, v in self.headers.items()}, body))
                    import json

                    by_type = receiver.answers_by_type.get(json.loads(body or b"{}").get("type"), [])
                    status = by_type.pop(0) if by_type else receiver.answers.pop(0) if receiver.answers else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if receiver.location and 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self._lock = threading.Lock()
        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up (a timeout) is no error here
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self) -> list[tuple[str, str]]:
        """``(type, id)`` of every request received, in order."""
        import json

        with self._lock:
            return [(json.loads(r.body)["type"], json.loads(r.body)["id"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_settings(**overrides: Any) -> PixelFlowSettings:
    """:func:`tests.api_helpers.make_settings` with a webhook queue of its own (created), a 1 s
    retry base and loopback receivers allowed."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {"webhook_queue_name": f"wh-{suffix}.fifo", "webhook_dlq_name": f"wh-{suffix}-dlq.fifo",
                              "webhook_retry_base_seconds": 1.0, "webhook_allowed_networks": LOOPBACK,
                              "webhook_wait_seconds": 1, "webhook_timeout_seconds": 5.0}
    values.update(overrides)
    settings = make_settings(**values)
    ensure_webhook_queues(settings)
    return settings


def webhook_env(settings: PixelFlowSettings) -> dict[str, str]:
    """``PIXELFLOW_*`` of ``settings`` that a flow run and the dispatcher need."""
    return {**env_for(settings), "PIXELFLOW_WEBHOOK_QUEUE_NAME": settings.webhook_queue_name,
            "PIXELFLOW_WEBHOOK_DLQ_NAME": settings.webhook_dlq_name,
            "PIXELFLOW_WEBHOOK_RETRY_BASE_SECONDS": str(settings.webhook_retry_base_seconds),
            "PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS": ",".join(settings.webhook_allowed_networks),
            "PIXELFLOW_WEBHOOK_WAIT_SECONDS": str(settings.webhook_wait_seconds),
            "PIXELFLOW_WEBHOOK_TIMEOUT_SECONDS": str(settings.webhook_timeout_seconds)}


def start_dispatcher(settings: PixelFlowSettings, log_dir: Path):
    """``pixelflow webhooks dispatch`` as a real process on ``settings``."""
    from pixelflow.local.processes import spawn

    env = {**os.environ, **webhook_env(settings)}
    log_dir.mkdir(parents=True, exist_ok=True)
    return spawn([sys.executable, "-m", "pixelflow.cli", "webhooks", "dispatch"], log_dir / "dispatcher.log", env=env)
