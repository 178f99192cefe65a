"""Prefect events the API emits (``pixelflow.asset.deleted``), posted to the Prefect server's
``/events`` endpoint like the bridge's. Best effort: an unreachable Prefect is logged, never an
error of the request that deleted the asset."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx

logger = logging.getLogger("pixelflow.ops.api")

ASSET_DELETED = "pixelflow.asset.deleted"
_NAMESPACE = uuid.UUID("5d0c3e7e-2f54-4b0e-9a39-6f8f4b4a9e11")


def asset_event(event: str, asset_id: str, payload: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    """The JSON of a Prefect event about an asset, validated with Prefect's own schema; its id
    is derived from the event and asset, so a repeated delete is the same event."""
    from prefect.events.schemas.events import Event

    return Event(event=event, id=uuid.uuid5(_NAMESPACE, f"{event}:{asset_id}"),
                 resource={"prefect.resource.id": f"pixelflow.asset.{asset_id}",
                           "prefect.resource.name": key or asset_id},
                 payload=payload).model_dump(mode="json")


def emit(event: dict[str, Any], timeout: float = 5.0) -> bool:
    """Post one event to ``PREFECT_API_URL``; whether the server accepted it."""
    from pixelflow.pipeline.bridge import _auth_headers

    try:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
        if not url:
            logger.info("PREFECT_API_URL is not set: %s not emitted", event.get("event"))
            return False
        response = httpx.post(f"{url.rstrip('/')}/events", json=[event], headers=_auth_headers(), timeout=timeout)
        if response.is_success:
            return True
        logger.warning("Prefect refused %s: HTTP %s", event.get("event"), response.status_code)
    except Exception as exc:  # noqa: BLE001 - best effort
        logger.warning("could not emit %s: %s", event.get("event"), type(exc).__name__)
    return False
