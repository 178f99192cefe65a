"""Private playback: who may fetch an asset's playlists, segments and poster.

An asset's ``playback_policy`` (its record in the records table) is ``public`` (anyone with the
URL) or ``signed``; an asset whose record has none follows ``PIXELFLOW_DEFAULT_PLAYBACK_POLICY``.
A signed asset is served only under ``/t/<token>/assets/<asset_id>/<name>``, with a valid
playback token of that asset (:mod:`pixelflow.core.playback_token`) in the path: HLS players
resolve every playlist and segment URL relative to the playlist they read, so the token travels
with every request without any change to the published playlists. The HTTP API and the player
server (``pixelflow play``) enforce it with :class:`PlaybackGate`; on AWS the CloudFront Function
of ``deployments/aws/pixelflow.yaml`` runs the same check before its cache.

Example:
    >>> signed_playback_base("https://cdn.example.com/assets/", "TOKEN")
    'https://cdn.example.com/t/TOKEN/assets/'
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable

from botocore.exceptions import ClientError

from pixelflow.core.layout import MASTER, POSTER
from pixelflow.core.playback_token import iso, sign_token, verify_token
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.records import PLAYBACK_POLICIES, SIGNED, Records
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.ops.playback")

#: Shortest signing key accepted (HS256 wants at least its hash's 32 bytes).
MIN_KEY_LENGTH = 32
#: Longest viewer id a token carries.
MAX_VIEWER_ID = 255
#: ``/t/<token>/assets/<asset_id>/<name>``: a playback path carrying a token.
TOKEN_PATH = re.compile(r"^/t/(?P<token>[^/]{1,4096})(?P<rest>/assets/.*)$")


def playback_urls(base: str, asset_id: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The master playlist, poster, storyboard, downloads and subtitles of ``asset_id`` (as its
    ``record`` names them) under the playback base ``base``."""
    record = record or {}
    storyboard = record.get("storyboard") or {}
    return {"hls": f"{base}{asset_id}/{MASTER}",
            "poster": None if record.get("audio_only") else f"{base}{asset_id}/{record.get('poster') or POSTER}",
            "storyboard": f"{base}{asset_id}/{storyboard['vtt']}" if storyboard.get("vtt") else None,
            "downloads": [{"name": d.get("name"), "url": f"{base}{asset_id}/{d['file']}",
                           "width": d.get("width"), "height": d.get("height"), "size": d.get("size")}
                          for d in record.get("downloads") or [] if d.get("file")],
            "subtitles": [{"language": t.get("language"), "name": t.get("name"), "default": bool(t.get("default")),
                           "url": f"{base}{asset_id}/{t['playlist']}", "vtt": f"{base}{asset_id}/{t['file']}"}
                          for t in record.get("subtitles") or [] if t.get("playlist")]}


def load_signing_key(settings: PixelFlowSettings, secrets: Any = None) -> bytes | None:
    """The playback signing key: ``PIXELFLOW_PLAYBACK_SIGNING_KEY``, else the Secrets Manager
    secret ``PIXELFLOW_PLAYBACK_SIGNING_KEY_SECRET_ID``; ``None`` when neither is set.

    Raises:
        PixelFlowError: ``playback_not_configured`` for a key shorter than 32 characters.
    """
    key = settings.playback_signing_key.get_secret_value() if settings.playback_signing_key else None
    if key is None and settings.playback_signing_key_secret_id:
        if secrets is None:
            from pixelflow.aws import secretsmanager_client

            secrets = secretsmanager_client()
        key = secrets.get_secret_value(SecretId=settings.playback_signing_key_secret_id).get("SecretString")
    if key is None:
        return None
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise PixelFlowError(ErrorCode.PLAYBACK_NOT_CONFIGURED,
                             f"The playback signing key must have at least {MIN_KEY_LENGTH} characters.")
    return key.encode()


def signed_playback_base(base: str, token: str) -> str:
    """Where a signed asset's files are, given the public playback base (``.../assets/``)."""
    base = base.rstrip("/") + "/"
    root = base[: -len("assets/")] if base.endswith("/assets/") else base
    return f"{root}t/{token}/assets/"


def split_token_path(path: str) -> tuple[str | None, str]:
    """``(token, path without it)`` of a request path; ``token`` is ``None`` for a plain path.

    >>> split_token_path("/t/a.b.c/assets/x/master.m3u8"), split_token_path("/assets/x/poster.jpg")
    (('a.b.c', '/assets/x/master.m3u8'), (None, '/assets/x/poster.jpg'))
    """
    match = TOKEN_PATH.match(path)
    return (match["token"], match["rest"]) if match else (None, path)


class PlaybackGate:
    """Decides whether a request may fetch an asset's files, and issues playback tokens.

    Args:
        settings: The default policy and the token lifetimes.
        records: Where each asset's policy is (the records table).
        key: The signing key (:func:`load_signing_key`); ``None``: signed assets cannot be played.
        clock: Unix time now (tests pass their own).
    """

    def __init__(self, settings: PixelFlowSettings, records: Records, key: bytes | None,
                 clock: Callable[[], float] = time.time, key_error: PixelFlowError | None = None):
        self.settings = settings
        self.records = records
        self.key = key
        self.clock = clock
        self.key_error = key_error

    @classmethod
    def from_settings(cls, settings: PixelFlowSettings, records: Records | None = None) -> "PlaybackGate":
        """The gate of ``settings``; a signing key that cannot be used leaves signed playback off
        (every signed request is refused, with the reason), never the rest of the server."""
        try:
            key, error = load_signing_key(settings), None
        except PixelFlowError as exc:
            key, error = None, exc
            logger.error("signed playback is off: %s", exc.message)
        return cls(settings, records or Records.from_settings(settings), key, key_error=error)

    def policy_of(self, record: dict[str, Any] | None) -> str:
        """The policy of an asset record (its own, else the default)."""
        policy = (record or {}).get("playback_policy")
        return policy if policy in PLAYBACK_POLICIES else self.settings.default_playback_policy

    def policy(self, asset_id: str) -> str:
        """The asset's policy, read from its record (a missing record or table: the default)."""
        try:
            record = self.records.get_asset(asset_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            record = None
        return self.policy_of(record)

    def require_key(self) -> bytes:
        """The signing key, or ``playback_not_configured``."""
        if self.key_error is not None:
            raise self.key_error
        if self.key is None:
            raise PixelFlowError(ErrorCode.PLAYBACK_NOT_CONFIGURED, "Signed playback needs a signing key: set "
                                 "PIXELFLOW_PLAYBACK_SIGNING_KEY or PIXELFLOW_PLAYBACK_SIGNING_KEY_SECRET_ID.")
        return self.key

    def check(self, asset_id: str, token: str | None) -> str:
        """Let a request for ``asset_id``'s files through (returning the asset's policy), or raise
        why not. A request with a token (a ``/t/<token>/`` path) needs a valid token of this
        asset, whatever its policy; one without needs a public asset.

        Raises:
            PixelFlowError: ``playback_token_required``, ``playback_token_invalid``,
                ``playback_token_expired``, ``playback_token_wrong_asset`` (answered 403), or
                ``playback_not_configured`` (no signing key).
        """
        policy = self.policy(asset_id)
        if token is not None:
            verify_token(token, self.require_key(), asset_id, now=self.clock())
        elif policy == SIGNED:
            verify_token(None, b"", asset_id, now=self.clock())  # raises playback_token_required
        return policy

    def issue(self, asset_id: str, expires_in: int | None = None, viewer_id: str | None = None) -> dict[str, Any]:
        """A playback token of ``asset_id``: ``{"token", "expires_at", "expires_in", "viewer_id"}``.

        Raises:
            PixelFlowError: ``expiry_out_of_range`` for a lifetime outside 1 s to
                ``PIXELFLOW_PLAYBACK_TOKEN_MAX_SECONDS``; ``invalid_request`` for a viewer id
                that is empty, too long or has control characters; ``playback_not_configured``.
        """
        maximum = self.settings.playback_token_max_seconds
        seconds = min(self.settings.playback_token_default_seconds, maximum) if expires_in is None else expires_in
        if not 1 <= seconds <= maximum:
            raise PixelFlowError(ErrorCode.EXPIRY_OUT_OF_RANGE,
                                 f"expires_in must be 1 to {maximum} seconds (got {seconds}).",
                                 {"max_seconds": maximum})
        if viewer_id is not None and (not viewer_id or len(viewer_id) > MAX_VIEWER_ID
                                      or any(ord(c) < 32 or ord(c) == 127 for c in viewer_id)):
            raise PixelFlowError(ErrorCode.INVALID_REQUEST, f"viewer_id must be 1 to {MAX_VIEWER_ID} characters "
                                 "without control characters.")
        now = int(self.clock())
        expires_at = now + seconds
        token = sign_token(self.require_key(), asset_id, expires_at=expires_at, issued_at=now, viewer_id=viewer_id)
        return {"token": token, "expires_at": iso(expires_at), "expires_in": expires_at - now,
                "viewer_id": viewer_id}
