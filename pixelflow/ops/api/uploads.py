"""``/v1/uploads``: direct uploads to the upload bucket through presigned URLs, resumable in parts.

An upload is a record (:class:`pixelflow.records.Records`) and one key of the upload bucket,
``<upload_key_prefix><upload_id>/<filename>``. Small files get one presigned ``PUT`` URL; files
above ``PIXELFLOW_MULTIPART_THRESHOLD_BYTES`` get an S3 multipart upload with one presigned URL
per part, and ``POST /v1/uploads/{id}/complete``. Every URL allows exactly that key (and part),
expires after ``PIXELFLOW_PRESIGN_EXPIRY_SECONDS``, and the app never sees bucket credentials.
Once the object exists the upload is ``asset_created`` with the ``asset_id`` the object maps to
(the same content-derived id as any upload: bucket, key, ETag), and the event chain transcodes
it as it does every object of the bucket.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse

from pixelflow.ops.api.auth import require_token
from pixelflow.ops.api.schemas import MAX_PASSTHROUGH, CompleteUpload, CreateUpload, ErrorOut, UploadOut
from pixelflow.aws import is_missing
from pixelflow.core.ids import normalize_etag
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow import outbox, webhooks
from pixelflow.records import ASSET_CREATED, CANCELLED, PREPARING, SIGNED, TIMED_OUT, WAITING, Records, upload_link
from pixelflow.settings import PixelFlowSettings

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

#: Most parts a multipart upload is split into: the part size grows to stay under it.
MAX_PARTS = 1000
S3_MAX_PART = 5 * 1024**3
UPLOAD_ID = r"^[0-9a-f]{24}$"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_filename(name: str) -> str:
    """``name`` if it is a plain file name (no folder, no control characters, 1 to 255 bytes).

    >>> check_filename("talk 2.mp4")
    'talk 2.mp4'
    >>> check_filename("../etc/passwd")
    Traceback (most recent call last):
    pixelflow.errors.PixelFlowError: invalid_filename: The filename must be a file's name without any folder \
(no / or \\), control characters, or leading/trailing spaces, 1 to 255 bytes.
    """
    bad = (not name or len(name.encode()) > 255 or name in (".", "..") or "/" in name or "\\" in name
           or name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise PixelFlowError(ErrorCode.INVALID_FILENAME, "The filename must be a file's name without any folder "
                             "(no / or \\), control characters, or leading/trailing spaces, 1 to 255 bytes.")
    return name


def part_plan(size: int, settings: PixelFlowSettings) -> tuple[int, int] | None:
    """``(part_size, part_count)`` of a multipart upload of ``size`` bytes, or ``None`` for one PUT.

    >>> s = PixelFlowSettings(upload_part_bytes=16 * 2**20, multipart_threshold_bytes=64 * 2**20)
    >>> part_plan(10, s) is None, part_plan(100 * 2**20, s)
    (True, (16777216, 7))
    """
    if size <= settings.multipart_threshold_bytes:
        return None
    part_size = settings.upload_part_bytes
    if math.ceil(size / part_size) > MAX_PARTS:
        part_size = min(S3_MAX_PART, math.ceil(size / MAX_PARTS / 2**20) * 2**20)
    return part_size, math.ceil(size / part_size)


def chosen_policy(given: str | list[str] | None, settings: PixelFlowSettings) -> str:
    """The playback policy an upload's body chose (a word or Mux's one-item list), else the default.

    >>> chosen_policy(["signed"], PixelFlowSettings()), chosen_policy(None, PixelFlowSettings())
    ('signed', 'public')
    """
    if isinstance(given, list):
        if len(given) != 1:
            raise PixelFlowError(ErrorCode.INVALID_REQUEST, "playback_policy: give one policy, public or signed.")
        given = given[0]
    return given or settings.default_playback_policy


def _part_size(record: dict[str, Any], number: int) -> int:
    if number < record["part_count"]:
        return record["part_size"]
    return record["size"] - record["part_size"] * (record["part_count"] - 1)


class UploadService:
    """What the routes do, over one S3 client and the records."""

    def __init__(self, settings: PixelFlowSettings, s3, records: Records):
        self.settings = settings
        self.s3 = s3
        self.records = records

    @property
    def bucket(self) -> str:
        return self.settings.upload_bucket

    # --- presigning ------------------------------------------------------------------------
    def _expires_in(self, record: dict[str, Any]) -> int:
        return max(1, int(record["expires_epoch"] - time.time()))

    def _put_url(self, record: dict[str, Any]) -> str:
        return self.s3.generate_presigned_url("put_object", Params={"Bucket": self.bucket, "Key": record["key"]},
                                              ExpiresIn=self._expires_in(record))

    def part_url(self, record: dict[str, Any], number: int) -> str:
        return self.s3.generate_presigned_url(
            "upload_part", ExpiresIn=self._expires_in(record),
            Params={"Bucket": self.bucket, "Key": record["key"], "UploadId": record["multipart_id"],
                    "PartNumber": number})

    # --- S3 state --------------------------------------------------------------------------
    def received_parts(self, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Parts S3 holds for the multipart upload, or ``None`` when it is gone (completed or aborted)."""
        parts: list[dict[str, Any]] = []
        try:
            for page in self.s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=record["key"],
                                                                     UploadId=record["multipart_id"]):
                parts += [{"part_number": p["PartNumber"], "size": p["Size"], "etag": normalize_etag(p["ETag"])}
                          for p in page.get("Parts", [])]
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return sorted(parts, key=lambda p: p["part_number"])

    def _head(self, key: str) -> Upload | None:
        try:
            return Upload.from_head(self.bucket, key, self.s3.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def _arrived(self, record: dict[str, Any], obj: Upload) -> dict[str, Any]:
        """The upload once its object exists: ``asset_created``, and the asset's first record."""
        asset_id = obj.asset_id
        asset = self.records.record_asset(asset_id, PREPARING, {"progress": 0}, only_if_new=True,
                                          first={**upload_link(record), "source": obj.to_dict()})
        updated = self.records.update_upload(record["id"], {"status": ASSET_CREATED, "asset_id": asset_id,
                                                            "etag": obj.etag}, expect_status=WAITING)
        outbox.emit_upload_state(self.settings, webhooks.UPLOAD_ASSET_CREATED, updated, self.records)
        if asset is not None and asset.get("status") == PREPARING:
            outbox.emit_asset_state(self.settings, asset, records=self.records)
        return updated or self.records.get_upload(record["id"]) or record

    def _expire(self, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("multipart_id"):
            self._abort(record)
        return self.records.update_upload(record["id"], {"status": TIMED_OUT}, expect_status=WAITING) or record

    def _abort(self, record: dict[str, Any]) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=record["key"], UploadId=record["multipart_id"])
        except ClientError as exc:
            if not is_missing(exc):
                raise

    def refresh(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The upload's current state from S3 (object arrived? expired?) and its received parts."""
        if record["status"] != WAITING:
            return record, []
        parts: list[dict[str, Any]] | None = []
        if record.get("multipart_id"):
            parts = self.received_parts(record)
        if not record.get("multipart_id") or parts is None:
            obj = self._head(record["key"])
            if obj is not None:
                return self._arrived(record, obj), []
            parts = parts or []
        if time.time() > record["expires_epoch"]:
            return self._expire(record), []
        return record, parts

    def get(self, upload_id: str) -> dict[str, Any]:
        record = self.records.get_upload(upload_id) if re.match(UPLOAD_ID, upload_id) else None
        if record is None:
            raise PixelFlowError(ErrorCode.UPLOAD_NOT_FOUND, f"No upload {upload_id}.")
        return record

    def waiting(self, upload_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The upload, refreshed, which must still be waiting for its bytes."""
        record, parts = self.refresh(self.get(upload_id))
        if record["status"] == TIMED_OUT:
            raise PixelFlowError(ErrorCode.UPLOAD_EXPIRED, f"Upload {upload_id} expired at {record['expires_at']}; "
                                 "create a new one.")
        if record["status"] != WAITING:
            raise PixelFlowError(ErrorCode.UPLOAD_NOT_WAITING, f"Upload {upload_id} is {record['status']}.",
                                 {"status": record["status"]})
        return record, parts

    # --- views -----------------------------------------------------------------------------
    def view(self, request: Request, record: dict[str, Any], parts: list[dict[str, Any]] | None = None,
             fresh_urls: bool = True) -> dict[str, Any]:
        waiting = record["status"] == WAITING
        data: dict[str, Any] = {k: record.get(k) for k in ("id", "status", "filename", "size", "passthrough",
                                                           "created_at", "expires_at", "asset_id", "error")}
        data["playback_policy"] = record.get("playback_policy") or ["public"]
        data["parts_received"] = parts or []
        data["url"] = data["multipart"] = None
        if record.get("multipart_id"):
            received = {p["part_number"] for p in parts or []}
            base = str(request.base_url).rstrip("/")
            data["multipart"] = {
                "part_size": record["part_size"], "part_count": record["part_count"],
                "complete_url": f"{base}/v1/uploads/{record['id']}/complete",
                "parts": [{"part_number": n, "size": _part_size(record, n),
                           "url": self.part_url(record, n) if waiting and fresh_urls and n not in received else None}
                          for n in range(1, record["part_count"] + 1)],
            }
        elif waiting and fresh_urls:
            data["url"] = self._put_url(record)
        return {"data": data}


def service(request: Request) -> UploadService:
    state = request.app.state
    return UploadService(state.settings, state.s3, state.records)


@router.post("", status_code=201, response_model=UploadOut, summary="Create a direct upload",
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut}})
def create_upload(request: Request, body: CreateUpload = Body(...),
                  uploads: UploadService = Depends(service)) -> JSONResponse:
    """A new upload and where to send the file: ``url`` (one ``PUT`` of the whole file) or
    ``multipart`` (one ``PUT`` per part, then ``POST complete_url``)."""
    settings = uploads.settings
    filename = check_filename(body.filename)
    if body.size <= 0:
        raise PixelFlowError(ErrorCode.EMPTY_FILE, "size must be at least 1 byte.")
    if body.size > settings.max_source_bytes:
        raise PixelFlowError(ErrorCode.TOO_LARGE, f"The file is {body.size} bytes; the largest accepted upload is "
                             f"{settings.max_source_bytes} bytes.", {"max_bytes": settings.max_source_bytes})
    if body.passthrough is not None and len(body.passthrough) > MAX_PASSTHROUGH:
        raise PixelFlowError(ErrorCode.PASSTHROUGH_TOO_LONG,
                             f"passthrough has {len(body.passthrough)} characters; at most {MAX_PASSTHROUGH}.")
    policy = chosen_policy(body.playback_policy, settings)
    if policy == SIGNED:
        request.app.state.playback.require_key()
    upload_id = secrets.token_hex(12)
    now = time.time()
    expires = now + settings.presign_expiry_seconds
    record: dict[str, Any] = {
        "id": upload_id, "status": WAITING, "filename": filename, "size": body.size,
        "key": f"{settings.upload_key_prefix}{upload_id}/{filename}", "passthrough": body.passthrough,
        "playback_policy": [policy], "created_at": _iso(now), "expires_at": _iso(expires),
        "expires_epoch": int(expires),
    }
    plan = part_plan(body.size, settings)
    if plan is not None:
        record["part_size"], record["part_count"] = plan
        record["multipart_id"] = uploads.s3.create_multipart_upload(Bucket=uploads.bucket, Key=record["key"])["UploadId"]
    try:
        uploads.records.create_upload(record)
    except Exception:
        if plan is not None:
            uploads._abort(record)
        raise
    outbox.emit_upload_state(settings, webhooks.UPLOAD_CREATED, record, uploads.records)
    return JSONResponse(uploads.view(request, record), status_code=201)


@router.get("/{upload_id}", response_model=UploadOut, summary="Get an upload")
def get_upload(request: Request, upload_id: str = Path(),
               uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """The upload's status, the parts S3 already received (resume from there: fresh URLs are
    given for the others) and, once the object exists, its ``asset_id``."""
    record, parts = uploads.refresh(uploads.get(upload_id))
    return uploads.view(request, record, parts)


@router.get("/{upload_id}/parts/{part_number}", summary="A fresh URL for one part",
            responses={400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 410: {"model": ErrorOut}})
def get_part(upload_id: str = Path(), part_number: int = Path(),
             uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """A presigned ``PUT`` URL for one part of a multipart upload (the URLs of ``GET`` expire)."""
    record = uploads.get(upload_id)
    if not record.get("multipart_id"):
        raise PixelFlowError(ErrorCode.NOT_MULTIPART, f"Upload {upload_id} is sent in one PUT, not in parts.")
    if not 1 <= part_number <= record["part_count"]:
        raise PixelFlowError(ErrorCode.PART_OUT_OF_RANGE,
                             f"Part numbers of upload {upload_id} go from 1 to {record['part_count']}.")
    record, _ = uploads.waiting(upload_id)
    return {"data": {"part_number": part_number, "size": _part_size(record, part_number),
                     "url": uploads.part_url(record, part_number), "expires_at": record["expires_at"]}}


@router.post("/{upload_id}/complete", response_model=UploadOut, summary="Complete a multipart upload",
             responses={400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 410: {"model": ErrorOut}})
def complete_upload(request: Request, upload_id: str = Path(),
                    body: CompleteUpload | None = Body(None), uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """Assemble the parts into the object. With ``parts``, their ETags must be the ones S3
    received; without, every part must have been received. Nothing changes on an error."""
    record = uploads.get(upload_id)
    if not record.get("multipart_id"):
        raise PixelFlowError(ErrorCode.NOT_MULTIPART, f"Upload {upload_id} is sent in one PUT: nothing to complete.")
    count = record["part_count"]
    given = body.parts if body is not None and body.parts is not None else None
    if given is not None:
        numbers = [p.part_number for p in given]
        out = [n for n in numbers if not 1 <= n <= count]
        if out:
            raise PixelFlowError(ErrorCode.PART_OUT_OF_RANGE, f"Part numbers go from 1 to {count} (got {out[0]}).")
        if len(set(numbers)) != len(numbers):
            raise PixelFlowError(ErrorCode.INVALID_REQUEST, "A part is listed twice.")
    record, received = uploads.waiting(upload_id)
    by_number = {p["part_number"]: p for p in received}
    missing = [n for n in range(1, count + 1) if n not in by_number or (given is not None and n not in numbers)]
    if given is not None:
        wrong = [p.part_number for p in given if p.part_number in by_number
                 and normalize_etag(p.etag) != by_number[p.part_number]["etag"]]
        if wrong:
            raise PixelFlowError(ErrorCode.ETAG_MISMATCH, f"The ETag of part {wrong[0]} is not the one S3 received.",
                                 {"parts": wrong})
    if missing:
        raise PixelFlowError(ErrorCode.PARTS_MISSING, f"{len(missing)} of {count} parts have not been received "
                             f"(first: {missing[0]}).", {"missing": missing[:100]})
    wrong_size = [n for n in range(1, count + 1) if by_number[n]["size"] != _part_size(record, n)]
    if wrong_size:
        raise PixelFlowError(ErrorCode.SIZE_MISMATCH, f"Part {wrong_size[0]} has {by_number[wrong_size[0]]['size']} "
                             f"bytes; it must have {_part_size(record, wrong_size[0])}.", {"parts": wrong_size[:100]})
    try:
        uploads.s3.complete_multipart_upload(
            Bucket=uploads.bucket, Key=record["key"], UploadId=record["multipart_id"],
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{by_number[n]["etag"]}"'}
                                       for n in range(1, count + 1)]})
    except ClientError as exc:
        if not is_missing(exc):  # completed by a concurrent request: the refresh below tells
            raise
    record, parts = uploads.refresh(uploads.get(upload_id))
    return uploads.view(request, record, parts)


@router.delete("/{upload_id}", response_model=UploadOut, summary="Cancel an upload",
               responses={409: {"model": ErrorOut}})
def cancel_upload(request: Request, upload_id: str = Path(),
                  uploads: UploadService = Depends(service)) -> dict[str, Any]:
    """Cancel a waiting upload: its multipart upload is aborted (the parts are gone, its part URLs
    refused). A single-``PUT`` URL cannot be revoked before it expires: a file sent to it anyway
    is an object of the bucket like any direct upload."""
    record = uploads.get(upload_id)
    if record["status"] == CANCELLED:
        return uploads.view(request, record)
    record, _ = uploads.waiting(upload_id)
    if record.get("multipart_id"):
        uploads._abort(record)
    cancelled = uploads.records.update_upload(upload_id, {"status": CANCELLED}, expect_status=WAITING)
    outbox.emit_upload_state(uploads.settings, webhooks.UPLOAD_CANCELLED, cancelled, uploads.records)
    record = cancelled or uploads.get(upload_id)
    return uploads.view(request, record)
