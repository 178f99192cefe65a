"""A tiny local web server for the player page: static files plus a read-only S3 proxy.

Routes (GET only; everything else is refused):

* ``/`` — the player page (``?asset=<asset_id>`` selects the asset); ``/static/<file>`` — its
  scripts and styles, from a fixed list.
* ``/api/assets/<asset_id>`` — the asset's state as JSON (see :mod:`pixelflow.ops.assets`).
* ``/assets/<asset_id>/<name>`` — a playlist, segment or poster of a published asset, streamed
  from the output bucket. Asset ids must be hex and names playlist/segment/poster files at the
  asset root or one folder down, so no other key of either bucket can be reached (not even the
  manifest: ``/api/assets`` serves what the page needs). The objects stay private.
* ``/t/<token>/assets/<asset_id>/<name>`` — the same for a ``signed`` asset, with a playback
  token in the path (:mod:`pixelflow.ops.playback`); a signed asset's files and state are 403
  with the reason's code (``playback_token_required``, ``_invalid``, ``_expired``,
  ``_wrong_asset``) without a valid token of it. ``/api/assets/<asset_id>?token=<token>`` gives
  the state of a signed asset.
* ``/assets/<asset_id>/thumbnail.jpg`` (or ``.webp``) ``?time=&width=&height=`` — a picture at a
  time, made from a rendition (:mod:`pixelflow.ops.thumbnails`); errors are JSON ``{"code",
  "message"}`` with the API's codes and statuses.

Example:
    >>> server = make_server(PixelFlowSettings(), port=0)          # doctest: +SKIP
    >>> thread = serve_in_thread(server); print(server_url(server)) # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import ClientError

from pixelflow.ops import assets
from pixelflow.aws import is_missing, s3_client
from pixelflow.core.manifest import PLAYBACK_TYPES
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.ops.playback import PlaybackGate, split_token_path
from pixelflow.ops import thumbnails
from pixelflow.ops.api.errors import STATUS as API_STATUS
from pixelflow.settings import PixelFlowSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The only static files served: URL name -> (path under STATIC_DIR, content type).
STATIC_FILES = {
    "player.js": ("player.js", "text/javascript; charset=utf-8"),
    "storyboard.js": ("storyboard.js", "text/javascript; charset=utf-8"),
    "captions.js": ("captions.js", "text/javascript; charset=utf-8"),
    "player.css": ("player.css", "text/css; charset=utf-8"),
    "hls.min.js": ("vendor/hls.js/hls.min.js", "text/javascript; charset=utf-8"),
}

#: Content types of the asset files the proxy passes through (anything else is refused).
ASSET_TYPES = PLAYBACK_TYPES

_ASSET_PATH = re.compile(
    r"^/assets/(?P<asset_id>[0-9a-f]{24})/(?P<name>(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}/){0,3}[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})$"
)
_THUMBNAIL_PATH = re.compile(r"^/assets/(?P<asset_id>[^/]{1,64})/thumbnail\.(?P<fmt>[^/]{1,16})$")
_API_PATH = re.compile(r"^/api/assets/(?P<asset_id>[^/]{1,64})$")
_CHUNK = 256 * 1024


class PlayerServer(ThreadingHTTPServer):
    """The HTTP server, carrying what its handlers need.

    Attributes:
        settings: Buckets and prefixes.
        s3: A shared (thread-safe) boto3 S3 client.
        allowed: Asset ids that may be served, or ``None`` for any.
        default_asset: Asset ``/`` opens when no ``?asset=`` is given.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], settings: PixelFlowSettings, s3,
                 allowed: frozenset[str] | None, default_asset: str | None, gate: PlaybackGate | None = None):
        super().__init__(address, PlayerHandler)
        self.settings = settings
        self.s3 = s3
        self.allowed = allowed
        self.default_asset = default_asset
        self.gate = gate or PlaybackGate.from_settings(settings)


class PlayerHandler(BaseHTTPRequestHandler):
    """Serves one request; GET only."""

    server: PlayerServer
    server_version = "PixelFlowPlayer"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: the CLI prints the URL, not an access log

    # --- responses --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, default=str).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"code": status.phrase.lower().replace(" ", "_"), "message": message})

    def _refuse(self) -> None:
        self.close_connection = True  # a request body, if any, is not read
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET is served\n", "text/plain; charset=utf-8",
                   {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse

    # --- routing ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            return self._index(parse_qs(url.query))
        if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            relative, content_type = STATIC_FILES[path[len("/static/"):]]
            body = (STATIC_DIR / relative).read_bytes()
            return self._send(HTTPStatus.OK, body, content_type, {"Cache-Control": "no-cache"})
        match = _API_PATH.match(path)
        if match:
            token = parse_qs(url.query).get("token", [None])[0]
            return self._status(match["asset_id"], token)
        token, path = split_token_path(path)
        match = _THUMBNAIL_PATH.match(path)
        if match:
            return self._thumbnail(match["asset_id"], match["fmt"], parse_qs(url.query), token)
        match = _ASSET_PATH.match(path)
        if match and ".." not in match["name"]:
            return self._asset_file(match["asset_id"], match["name"], token)
        return self._error(HTTPStatus.NOT_FOUND, "Not found.")

    def _index(self, query: dict[str, list[str]]) -> None:
        if not query.get("asset") and self.server.default_asset:
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", f"/?asset={self.server.default_asset}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = (STATIC_DIR / "index.html").read_bytes()
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", {"Cache-Control": "no-cache"})

    def _permitted(self, asset_id: str) -> bool:
        allowed = self.server.allowed
        return assets.is_asset_id(asset_id) and (allowed is None or asset_id in allowed)

    def _gate(self, asset_id: str, token: str | None) -> str | None:
        """Answer 403 (or 503) unless the request may have ``asset_id``'s files; its policy if it may."""
        try:
            return self.server.gate.check(asset_id, token)
        except PixelFlowError as error:
            status = HTTPStatus.SERVICE_UNAVAILABLE if error.code == ErrorCode.PLAYBACK_NOT_CONFIGURED \
                else HTTPStatus.FORBIDDEN
            self._json(status, {"asset_id": asset_id, "status": "error", "code": error.code.value,
                                "message": error.message})
        except ClientError as exc:
            self._error(HTTPStatus.BAD_GATEWAY, f"Records error: {exc.response.get('Error', {}).get('Code')}")
        return None

    def _status(self, asset_id: str, token: str | None = None) -> None:
        if not self._permitted(asset_id):
            return self._json(HTTPStatus.NOT_FOUND, {
                "asset_id": asset_id, "status": "error", "code": assets.AssetNotFound.code,
                "message": "Not an asset id served here."})
        policy = self._gate(asset_id, token)
        if policy is None:
            return None
        try:
            info = assets.get_asset(asset_id, self.server.settings, self.server.s3)
        except assets.AssetNotFound as exc:
            return self._json(HTTPStatus.NOT_FOUND, {"asset_id": asset_id, "status": "error", **exc.to_dict()})
        except ClientError as exc:
            return self._error(HTTPStatus.BAD_GATEWAY, f"Storage error: {exc.response.get('Error', {}).get('Code')}")
        data = info.to_dict()
        data.pop("source", None)  # bucket keys are not the viewer's business
        data["playback_policy"] = policy
        self._json(HTTPStatus.OK, data)

    def _asset_file(self, asset_id: str, name: str, token: str | None = None) -> None:
        suffix = Path(name).suffix.lower()
        if suffix not in ASSET_TYPES or not self._permitted(asset_id):
            return self._error(HTTPStatus.NOT_FOUND, "Not found.")
        if self._gate(asset_id, token) is None:
            return None
        settings = self.server.settings
        request: dict[str, Any] = {"Bucket": settings.output_bucket, "Key": settings.layout(asset_id).key(name)}
        range_header = self.headers.get("Range")
        if range_header and re.fullmatch(r"bytes=\d*-\d*", range_header.strip()):
            request["Range"] = range_header.strip()
        try:
            obj = self.server.s3.get_object(**request)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if is_missing(exc):
                return self._error(HTTPStatus.NOT_FOUND, "Not found.")
            if code == "InvalidRange":
                return self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "Range not satisfiable.")
            return self._error(HTTPStatus.BAD_GATEWAY, f"Storage error: {code}")
        partial = "ContentRange" in obj
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", ASSET_TYPES[suffix])
        self.send_header("Content-Length", str(obj["ContentLength"]))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache" if suffix == ".m3u8" else "max-age=3600")
        if partial:
            self.send_header("Content-Range", obj["ContentRange"])
        if obj.get("ContentDisposition"):  # downloads: saved under the source's name
            self.send_header("Content-Disposition", obj["ContentDisposition"])
        self.end_headers()
        self._stream(obj["Body"].iter_chunks(_CHUNK))

    def _thumbnail(self, asset_id: str, fmt: str, query: dict[str, list[str]], token: str | None = None) -> None:
        """``thumbnail.<jpg|webp>?time=&width=&height=`` (see :mod:`pixelflow.ops.thumbnails`); a
        signed asset's only with its token, like its files."""
        server = self.server
        try:
            if not self._permitted(asset_id):
                raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, "Not an asset id served here.")
            if self._gate(asset_id, token) is None:
                return None
            image = thumbnails.service_of(server, server.settings, server.s3).get(
                asset_id, fmt, {name: values[0] for name, values in query.items()})
        except PixelFlowError as error:
            body = json.dumps({"code": error.code.value, "message": error.message, **(
                {"details": error.details} if error.details else {})}).encode()
            return self._send(API_STATUS.get(error.code, 500), body, "application/json",
                              {"Cache-Control": "no-store", **thumbnails.error_headers(error)})
        except ClientError as exc:
            return self._error(HTTPStatus.BAD_GATEWAY, f"Storage error: {exc.response.get('Error', {}).get('Code')}")
        headers = image.headers()
        content_type = headers.pop("Content-Type")
        self._send(HTTPStatus.OK, image.body, content_type, headers)

    def _stream(self, chunks: Iterable[bytes]) -> None:
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the viewer went away (seek, level switch)


def make_server(settings: PixelFlowSettings, host: str = "127.0.0.1", port: int = 0, *,
                asset_ids: Iterable[str] | None = None, default_asset: str | None = None,
                s3=None, gate: PlaybackGate | None = None) -> PlayerServer:
    """Create (bind, not yet run) the player server.

    Args:
        settings: Buckets and prefixes to read from.
        host: Interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (see :func:`server_url`).
        asset_ids: Restrict the server to these assets (``None``: any asset id).
        default_asset: The asset ``/`` redirects to.
        s3: An S3 client (default: :func:`pixelflow.aws.s3_client`).
        gate: Who may play what (default: each asset's policy from the records table, the
            signing key of ``settings``).

    Returns:
        The bound server; run it with ``serve_forever()`` or :func:`serve_in_thread`.
    """
    allowed = frozenset(asset_ids) if asset_ids is not None else None
    return PlayerServer((host, port), settings, s3 or s3_client(), allowed, default_asset, gate)


def server_url(server: PlayerServer, asset_id: str | None = None) -> str:
    """The base URL of a bound server, or the player URL of ``asset_id``."""
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}/"
    return f"{base}?asset={asset_id}" if asset_id else base


def serve_in_thread(server: PlayerServer) -> threading.Thread:
    """Run ``server`` in a daemon thread; stop it with ``server.shutdown(); server.server_close()``."""
    thread = threading.Thread(target=server.serve_forever, name="pixelflow-player", daemon=True)
    thread.start()
    return thread
