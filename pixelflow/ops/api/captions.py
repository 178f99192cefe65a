"""``POST /v1/uploads/{upload_id}/captions``: a presigned ``PUT`` URL for one caption file of a
direct upload, stored as the upload's sidecar (``uploads/<id>/talk.en.vtt`` beside
``uploads/<id>/talk.mp4``), which the upload's transcode run reads, validates and publishes.

A separate call per language, rather than a field of ``POST /v1/uploads``: the upload flow is
unchanged for apps without captions, a language can be added to any upload (single ``PUT`` or
multipart), and each answer is one URL with its own bad-input errors. A caption file sent before
the video is read by the video's run; one sent after it (the upload is ``asset_created``) is
attached to the published asset by the ``attach-captions`` flow (flows/captions.py).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Path

from pixelflow.core.captions import caption_language, sidecar_key
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.core.languages import language_name
from pixelflow.ops.api.auth import require_token
from pixelflow.ops.api.schemas import CaptionsOut, CreateCaptions, ErrorOut
from pixelflow.ops.api.uploads import UploadService, _iso, service
from pixelflow.records import ASSET_CREATED

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


@router.post("/{upload_id}/captions", status_code=201, response_model=CaptionsOut,
             summary="Add a caption file to an upload",
             responses={400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 410: {"model": ErrorOut}})
def add_captions(upload_id: str = Path(), body: CreateCaptions = Body(...),
                 uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """A presigned ``PUT`` URL for the upload's captions in ``language`` (WebVTT or SRT), while
    the upload is waiting (read by the video's run; a malformed file rejects the asset with
    ``invalid_captions``) or once its video arrived (attached to the asset; a malformed file is
    refused, the asset staying as it was)."""
    language = caption_language(body.language, f"{body.language}.{body.format}")
    try:
        record, _ = uploads.waiting(upload_id)
        expires_in, expires_at = uploads._expires_in(record), record["expires_at"]
    except PixelFlowError as error:  # after the video: a URL valid for PIXELFLOW_PRESIGN_EXPIRY_SECONDS
        if error.code != ErrorCode.UPLOAD_NOT_WAITING or error.details.get("status") != ASSET_CREATED:
            raise
        record = uploads.get(upload_id)
        expires_in = uploads.settings.presign_expiry_seconds
        expires_at = _iso(time.time() + expires_in)
    key = sidecar_key(record["key"], language, body.format)
    url = uploads.s3.generate_presigned_url("put_object", Params={"Bucket": uploads.bucket, "Key": key},
                                            ExpiresIn=expires_in)
    return {"data": {"upload_id": upload_id, "language": language, "name": language_name(language),
                     "format": body.format, "url": url, "expires_at": expires_at,
                     "max_bytes": uploads.settings.captions_max_bytes}}
