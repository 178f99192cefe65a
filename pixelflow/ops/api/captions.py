"""``POST /v1/uploads/{upload_id}/captions``: a presigned ``PUT`` URL for one caption file of a
direct upload, stored as the upload's sidecar (``uploads/<id>/talk.en.vtt`` beside
``uploads/<id>/talk.mp4``), which the upload's transcode run reads, validates and publishes.

A separate call per language, rather than a field of ``POST /v1/uploads``: the upload flow is
unchanged for apps without captions, a language can be added to any waiting upload (single
``PUT`` or multipart), and each answer is one URL with its own bad-input errors. The caption
file must be sent before the video (before the single ``PUT``, or before ``complete``): the run
starts when the video arrives and reads the sidecars present then.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path

from pixelflow.core.captions import caption_language, sidecar_key
from pixelflow.core.languages import language_name
from pixelflow.ops.api.auth import require_token
from pixelflow.ops.api.schemas import CaptionsOut, CreateCaptions, ErrorOut
from pixelflow.ops.api.uploads import UploadService, service

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})


@router.post("/{upload_id}/captions", status_code=201, response_model=CaptionsOut,
             summary="Add a caption file to an upload",
             responses={400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 410: {"model": ErrorOut}})
def add_captions(upload_id: str = Path(), body: CreateCaptions = Body(...),
                 uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """A presigned ``PUT`` URL for the upload's captions in ``language`` (WebVTT or SRT). Send
    the caption file before the video; a malformed one rejects the asset with
    ``invalid_captions`` when the video is processed."""
    language = caption_language(body.language, f"{body.language}.{body.format}")
    record, _ = uploads.waiting(upload_id)
    key = sidecar_key(record["key"], language, body.format)
    url = uploads.s3.generate_presigned_url("put_object", Params={"Bucket": uploads.bucket, "Key": key},
                                            ExpiresIn=uploads._expires_in(record))
    return {"data": {"upload_id": upload_id, "language": language, "name": language_name(language),
                     "format": body.format, "url": url, "expires_at": record["expires_at"],
                     "max_bytes": uploads.settings.captions_max_bytes}}
