"""Signed webhooks: what a receiver needs to trust a PixelFlow delivery.

Every delivery is a POST of a JSON body ``{"id", "type", "created_at", "data"}`` with the header
``PixelFlow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed with
the endpoint's secret (the scheme Mux and Stripe use). :func:`verify` checks it; nothing here
talks to the network or reads the environment, so a receiver can import it on its own.

Example:
    >>> body = b'{"id":"e1","type":"video.asset.ready","created_at":"2026-12-02T08:00:00Z","data":{}}'
    >>> header = signature_header(body, "whsec_test", timestamp=1700000000)
    >>> header.startswith("t=1700000000,v1=")
    True
    >>> verify(body, header, "whsec_test", now=1700000100)["type"]
    'video.asset.ready'
    >>> verify(body.replace(b"ready", b"error"), header, "whsec_test", now=1700000100)
    Traceback (most recent call last):
    pixelflow.webhooks.WebhookVerificationError: The signature does not match the body: it was not sent by PixelFlow with this secret, or the body was changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

#: The request header carrying the signature.
SIGNATURE_HEADER = "PixelFlow-Signature"

#: Every event type PixelFlow sends.
UPLOAD_CREATED = "video.upload.created"
UPLOAD_ASSET_CREATED = "video.upload.asset_created"
UPLOAD_CANCELLED = "video.upload.cancelled"
ASSET_CREATED = "video.asset.created"
ASSET_READY = "video.asset.ready"
ASSET_ERRORED = "video.asset.errored"
ASSET_DELETED = "video.asset.deleted"
#: A ready asset changed after its run (captions sent after the video attached), or a change of
#: it was refused (a caption file sent after the video was malformed: ``errors``).
ASSET_UPDATED = "video.asset.updated"
EVENT_TYPES = (UPLOAD_CREATED, UPLOAD_ASSET_CREATED, UPLOAD_CANCELLED, ASSET_CREATED, ASSET_READY, ASSET_ERRORED,
               ASSET_DELETED, ASSET_UPDATED)

#: How old a signature may be, in seconds, before :func:`verify` refuses it (replays).
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(ValueError):
    """The request is not a delivery PixelFlow signed with this secret (or it is too old)."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``.

    >>> len(sign(b"{}", "s", 1)), sign(b"{}", "s", 1) == sign(b"{}", "s", 2)
    (64, False)
    """
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``PixelFlow-Signature`` value of ``body`` (signed now unless ``timestamp`` is given)."""
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={sign(body, secret, t)}"


def parse_header(header: str) -> tuple[int, list[str]]:
    """``(timestamp, [v1 signatures])`` of a ``PixelFlow-Signature`` value.

    >>> parse_header("t=12,v1=ab,v1=cd")
    (12, ['ab', 'cd'])

    Raises:
        WebhookVerificationError: When the header has no timestamp or no ``v1`` signature.
    """
    timestamp, signatures = None, []
    for part in (header or "").split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookVerificationError(f"The {SIGNATURE_HEADER} header is not t=<unix seconds>,v1=<signature>.")
    return timestamp, signatures


def verify(body: bytes | str, header: str, secret: str, tolerance: int = DEFAULT_TOLERANCE,
           now: float | None = None) -> dict[str, Any]:
    """Check a delivery and return its event.

    Args:
        body: The raw request body, exactly as received (not re-serialised JSON).
        header: The ``PixelFlow-Signature`` header.
        secret: The endpoint's secret (shown once, when the endpoint was created).
        tolerance: Largest age of the signature, in seconds (replays of older requests fail).
        now: The current time (default: the clock).

    Returns:
        The event: ``{"id", "type", "created_at", "data"}``. Deduplicate on ``id``: a delivery
        may arrive more than once.

    Raises:
        WebhookVerificationError: For a missing or malformed header, a signature that does not
            match (constant-time comparison), one older than ``tolerance``, or a body that is
            not a JSON object.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    timestamp, signatures = parse_header(header)
    expected = sign(raw, secret, timestamp)
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("The signature does not match the body: it was not sent by PixelFlow with "
                                       "this secret, or the body was changed.")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"The signature is {abs(current - timestamp):.0f} s old, more than the "
                                       f"tolerance of {tolerance} s.")
    try:
        event = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("The body is not JSON.") from None
    if not isinstance(event, dict) or not {"id", "type", "data"} <= set(event):
        raise WebhookVerificationError("The body is not a PixelFlow event.")
    return event
