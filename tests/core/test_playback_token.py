"""Playback tokens: HS256 JWTs that name one asset and expire; anything else is refused with its code."""

import base64
import hashlib
import hmac
import json

import pytest

from pixelflow.core.playback_token import sign_token, verify_token
from pixelflow.errors import PixelFlowError

KEY = b"k" * 40
ASSET, OTHER = "0123456789abcdef01234567", "76543210fedcba9876543210"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _forge(header: dict, claims: dict, key: bytes = KEY) -> str:
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{signature.decode().rstrip('=')}"


def _code(token, asset=ASSET, now=1500, key=KEY) -> str:
    with pytest.raises(PixelFlowError) as caught:
        verify_token(token, key, asset, now=now)
    return caught.value.code.value


def test_a_token_plays_its_asset_until_it_expires():
    token = sign_token(KEY, ASSET, expires_at=2000, issued_at=1000, viewer_id="viewer-7")
    claims = verify_token(token, KEY, ASSET, now=1999)
    assert (claims.asset_id, claims.expires_at, claims.issued_at, claims.viewer_id) == (ASSET, 2000, 1000, "viewer-7")
    # A standard JWT: header and claims readable by any JWT library.
    header, payload, _ = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(base64.urlsafe_b64decode(payload + "==")) == {
        "sub": ASSET, "aud": "playback", "iat": 1000, "exp": 2000, "viewer_id": "viewer-7"}
    assert _code(token, now=2000) == "playback_token_expired"
    assert _code(token, asset=OTHER) == "playback_token_wrong_asset"


def test_missing_tampered_and_foreign_tokens_are_refused_with_their_codes():
    token = sign_token(KEY, ASSET, expires_at=2000, issued_at=1000)
    header, payload, signature = token.split(".")
    later = _b64({"sub": ASSET, "aud": "playback", "iat": 1000, "exp": 99999})
    other_asset = _b64({"sub": OTHER, "aud": "playback", "iat": 1000, "exp": 2000})
    assert _code(None) == _code("") == "playback_token_required"
    refused = {
        "expiry pushed back": f"{header}.{later}.{signature}",
        "asset swapped": f"{header}.{other_asset}.{signature}",
        "signature changed": f"{header}.{payload}.{signature[:-2]}AA",
        "signature dropped": f"{header}.{payload}.",
        "alg none": _forge({"alg": "none"}, {"sub": ASSET, "aud": "playback", "exp": 2000}).rsplit(".", 1)[0] + ".",
        "HS512 header": _forge({"alg": "HS512"}, {"sub": ASSET, "aud": "playback", "exp": 2000}),
        "another audience": _forge({"alg": "HS256"}, {"sub": ASSET, "aud": "api", "exp": 2000}),
        "no expiry": _forge({"alg": "HS256"}, {"sub": ASSET, "aud": "playback"}),
        "expiry as text": _forge({"alg": "HS256"}, {"sub": ASSET, "aud": "playback", "exp": "2000"}),
        "claims not an object": _forge({"alg": "HS256"}, [ASSET]),  # type: ignore[arg-type]
        "not a JWT": "not-a-token",
        "too long": f"{header}.{'A' * 3000}.{signature}",
        "padding and junk": f"{header}=.{payload}.{signature}",
    }
    for why, bad in refused.items():
        assert _code(bad) == "playback_token_invalid", why
    assert _code(token, key=b"another key of forty characters........") == "playback_token_invalid"
