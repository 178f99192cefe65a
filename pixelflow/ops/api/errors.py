"""Every error the API answers is JSON ``{"error": {"code", "message"}}`` with one of the project's
stable codes (:class:`pixelflow.errors.ErrorCode`) and the HTTP status that code maps to."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelflow.errors import ErrorCode, PixelFlowError

logger = logging.getLogger("pixelflow.ops.api")

#: The HTTP status of each code the API answers (anything else is 500).
STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNKNOWN_FIELD: 400,
    ErrorCode.INVALID_FILENAME: 400,
    ErrorCode.PASSTHROUGH_TOO_LONG: 400,
    ErrorCode.INVALID_CAPTIONS: 400,
    ErrorCode.PART_OUT_OF_RANGE: 400,
    ErrorCode.ETAG_MISMATCH: 400,
    ErrorCode.SIZE_MISMATCH: 400,
    ErrorCode.INVALID_CURSOR: 400,
    ErrorCode.NOT_MULTIPART: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.EMPTY_FILE: 400,
    ErrorCode.UPLOAD_NOT_FOUND: 404,
    ErrorCode.ASSET_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UPLOAD_NOT_WAITING: 409,
    ErrorCode.PARTS_MISSING: 409,
    ErrorCode.UPLOAD_EXPIRED: 410,
    ErrorCode.STORAGE_ERROR: 503,
    ErrorCode.RECORDS_UNAVAILABLE: 503,
    ErrorCode.INVALID_WEBHOOK_URL: 400,
    ErrorCode.WEBHOOK_ADDRESS_NOT_ALLOWED: 400,
    ErrorCode.WEBHOOK_NOT_FOUND: 404,
    ErrorCode.DELIVERY_NOT_FOUND: 404,
    ErrorCode.DELIVERY_PENDING: 409,
    ErrorCode.INTERNAL: 500,
    # Private playback.
    ErrorCode.PLAYBACK_TOKEN_REQUIRED: 403,
    ErrorCode.PLAYBACK_TOKEN_INVALID: 403,
    ErrorCode.PLAYBACK_TOKEN_EXPIRED: 403,
    ErrorCode.PLAYBACK_TOKEN_WRONG_ASSET: 403,
    ErrorCode.ASSET_NOT_SIGNED: 409,
    ErrorCode.EXPIRY_OUT_OF_RANGE: 400,
    ErrorCode.PLAYBACK_NOT_CONFIGURED: 503,
    # Thumbnails at time t.
    ErrorCode.INVALID_TIME: 400,
    ErrorCode.INVALID_SIZE: 400,
    ErrorCode.INVALID_FORMAT: 400,
    ErrorCode.THUMBNAIL_TOO_LARGE: 400,
    ErrorCode.THUMBNAILS_BUSY: 503,
    ErrorCode.THUMBNAILS_UNAVAILABLE: 501,
    ErrorCode.THUMBNAIL_FAILED: 500,
}


def error_body(code: ErrorCode | str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer.

    >>> error_body(ErrorCode.UNAUTHORIZED, "No token.")
    {'error': {'code': 'unauthorized', 'message': 'No token.'}}
    """
    body: dict[str, Any] = {"code": ErrorCode(code).value, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(error: PixelFlowError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.code == ErrorCode.UNAUTHORIZED else None
    return JSONResponse(error_body(error.code, error.message, error.details), status_code=STATUS.get(error.code, 500),
                        headers=headers)


def _validation_error(exc: RequestValidationError) -> PixelFlowError:
    errors = exc.errors()
    for item in errors:
        if item.get("type") == "extra_forbidden":
            field = ".".join(str(p) for p in item.get("loc", ())[1:])
            return PixelFlowError(ErrorCode.UNKNOWN_FIELD, f"Unknown field {field!r}.")
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type") in ("model_attributes_type", "dict_type", "json_invalid") and where in ("body", ""):
        return PixelFlowError(ErrorCode.INVALID_REQUEST, "The request body must be a JSON object.")
    return PixelFlowError(ErrorCode.INVALID_REQUEST, f"{where}: {first.get('msg', 'invalid value')}.")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with the JSON error body."""

    @app.exception_handler(PixelFlowError)
    async def _pixelflow(_request: Request, exc: PixelFlowError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(PixelFlowError(ErrorCode.NOT_FOUND, "No such resource."))
        if exc.status_code == 405:
            return error_response(PixelFlowError(ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed on this resource."))
        return JSONResponse(error_body(ErrorCode.INVALID_REQUEST, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(ClientError)
    async def _aws(_request: Request, exc: ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        logger.warning("AWS error: %s", code)
        if code == "ResourceNotFoundException":
            return error_response(PixelFlowError(ErrorCode.RECORDS_UNAVAILABLE, "The records table is not available."))
        return error_response(PixelFlowError(ErrorCode.STORAGE_ERROR, f"Storage answered {code or 'an error'}."))

    @app.exception_handler(BotoCoreError)
    async def _aws_unreachable(_request: Request, exc: BotoCoreError):
        logger.warning("AWS unreachable: %s", type(exc).__name__)
        return error_response(PixelFlowError(ErrorCode.STORAGE_ERROR, "Storage is unreachable."))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception):
        logger.exception("internal error")
        return error_response(PixelFlowError(ErrorCode.INTERNAL, "Internal error."))
