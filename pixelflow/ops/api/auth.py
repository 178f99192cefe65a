"""Bearer-token authentication of the API.

Tokens come from ``PIXELFLOW_API_TOKENS`` (comma-separated) and, on AWS, from the Secrets Manager
secret ``PIXELFLOW_API_TOKENS_SECRET_ID`` (:func:`load_tokens`). A request's token is compared
with every configured token in constant time (:func:`hmac.compare_digest`); tokens are never
logged.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Iterable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.settings import PixelFlowSettings

bearer = HTTPBearer(auto_error=False, description="An API token (PIXELFLOW_API_TOKENS).")


def parse_secret(text: str) -> list[str]:
    """Tokens in a secret's string: a JSON list, a JSON object with ``tokens``, or comma-separated.

    >>> parse_secret('["a", "b"]'), parse_secret('{"tokens": "a,b"}'), parse_secret("a, b")
    (['a', 'b'], ['a', 'b'], ['a', 'b'])
    """
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, dict):
        value = value.get("tokens", "")
    if isinstance(value, str):
        value = value.split(",")
    return [str(token).strip() for token in value if str(token).strip()]


def load_tokens(settings: PixelFlowSettings, secrets: Any = None) -> list[str]:
    """The tokens the API accepts: ``settings.api_tokens`` plus those of the Secrets Manager
    secret ``settings.api_tokens_secret_id`` when set."""
    tokens = list(settings.api_tokens)
    if settings.api_tokens_secret_id:
        if secrets is None:
            from pixelflow.aws import secretsmanager_client

            secrets = secretsmanager_client()
        secret = secrets.get_secret_value(SecretId=settings.api_tokens_secret_id)
        tokens += parse_secret(secret.get("SecretString") or "")
    return tokens


def token_matches(presented: str, tokens: Iterable[str]) -> bool:
    """Whether ``presented`` is one of ``tokens``; every token is compared, in constant time.

    >>> token_matches("s3cret", ["other", "s3cret"]), token_matches("", ["x"]), token_matches("x", [])
    (True, False, False)
    """
    given = presented.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode())
    return found and bool(presented)


async def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """FastAPI dependency: 401 ``unauthorized`` unless the request carries a valid bearer token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise PixelFlowError(ErrorCode.UNAUTHORIZED, "Send an API token: Authorization: Bearer <token>.")
    if not token_matches(credentials.credentials, request.app.state.tokens):
        raise PixelFlowError(ErrorCode.UNAUTHORIZED, "The API token is not valid.")
