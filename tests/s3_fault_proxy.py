"""An HTTP proxy in front of an S3 endpoint that fails chosen requests, like S3 under load.

Point a process's ``AWS_ENDPOINT_URL`` at :attr:`S3FaultProxy.url`: every request is forwarded to
the real endpoint (moto's server) unless a :class:`Fault` matches it, in which case the client
gets an S3 error (``503 SlowDown`` by default) instead, either before the request reaches the
endpoint or after it was carried out there (a write that happened although the client saw it
fail).

Example:
    >>> proxy = S3FaultProxy("http://127.0.0.1:5000")            # doctest: +SKIP
    >>> proxy.start()                                            # doctest: +SKIP
    >>> proxy.add(Fault("GET", r"/uploads/clip\\.mp4$", first=2))  # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import random
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}


@dataclass
class Fault:
    """Which requests fail, and how.

    Attributes:
        method: HTTP method to match (``GET``, ``PUT``, ``HEAD``, ``POST``...) or ``*``.
        pattern: Regular expression searched in the URL-decoded path (``/<bucket>/<key>``).
        status: HTTP status of the injected error.
        code: S3 error code of the injected error (``SlowDown``, ``InternalError``...).
        first: Fail the first ``first`` matching requests, then let them through.
        fraction: Fail each matching request with this probability (used when ``first`` is
            ``None``), drawn from ``seed``.
        after_forwarding: Forward the request first, then answer with the error anyway.
        seed: Seed of the random draws of ``fraction``.
    """

    method: str
    pattern: str
    status: int = 503
    code: str = "SlowDown"
    first: int | None = None
    fraction: float = 0.0
    after_forwarding: bool = False
    seed: int = 0
    matched: int = 0
    injected: int = 0
    _random: random.Random = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)
        self._random = random.Random(self.seed)

    def decide(self, method: str, path: str) -> bool:
        """Whether this request fails (counts it; call under the proxy's lock)."""
        if self.method not in ("*", method) or not self._regex.search(path):
            return False
        self.matched += 1
        if self.first is not None:
            fail = self.matched <= self.first
        else:
            fail = self._random.random() < self.fraction
        if fail:
            self.injected += 1
        return fail


@dataclass
class Trigger:
    """Something another actor does to the endpoint right after a matching request was carried
    out (the client then gets the endpoint's own answer): for example an operator deleting an
    object while a run publishes.

    Attributes:
        method: HTTP method to match or ``*``.
        pattern: Regular expression searched in the URL-decoded path.
        action: Called once per firing, after the request was forwarded.
        first: Fire on the first ``first`` matching requests only.
    """

    method: str
    pattern: str
    action: object
    first: int = 1
    fired: int = 0

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)

    def decide(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not self._regex.search(path) or self.fired >= self.first:
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Seen:
    """One request the proxy handled."""

    method: str
    path: str
    status: int
    injected: bool


class S3FaultProxy:
    """A threaded HTTP proxy on loopback in front of ``target`` that injects :class:`Fault` s.

    Args:
        target: Base URL of the real S3 endpoint, e.g. ``http://127.0.0.1:5000``.
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.faults: list[Fault] = []
        self.triggers: list[Trigger] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "S3FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def on(self, trigger: Trigger) -> Trigger:
        with self.lock:
            self.triggers.append(trigger)
        return trigger

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.triggers.clear()

    def _triggered(self, method: str, path: str) -> list[Trigger]:
        with self.lock:
            return [t for t in self.triggers if t.decide(method, path)]

    def _decide(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.decide(method, path):
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, as botocore expects
    owner: S3FaultProxy

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        path = unquote(urlsplit(self.path).path)
        fault = self.owner._decide(self.command, path)
        if fault is not None and not fault.after_forwarding:
            self._error(fault)
            self.owner._record(Seen(self.command, path, fault.status, True))
            return
        status, headers, payload = self._forward(body)
        for trigger in self.owner._triggered(self.command, path):
            trigger.action()
        if fault is not None:  # the endpoint did the work; the client hears otherwise
            self._error(fault)
            self.owner._record(Seen(self.command, path, fault.status, True))
            return
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)) if self.command != "HEAD" else
                         next((v for n, v in headers if n.lower() == "content-length"), "0"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.owner._record(Seen(self.command, path, status, False))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.owner.target_host, self.owner.target_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()

    def _error(self, fault: Fault) -> None:
        message = _MESSAGES.get(fault.code, "Injected failure.")
        payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                   f"<Message>{message}</Message><RequestId>injected</RequestId></Error>").encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)) if self.command != "HEAD" else "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
