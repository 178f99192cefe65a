"""Helpers for the event-chain tests: isolated queues, queue counts, Prefect event queries, a
local stack of a test module's own, and a TCP forwarder that plays a Prefect API that goes away
and comes back."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from pixelflow.settings import PixelFlowSettings


def isolated_settings(**overrides: Any) -> PixelFlowSettings:
    """Settings with fresh bucket and queue names and small waits (fast redelivery)."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "upload_bucket": f"up-{suffix}",
        "output_bucket": f"out-{suffix}",
        "queue_name": f"uploads-{suffix}",
        "dlq_name": f"uploads-dlq-{suffix}",
        "max_receive_count": 2,
        "bridge_wait_seconds": 1,
        "bridge_visibility_timeout": 2,
    }
    values.update(overrides)
    return PixelFlowSettings(**values)


def stack_config(moto_server: str, home: Path, name: str, **env: str):
    """A local stack's configuration on the session's moto server with fresh bucket and queue
    names (``<name>-up-<suffix>``...), its scratch under ``home``, and ``env`` on top."""
    from pixelflow.local.processes import free_port
    from pixelflow.local.stack import StackConfig

    suffix = uuid.uuid4().hex[:8]
    return StackConfig(home=home, prefect_port=free_port(), aws_endpoint=moto_server, env={
        "PIXELFLOW_UPLOAD_BUCKET": f"{name}-up-{suffix}",
        "PIXELFLOW_OUTPUT_BUCKET": f"{name}-out-{suffix}",
        "PIXELFLOW_QUEUE_NAME": f"{name}-uploads-{suffix}",
        "PIXELFLOW_DLQ_NAME": f"{name}-uploads-dlq-{suffix}",
        "PIXELFLOW_SCRATCH_DIR": str(home / "scratch"),
        **env,
    })


@contextmanager
def running_stack(config) -> Iterator[Any]:
    """The stack of ``config`` up (its log lines printed) for the ``with`` block, then down."""
    from pixelflow.local.stack import Stack

    instance = Stack(config, log=lambda message: print(f"stack: {message}", flush=True))
    instance.up()
    try:
        yield instance
    finally:
        instance.down()


def queue_counts(sqs, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) message counts of a queue."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def upload_events(api_url: str, *, resource_ids: list[str] | None = None, event_ids: list[str] | None = None,
                  name: str = "pixelflow.upload.created") -> list[dict]:
    """``pixelflow.upload.created`` events (or events called ``name``) stored by the Prefect
    server (``POST /events/filter``)."""
    filt: dict[str, Any] = {
        "event": {"name": [name]},
        "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
    }
    if resource_ids is not None:
        filt["resource"] = {"id": resource_ids}
    if event_ids is not None:
        filt["id"] = {"id": event_ids}
    response = httpx.post(f"{api_url}/events/filter", json={"filter": filt, "limit": 50}, timeout=15)
    response.raise_for_status()
    return response.json()["events"]


def closed_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpForwarder:
    """Forward ``127.0.0.1:<port>`` to another address once started; until then the port is closed."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
