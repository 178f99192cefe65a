"""Webhook endpoints and deliveries as the API and the CLI manage them: register an endpoint
(its URL checked, its secret generated and shown once), list and delete endpoints, list recent
deliveries with their attempts, resend one.

Example:
    >>> secret = new_secret()
    >>> secret.startswith("whsec_") and len(secret) > 40
    True
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.ops.webhook_urls import resolve
from pixelflow.outbox import SETTINGS_ENDPOINT, Outbox
from pixelflow.records import now_iso

_ENDPOINT_ID = re.compile(rf"^(?:[0-9a-f]{{24}}|{SETTINGS_ENDPOINT})$")
_DELIVERY_ID = re.compile(rf"^[0-9a-f-]{{36}}\.(?:[0-9a-f]{{24}}|{SETTINGS_ENDPOINT})$")
MAX_DESCRIPTION = 255


def new_secret() -> str:
    """A signing secret: 32 random bytes, prefixed like Stripe's so it is recognisable."""
    return "whsec_" + secrets.token_urlsafe(32)


def endpoint_view(endpoint: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as the API shows it (never its secret)."""
    return {k: endpoint.get(k) for k in ("id", "url", "description", "created_at")}


def delivery_view(delivery: dict[str, Any]) -> dict[str, Any]:
    """A delivery as the API shows it: its event, endpoint, status, attempts."""
    return {"id": delivery["id"], "event_id": delivery.get("event_id"), "type": delivery.get("type"),
            "endpoint_id": delivery.get("endpoint_id"), "status": delivery.get("status"),
            "created_at": delivery.get("created_at"), "last_status_code": delivery.get("last_status_code"),
            "next_attempt_at": delivery.get("next_attempt_at"), "reason": delivery.get("reason"),
            "attempts": [{k: a.get(k) for k in ("at", "status_code", "error", "duration_ms")}
                         for a in delivery.get("attempts") or []]}


class Endpoints:
    """What ``/v1/webhooks`` and ``pixelflow webhooks`` do, over one :class:`Outbox`."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def create(self, url: str, description: str | None = None) -> dict[str, Any]:
        """Register an endpoint; its view with its ``secret`` (the only time it is shown).

        Raises:
            PixelFlowError: ``invalid_webhook_url``, ``webhook_address_not_allowed``,
                ``invalid_request`` (description too long).
        """
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise PixelFlowError(ErrorCode.INVALID_REQUEST, f"description is longer than {MAX_DESCRIPTION} characters.")
        resolve(url, self.outbox.settings.webhook_allowed_networks)
        endpoint = {"id": secrets.token_hex(12), "url": url, "description": description, "created_at": now_iso()}
        secret = new_secret()
        self.outbox.put_endpoint(endpoint, secret)
        return {**endpoint_view(endpoint), "secret": secret}

    def list(self) -> list[dict[str, Any]]:
        return [endpoint_view(e) for e in self.outbox.endpoints()]

    def get(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.outbox.get_endpoint(endpoint_id) if _ENDPOINT_ID.match(endpoint_id) else None
        if endpoint is None:
            raise PixelFlowError(ErrorCode.WEBHOOK_NOT_FOUND, f"No webhook endpoint {endpoint_id}.")
        return endpoint_view(endpoint)

    def delete(self, endpoint_id: str) -> None:
        if not (_ENDPOINT_ID.match(endpoint_id) and self.outbox.delete_endpoint(endpoint_id)):
            raise PixelFlowError(ErrorCode.WEBHOOK_NOT_FOUND, f"No webhook endpoint {endpoint_id}.")

    def deliveries(self, limit: int = 25, endpoint_id: str | None = None) -> list[dict[str, Any]]:
        if endpoint_id is not None:
            self.get(endpoint_id)
        return [delivery_view(d) for d in self.outbox.list_deliveries(limit, endpoint_id)]

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        found = self.outbox.get_delivery(delivery_id) if _DELIVERY_ID.match(delivery_id) else None
        if found is None:
            raise PixelFlowError(ErrorCode.DELIVERY_NOT_FOUND, f"No webhook delivery {delivery_id}.")
        return delivery_view(found)

    def resend(self, delivery_id: str) -> dict[str, Any]:
        """Queue a finished delivery again (same event id).

        Raises:
            PixelFlowError: ``delivery_not_found``, ``webhook_not_found`` (its endpoint was
                deleted), ``delivery_pending`` (it is still being retried).
        """
        current = self.delivery(delivery_id)
        self.get(current["endpoint_id"])
        resent = self.outbox.resend(delivery_id)
        if resent is None:
            raise PixelFlowError(ErrorCode.DELIVERY_PENDING, f"Delivery {delivery_id} is still pending: it is being "
                                 "retried already.")
        return delivery_view(resent)
