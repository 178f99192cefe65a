"""``/v1/assets``: assets read from their records, listed newest first, deleted; and
``/assets/<asset_id>/<name>``, the published objects themselves (playback).

Every asset is here, however its upload arrived (the API, the CLI, ``aws s3 cp``): the flow
records each asset it works on. An asset with no record yet (published before the records
existed, or whose flow could not write) is looked up in S3 by its two well-known objects
(``manifest.json``, ``error.json``, both in the output bucket: two GETs, never a listing) and its record written then;
``pixelflow reconcile`` backfills and repairs the rest.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import ClientError
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from pixelflow.ops import assets as s3_assets
from pixelflow.ops import thumbnails
from pixelflow.ops.api.errors import error_response
from pixelflow.core.manifest import PLAYBACK_TYPES
from pixelflow.ops.api.auth import require_token
from pixelflow.ops.api.events import ASSET_DELETED, asset_event, emit
from pixelflow.ops.api.schemas import (AssetList, AssetOut, CreatePlaybackToken, ErrorOut, PlaybackTokenOut,
                                       UpdateAsset)
from pixelflow.ops.playback import playback_urls, signed_playback_base
from pixelflow.aws import is_missing
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow import outbox, webhooks
from pixelflow.records import (ERRORED, PLAYBACK_POLICIES, PREPARING, PUBLIC, READY, SIGNED, Records,
                               asset_fields_from_manifest)
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.ops.api")

router = APIRouter(prefix="/v1/assets", tags=["assets"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})
playback = APIRouter(tags=["playback"])

_NAME = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}/){0,3}[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def playback_base(settings: PixelFlowSettings, request: Request) -> str:
    """Where players load assets from: ``PIXELFLOW_PLAYBACK_BASE_URL``, else this API's ``/assets/``."""
    if settings.playback_base_url:
        return settings.playback_base_url.rstrip("/") + "/"
    return (settings.api_public_url or str(request.base_url)).rstrip("/") + "/assets/"


def asset_view(record: dict[str, Any], base: str, default_policy: str = PUBLIC) -> dict[str, Any]:
    """The API's view of an asset record (``default_policy``: that of assets given none)."""
    asset_id = record["id"]
    data = {k: record.get(k) for k in ("id", "status", "progress", "duration", "aspect_ratio", "max_resolution",
                                       "passthrough", "upload_id", "created_at", "errors")}
    data["renditions"] = record.get("renditions") or []
    policy = record.get("playback_policy")
    data["playback_policy"] = policy if policy in PLAYBACK_POLICIES else default_policy
    data["audio_only"] = bool(record.get("audio_only"))
    # A progressive asset plays while it is prepared (its master playlist grows: docs/chunks.md).
    data["playable"] = record.get("status") == READY or (record.get("status") == PREPARING
                                                          and bool(record.get("playable")))
    data["playback"] = (playback_urls(base, asset_id, record)
                        if data["playable"] and data["playback_policy"] == PUBLIC else None)
    if data["playback"] and record.get("status") != READY:  # no poster before the asset is published
        data["playback"]["poster"] = None
    return data


class AssetService:
    def __init__(self, settings: PixelFlowSettings, s3, records: Records):
        self.settings = settings
        self.s3 = s3
        self.records = records

    def backfill(self, asset_id: str) -> dict[str, Any] | None:
        """The record of an asset S3 knows (published or rejected) but the records do not, written now."""
        manifest = s3_assets.read_manifest(asset_id, self.settings, self.s3)
        if manifest is not None:
            return self.records.record_asset(asset_id, READY, {**asset_fields_from_manifest(manifest), "progress": 100},
                                             first={"source": manifest.get("source")},
                                             created_at=_created(manifest.get("created_at")))
        rejection = s3_assets.read_rejection(asset_id, self.settings, self.s3)
        if rejection is not None:
            code = str(rejection.get("code") or ErrorCode.INTERNAL.value)
            return self.records.record_asset(asset_id, ERRORED, {"errors": {"code": code,
                                                                            "message": str(rejection.get("message", ""))}},
                                             first={"source": rejection.get("source")},
                                             created_at=_created(rejection.get("recorded_at")))
        return None

    def get(self, asset_id: str, *, check: bool = False) -> dict[str, Any]:
        """The asset's record (backfilled from S3 when it has none); with ``check``, a ``ready``
        record is first checked against S3 (see :meth:`checked`)."""
        record = self.records.get_asset(asset_id) if s3_assets.is_asset_id(asset_id) else None
        if record is None and s3_assets.is_asset_id(asset_id):
            record = self.backfill(asset_id)
        if record is not None and check and record.get("status") == READY and not record.get("deleted_at"):
            record = self.checked(asset_id, record)
        if record is None or record.get("deleted_at"):
            raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"No asset {asset_id}.")
        return record

    def checked(self, asset_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """A ``ready`` record as S3 has the asset now (its manifest and one listing of its
        prefix): objects removed since make it ``errored`` (``asset_incomplete``), as ``pixelflow
        status``, ``ls``, the player and the reconciler say; a withdrawn manifest whose upload is
        still there makes it ``preparing``. The record is corrected with the reconciler's rule."""
        from pixelflow.ops.reconcile import record_from_s3

        try:
            info = s3_assets.asset_state(asset_id, self.settings, self.s3, record.get("source"))
        except ClientError as exc:  # e.g. a source outside uploads/, which the API may not read: as recorded
            logger.warning("could not check asset %s against the bucket: %s", asset_id, exc)
            return record
        if info is None or info.status == s3_assets.READY:
            return record
        if record_from_s3(self.records, info, record) is None:
            return record
        return self.records.get_asset(asset_id) or record

    def _delete_prefix(self, bucket: str, prefix: str) -> int:
        deleted = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if not keys:
                continue
            response = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if response.get("Errors"):
                raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"{len(response['Errors'])} objects could not be "
                                     "deleted; delete the asset again.")
            deleted += len(keys)
        return deleted

    def delete(self, asset_id: str) -> dict[str, Any]:
        """Tombstone the asset's record (no later event revives it), then remove its published
        objects, its rejection record and, with ``PIXELFLOW_DELETE_SOURCE_ON_ASSET_DELETE``, its
        source; then its upload's record."""
        record = self.get(asset_id)
        if self.records.tombstone_asset(asset_id) is None:
            raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"No asset {asset_id}.")
        self.purge(asset_id, record)
        return record

    def purge(self, asset_id: str, record: dict[str, Any]) -> None:
        """Remove what a deleted asset left in the buckets (run again safely)."""
        layout = self.settings.layout(asset_id)
        removed = self._delete_prefix(self.settings.output_bucket, layout.prefix)
        self._delete_prefix(self.settings.output_bucket, layout.record_prefix)
        self._delete_prefix(self.settings.upload_bucket, layout.quarantine_prefix)
        source = record.get("source") or {}
        if self.settings.delete_source_on_asset_delete and source.get("key") and \
                source.get("bucket") == self.settings.upload_bucket:
            try:
                self.s3.delete_object(Bucket=source["bucket"], Key=source["key"])
            except ClientError as exc:
                if not is_missing(exc):
                    raise
        if record.get("upload_id"):
            self.records.delete_upload(record["upload_id"])
        logger.info("deleted asset %s (%d published objects)", asset_id, removed)


def _created(value: Any) -> str | None:
    parsed = s3_assets._parse_time(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if parsed else None


def service(request: Request) -> AssetService:
    state = request.app.state
    return AssetService(state.settings, state.s3, state.records)


@router.get("", response_model=AssetList, summary="List assets", responses={400: {"model": ErrorOut}})
def list_assets(request: Request, status: str | None = Query(None, pattern="^(preparing|ready|errored)$"),
                limit: int = Query(25, ge=1), cursor: str | None = Query(None, max_length=2000),
                assets: AssetService = Depends(service)) -> dict[str, Any]:
    """Assets newest first, ``limit`` per page (at most ``PIXELFLOW_API_MAX_LIST_LIMIT``); pass
    ``next_cursor`` back as ``cursor`` for the next page."""
    limit = min(limit, assets.settings.api_max_list_limit)
    items, next_cursor = assets.records.list_assets(status, limit, cursor)
    base = playback_base(assets.settings, request)
    default = assets.settings.default_playback_policy
    return {"data": [asset_view(item, base, default) for item in items], "next_cursor": next_cursor}


@router.get("/{asset_id}", response_model=AssetOut, summary="Get an asset")
def get_asset(request: Request, asset_id: str = Path(), assets: AssetService = Depends(service)) -> dict[str, Any]:
    """The asset's status, progress while preparing, renditions and playback URLs once ready,
    ``errors`` when it failed. A ``ready`` asset is checked against the bucket (its manifest and
    one listing): one whose objects were removed is ``errored`` (``asset_incomplete``)."""
    return {"data": asset_view(assets.get(asset_id, check=True), playback_base(assets.settings, request),
                               assets.settings.default_playback_policy)}


# --- private playback: the policy, playback tokens ----------------------------------------------

@router.patch("/{asset_id}", response_model=AssetOut, summary="Change an asset's playback policy",
              responses={400: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def update_asset(request: Request, asset_id: str = Path(), body: UpdateAsset = Body(...),
                 assets: AssetService = Depends(service)) -> dict[str, Any]:
    """Make the asset ``public`` or ``signed``. From then on its files are served (locally, and by
    CloudFront once the API updated its key-value store) only to requests with a playback token."""
    gate = request.app.state.playback
    if body.playback_policy == SIGNED:
        gate.require_key()
    assets.get(asset_id)
    record = assets.records.set_playback_policy(asset_id, body.playback_policy)
    if record is None:
        raise PixelFlowError(ErrorCode.ASSET_NOT_FOUND, f"No asset {asset_id}.")
    cdn = request.app.state.playback_cdn
    if cdn is not None:
        cdn.put_policy(asset_id, body.playback_policy)
    return {"data": asset_view(record, playback_base(assets.settings, request), assets.settings.default_playback_policy)}


@router.post("/{asset_id}/playback-tokens", status_code=201, response_model=PlaybackTokenOut,
             summary="Issue a playback token of a signed asset",
             responses={400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def create_playback_token(request: Request, asset_id: str = Path(), body: CreatePlaybackToken | None = Body(None),
                          assets: AssetService = Depends(service)) -> dict[str, Any]:
    """A short-lived token of a ``signed`` asset (a JWT: the asset, its expiry, the viewer if given)
    and the URLs a player loads with it (``/t/<token>/assets/<id>/master.m3u8``)."""
    gate = request.app.state.playback
    record = assets.get(asset_id)
    if gate.policy_of(record) != SIGNED:
        raise PixelFlowError(ErrorCode.ASSET_NOT_SIGNED, f"Asset {asset_id} is public: its playback URLs need no "
                             "token (PATCH its playback_policy to signed first).")
    body = body or CreatePlaybackToken()
    issued = gate.issue(asset_id, body.expires_in, body.viewer_id)
    base = signed_playback_base(playback_base(assets.settings, request), issued["token"])
    return {"data": {"asset_id": asset_id, **issued, "playback": playback_urls(base, asset_id, record)}}


@router.delete("/{asset_id}", status_code=204, summary="Delete an asset")
def delete_asset(asset_id: str = Path(), assets: AssetService = Depends(service)) -> Response:
    """Remove every published object of the asset and its records; emits ``pixelflow.asset.deleted``.
    The source stays in the upload bucket unless ``PIXELFLOW_DELETE_SOURCE_ON_ASSET_DELETE``."""
    record = assets.delete(asset_id)
    source = record.get("source") or {}
    emit(asset_event(ASSET_DELETED, asset_id, {
        "asset_id": asset_id, "passthrough": record.get("passthrough"), "upload_id": record.get("upload_id"),
        "bucket": source.get("bucket"), "key": source.get("key"),
        "source_deleted": bool(assets.settings.delete_source_on_asset_delete)}, key=source.get("key")))
    outbox.emit_safely(assets.settings, webhooks.ASSET_DELETED, "asset", record, record.get("created_at", ""),
                       assets.records)
    return Response(status_code=204)


@playback.get("/assets/{asset_id}/thumbnail.{fmt}", summary="A thumbnail at a time (JPEG or WebP)",
              responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 501: {"model": ErrorOut},
                         503: {"model": ErrorOut}})
def asset_thumbnail(request: Request, asset_id: str, fmt: str) -> Response:
    """``?time=<seconds>&width=<px>&height=<px>``: the picture at ``time`` (default the poster's),
    made from the lowest rendition that covers the size (a ``signed`` asset's: with a token, below)."""
    return _thumbnail(request, asset_id, fmt, None)


@playback.get("/t/{token}/assets/{asset_id}/thumbnail.{fmt}", summary="A thumbnail of a signed asset, with a token",
              responses={400: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def signed_asset_thumbnail(request: Request, token: str, asset_id: str, fmt: str) -> Response:
    """As ``/assets/.../thumbnail.jpg``, with a playback token of the asset in the path."""
    return _thumbnail(request, asset_id, fmt, token)


def _thumbnail(request: Request, asset_id: str, fmt: str, token: str | None) -> Response:
    state = request.app.state
    try:
        state.playback.check(asset_id, token)  # a signed asset's pictures need its token, like its files
        image = thumbnails.service_of(state, state.settings, state.s3).get(asset_id, fmt, request.query_params)
    except PixelFlowError as error:
        response = error_response(error)
        response.headers.update(thumbnails.error_headers(error))
        return response
    return Response(image.body, media_type=image.content_type, headers=image.headers())


@playback.get("/t/{token}/assets/{asset_id}/{name:path}", summary="A file of a signed asset, with a playback token",
              responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def signed_asset_file(request: Request, token: str, asset_id: str, name: str) -> Response:
    """As ``/assets/...``, for a request carrying a playback token of the asset in its path (every
    URL a player resolves relative to the playlist keeps it). 403 with the reason's code without a
    valid token of this asset."""
    return _serve_file(request, asset_id, name, token)


@playback.get("/assets/{asset_id}/{name:path}", summary="A published file (playlist, segment, poster)",
              responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def asset_file(request: Request, asset_id: str, name: str) -> Response:
    """Stream one playback file of a published asset from the output bucket: no token for a
    ``public`` asset, 403 ``playback_token_required`` for a ``signed`` one (use its ``/t/<token>/``
    URLs). Only playlists, segments and posters, at the asset's root or one folder down."""
    return _serve_file(request, asset_id, name, None)


def _serve_file(request: Request, asset_id: str, name: str, token: str | None) -> Response:
    state = request.app.state
    suffix = PurePosixPath(name).suffix.lower()
    if not s3_assets.is_asset_id(asset_id) or not _NAME.match(name) or ".." in name or suffix not in PLAYBACK_TYPES:
        raise PixelFlowError(ErrorCode.NOT_FOUND, "No such file.")
    state.playback.check(asset_id, token)
    params: dict[str, Any] = {"Bucket": state.settings.output_bucket, "Key": state.settings.layout(asset_id).key(name)}
    range_header = request.headers.get("range")
    if range_header and re.fullmatch(r"bytes=\d*-\d*", range_header.strip()):
        params["Range"] = range_header.strip()
    try:
        obj = state.s3.get_object(**params)
    except ClientError as exc:
        if is_missing(exc):
            raise PixelFlowError(ErrorCode.NOT_FOUND, "No such file.") from None
        raise
    headers = {"Content-Length": str(obj["ContentLength"]), "Accept-Ranges": "bytes",
               "Cache-Control": "no-cache" if suffix == ".m3u8" else "max-age=3600",
               "Access-Control-Allow-Origin": "*"}
    if "ContentRange" in obj:
        headers["Content-Range"] = obj["ContentRange"]
    if obj.get("ContentDisposition"):  # downloads: saved under the source's name
        headers["Content-Disposition"] = obj["ContentDisposition"]
    return StreamingResponse(obj["Body"].iter_chunks(256 * 1024), status_code=206 if "ContentRange" in obj else 200,
                             media_type=PLAYBACK_TYPES[suffix], headers=headers)

