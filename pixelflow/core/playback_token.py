"""Playback tokens of signed assets: compact JWTs (HS256) made and checked with the standard
library only.

A token names one asset (``sub``), is meant for playback only (``aud`` ``playback``), expires
(``exp``, Unix seconds) and may name a viewer (``viewer_id``). It travels in the playback path,
``/t/<token>/assets/<asset_id>/master.m3u8``, so every URL a player resolves relative to the
playlist carries it too (see docs/api.md). The same check runs in the local servers
(:mod:`pixelflow.ops.playback`) and, on AWS, in the CloudFront Function of
``deployments/aws/pixelflow.yaml``.

Example:
    >>> token = sign_token(b"k" * 32, "0123456789abcdef01234567", expires_at=2000, issued_at=1000)
    >>> verify_token(token, b"k" * 32, "0123456789abcdef01234567", now=1500).asset_id
    '0123456789abcdef01234567'
    >>> verify_token(token, b"k" * 32, "0123456789abcdef01234567", now=2000)
    Traceback (most recent call last):
    pixelflow.errors.PixelFlowError: playback_token_expired: The playback token expired at 1970-01-01T00:33:20Z; ask for a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from pixelflow.errors import ErrorCode, PixelFlowError

#: The token's audience: a playback token is good for nothing else.
AUDIENCE = "playback"
#: Longest token accepted (anything longer is refused before it is decoded).
MAX_TOKEN_LENGTH = 2048
_HEADER = {"alg": "HS256", "typ": "JWT"}


@dataclass(frozen=True)
class PlaybackClaims:
    """What a valid token says.

    Attributes:
        asset_id: The asset it plays.
        expires_at: Unix seconds after which it is refused.
        issued_at: Unix seconds it was made at.
        viewer_id: The app's viewer, when it named one.
    """

    asset_id: str
    expires_at: int
    issued_at: int
    viewer_id: str | None = None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, signing_input: str) -> str:
    return _b64encode(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def iso(epoch: int) -> str:
    """Unix seconds as ISO 8601 UTC.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_token(key: bytes, asset_id: str, *, expires_at: int, issued_at: int, viewer_id: str | None = None) -> str:
    """A playback token for ``asset_id``, valid until ``expires_at`` (Unix seconds).

    Args:
        key: The HMAC-SHA256 signing key.
        asset_id: The asset the token plays.
        expires_at: Unix seconds after which the token is refused.
        issued_at: Unix seconds it is made at (``iat``).
        viewer_id: The app's viewer, carried in the token (``viewer_id``).
    """
    claims: dict[str, object] = {"sub": asset_id, "aud": AUDIENCE, "iat": int(issued_at), "exp": int(expires_at)}
    if viewer_id is not None:
        claims["viewer_id"] = viewer_id
    signing_input = ".".join(_b64encode(json.dumps(part, separators=(",", ":")).encode())
                             for part in (_HEADER, claims))
    return f"{signing_input}.{_signature(key, signing_input)}"


def _invalid(why: str) -> PixelFlowError:
    return PixelFlowError(ErrorCode.PLAYBACK_TOKEN_INVALID, f"The playback token is not valid ({why}).")


def verify_token(token: str | None, key: bytes, asset_id: str, *, now: float) -> PlaybackClaims:
    """The claims of ``token`` if it is a valid playback token of ``asset_id`` at ``now``.

    The signature is checked first (in constant time), then the header (HS256 only: ``none`` and
    every other algorithm are refused), the audience, the expiry and the asset.

    Raises:
        PixelFlowError: ``playback_token_required`` (no token), ``playback_token_invalid``
            (malformed, another algorithm, a bad signature, another audience),
            ``playback_token_expired``, ``playback_token_wrong_asset`` (a valid token of another
            asset).
    """
    if not token:
        raise PixelFlowError(ErrorCode.PLAYBACK_TOKEN_REQUIRED,
                             "This asset's playback is signed: a playback token is required.")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise _invalid("not a JWT")
    header_text, claims_text, signature = token.split(".")
    if not hmac.compare_digest(signature.encode("ascii", "replace"),
                               _signature(key, f"{header_text}.{claims_text}").encode("ascii")):
        raise _invalid("bad signature")
    try:
        header = json.loads(_b64decode(header_text))
        claims = json.loads(_b64decode(claims_text))
    except ValueError:
        raise _invalid("undecodable") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise _invalid("unexpected header")
    expires, issued = claims.get("exp"), claims.get("iat", 0)
    if claims.get("aud") != AUDIENCE or not isinstance(claims.get("sub"), str) \
            or type(expires) is not int or type(issued) is not int:
        raise _invalid("unexpected claims")
    if now >= expires:
        raise PixelFlowError(ErrorCode.PLAYBACK_TOKEN_EXPIRED,
                             f"The playback token expired at {iso(expires)}; ask for a new one.")
    if claims["sub"] != asset_id:
        raise PixelFlowError(ErrorCode.PLAYBACK_TOKEN_WRONG_ASSET, "The playback token is for another asset.")
    viewer = claims.get("viewer_id")
    return PlaybackClaims(asset_id=claims["sub"], expires_at=expires, issued_at=issued,
                          viewer_id=viewer if isinstance(viewer, str) else None)
