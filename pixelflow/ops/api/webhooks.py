"""``/v1/webhooks``: signed webhook endpoints, their recent deliveries, resending one
(:mod:`pixelflow.ops.webhook_endpoints`; docs/webhooks.md)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from pixelflow.ops.api.auth import require_token
from pixelflow.ops.api.schemas import ErrorOut
from pixelflow.ops.webhook_endpoints import MAX_DESCRIPTION, Endpoints
from pixelflow.outbox import Outbox

logger = logging.getLogger("pixelflow.ops.api")

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


class CreateWebhook(BaseModel):
    """``POST /v1/webhooks``."""

    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(description="Where events are POSTed: http(s), resolving to public addresses only "
                           "(unless PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS allows more).",
                           examples=["https://app.example.com/pixelflow/webhooks"])
    description: StrictStr | None = Field(None, max_length=MAX_DESCRIPTION, description="A note for you.")


class WebhookData(BaseModel):
    id: str
    url: str
    description: str | None = None
    created_at: str
    secret: str | None = Field(None, description="The signing secret: in the answer to POST only.")


class WebhookOut(BaseModel):
    data: WebhookData


class WebhookList(BaseModel):
    data: list[WebhookData]


class Attempt(BaseModel):
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None


class DeliveryData(BaseModel):
    id: str
    event_id: str
    type: str
    endpoint_id: str
    status: str = Field(description="pending, delivered, failed or cancelled (the endpoint was deleted).")
    created_at: str
    last_status_code: int | None = None
    next_attempt_at: str | None = None
    reason: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)


class DeliveryOut(BaseModel):
    data: DeliveryData


class DeliveryList(BaseModel):
    data: list[DeliveryData]


def endpoints(request: Request) -> Endpoints:
    state = request.app.state
    return Endpoints(Outbox(state.settings, state.records))


@router.post("", status_code=201, response_model=WebhookOut, summary="Register a webhook endpoint",
             responses={400: {"model": ErrorOut}})
def create_webhook(body: CreateWebhook = Body(...), service: Endpoints = Depends(endpoints)) -> JSONResponse:
    """A new endpoint: every event from now on is POSTed to ``url``, signed with ``secret``
    (``PixelFlow-Signature``). The secret is in this answer only: keep it."""
    return JSONResponse({"data": service.create(body.url, body.description)}, status_code=201,
                        headers={"Cache-Control": "no-store"})


@router.get("", response_model=WebhookList, summary="List webhook endpoints")
def list_webhooks(service: Endpoints = Depends(endpoints)) -> dict[str, Any]:
    """Every endpoint, oldest first (without secrets)."""
    return {"data": service.list()}


@router.get("/deliveries", response_model=DeliveryList, summary="Recent deliveries",
            responses={400: {"model": ErrorOut}})
def list_deliveries(limit: int = Query(25, ge=1, le=100), endpoint_id: str | None = Query(None, max_length=64),
                    service: Endpoints = Depends(endpoints)) -> dict[str, Any]:
    """Deliveries newest first, with every attempt's status code or error."""
    return {"data": service.deliveries(limit, endpoint_id)}


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut, summary="One delivery")
def get_delivery(delivery_id: str = Path(max_length=100), service: Endpoints = Depends(endpoints)) -> dict[str, Any]:
    return {"data": service.delivery(delivery_id)}


@router.post("/deliveries/{delivery_id}/resend", status_code=202, response_model=DeliveryOut,
             summary="Resend a delivery", responses={409: {"model": ErrorOut}})
def resend_delivery(delivery_id: str = Path(max_length=100), service: Endpoints = Depends(endpoints)) -> JSONResponse:
    """Deliver a failed (or delivered) event again, with the same event id, retried as a new
    delivery."""
    return JSONResponse({"data": service.resend(delivery_id)}, status_code=202)


@router.get("/{endpoint_id}", response_model=WebhookOut, summary="Get a webhook endpoint")
def get_webhook(endpoint_id: str = Path(max_length=64), service: Endpoints = Depends(endpoints)) -> dict[str, Any]:
    return {"data": service.get(endpoint_id)}


@router.delete("/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint")
def delete_webhook(endpoint_id: str = Path(max_length=64), service: Endpoints = Depends(endpoints)) -> Response:
    """Remove the endpoint and its secret; its pending deliveries are cancelled."""
    service.delete(endpoint_id)
    return Response(status_code=204)


def install(app: FastAPI) -> None:
    """Add the routes, and register ``PIXELFLOW_WEBHOOK_URL`` as endpoint ``default``."""
    app.include_router(router)
    state = app.state
    if state.settings.webhook_url:
        try:
            Outbox(state.settings, state.records).ensure_settings_endpoint()
        except Exception as exc:  # noqa: BLE001 - the dispatcher registers it too
            logger.error("PIXELFLOW_WEBHOOK_URL is not registered: %s", exc)
