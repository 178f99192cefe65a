"""Read-side view of PixelFlow assets, straight from the buckets.

An asset's state is derived from three places, so no database is needed:

* **ready** — ``<asset_prefix><asset_id>/manifest.json`` exists in the output bucket (it is the
  last object a transcode writes) and one listing of the asset's prefix shows every object it
  names, with its size.
* **broken** — the manifest exists but objects it names are gone (removed by an operator, a
  lifecycle rule or a deletion): ``error`` is ``asset_incomplete`` with the missing paths; a new
  run of the upload (``pixelflow transcode s3://BUCKET/KEY``) rebuilds it.
* **rejected** / **failed** — ``<record_prefix><asset_id>/error.json`` exists in the output
  bucket (written by the flow's ``quarantine`` task; uploaders cannot write there, so an
  ``error.json`` planted in the upload bucket counts for nothing): ``{"code", "message", "status"?, "details"?,
  "source"?: {"bucket", "key", "etag", "version_id"}, "recorded_at"?, ...}``. Without a
  ``status``, codes from :data:`pixelflow.errors.REJECTION_CODES` mean *rejected* (the source is
  unacceptable) and any other code means *failed*.
* **processing** — a source in the upload bucket whose asset id has neither record yet;
  ``playable`` when a progressive run (``PIXELFLOW_PROGRESSIVE``, docs/chunks.md) has published
  its master playlist already (its media playlists grow until the manifest is written).

Everything else is unknown (:class:`AssetNotFound`). An upload's asset id is
:attr:`pixelflow.core.upload.Upload.asset_id` (its bucket, key and ETag/VersionId).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterator

from botocore.exceptions import ClientError

from pixelflow.aws import is_missing, read_json_object
from pixelflow.core.captions import is_caption_key
from pixelflow.core.layout import POSTER, manifest_objects, missing_objects
from pixelflow.core.upload import Upload
from pixelflow.errors import REJECTION_CODES, ErrorCode, PixelFlowError
from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.ops.assets")

READY, PROCESSING, REJECTED, FAILED, BROKEN = "ready", "processing", "rejected", "failed", "broken"

#: Asset ids are lowercase hex (see :func:`pixelflow.core.ids.asset_id`).
ASSET_ID_RE = re.compile(r"^[0-9a-f]{24}$")

class AssetNotFound(LookupError):
    """No asset, rejection or pending source matches the reference.

    Attributes:
        code: Stable machine-readable code (``asset_not_found``).
        message: A sentence for the user.
    """

    code = "asset_not_found"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass
class AssetInfo:
    """What a user sees about one asset.

    Attributes:
        asset_id: The asset's id.
        status: ``ready``, ``processing``, ``rejected``, ``failed`` or ``broken``.
        renditions: Video renditions from the manifest (``name``, ``width``, ``height``,
            ``bandwidth``...; without the per-file lists), empty unless ready.
        duration: Duration in seconds, when known.
        storyboard: The manifest's ``storyboard`` entry (its files' names and layout), when it has one.
        downloads: The MP4 downloads (``name``, ``file``, ``size``, ``width``, ``height``).
        audio_only: Whether the asset is audio alone (no video renditions, no poster).
        playable: Whether its master playlist plays: once ready, and while a progressive run
            publishes it chunk by chunk.
        poster: Where the poster is inside the asset (``<attempt folder>/poster.jpg``), ``None``
            when it has none.
        created: When the asset was published, rejected or uploaded (UTC).
        error: ``{"code", "message"}`` of a rejected, failed or broken asset (a broken one also
            has ``missing``, the paths of its missing objects).
        source: ``{"bucket", "key", ...}`` of the upload, when known.
    """

    asset_id: str
    status: str
    renditions: list[dict[str, Any]] = field(default_factory=list)
    duration: float | None = None
    storyboard: dict[str, Any] | None = None
    downloads: list[dict[str, Any]] = field(default_factory=list)
    audio_only: bool = False
    playable: bool = False
    poster: str | None = None
    created: datetime | None = None
    error: dict[str, Any] | None = None
    source: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = self.created.isoformat() if self.created else None
        return data


def is_asset_id(value: str) -> bool:
    """Whether ``value`` has the shape of an asset id.

    >>> is_asset_id("0123456789abcdef01234567"), is_asset_id("../etc/passwd")
    (True, False)
    """
    return bool(ASSET_ID_RE.match(value or ""))


def _get_json(s3, bucket: str, key: str) -> tuple[dict[str, Any], datetime] | None:
    return read_json_object(s3, bucket, key)


def _get_record(s3, bucket: str, key: str) -> tuple[dict[str, Any], datetime] | None:
    """A rejection record, or ``None``: one too large, not JSON or not an object was not written by
    PixelFlow, and counts as none (it never stands for a rejection)."""
    try:
        found = read_json_object(s3, bucket, key)
    except PixelFlowError as error:
        logger.warning("ignoring %s: %s", key, error.message)
        return None
    return found if found and isinstance(found[0], dict) else None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _from_manifest(asset_id: str, manifest: dict[str, Any], modified: datetime) -> AssetInfo:
    created = None
    for name in ("created_at", "created", "published_at"):
        created = created or _parse_time(manifest.get(name))
    duration = manifest.get("duration")
    poster = manifest.get("poster", POSTER)  # older manifests have none: the poster at the asset's top
    return AssetInfo(
        asset_id=asset_id,
        status=READY,
        renditions=[{k: v for k, v in r.items() if k != "files"} for r in manifest.get("renditions") or []],
        duration=float(duration) if duration is not None else None,
        storyboard=manifest.get("storyboard"),
        downloads=list(manifest.get("downloads") or []),
        audio_only=not manifest.get("renditions") and bool(manifest.get("audio")),
        playable=True,
        poster=poster if isinstance(poster, str) else None,
        created=created or modified,
        source=manifest.get("source"),
    )


def _from_error(asset_id: str, record: dict[str, Any], modified: datetime) -> AssetInfo:
    code = str(record.get("code") or ErrorCode.INTERNAL.value)
    status = record.get("status")
    if status not in (REJECTED, FAILED):
        status = REJECTED if code in {c.value for c in REJECTION_CODES} else FAILED
    created = _parse_time(record.get("recorded_at")) or modified
    return AssetInfo(
        asset_id=asset_id,
        status=status,
        created=created,
        error={"code": code, "message": str(record.get("message") or "")},
        source=record.get("source"),
    )


def _check_whole(info: AssetInfo, manifest: dict[str, Any], settings: PixelFlowSettings, s3) -> AssetInfo:
    """``info`` as ready when every object ``manifest`` names is listed with its size, else broken."""
    layout = settings.layout(info.asset_id)
    listed: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.output_bucket, Prefix=layout.prefix):
        for obj in page.get("Contents", []):
            listed[layout.relative(obj["Key"])] = obj["Size"]
    missing = missing_objects(manifest_objects(manifest), listed)
    if missing:
        source = info.source or {}
        where = f"s3://{source.get('bucket')}/{source.get('key')}" if source.get("key") else "the upload"
        info.status = BROKEN
        info.error = {"code": ErrorCode.ASSET_INCOMPLETE.value,
                      "message": f"{len(missing)} of the asset's objects are missing (first: {missing[0]}); "
                                 f"transcode {where} again to rebuild it.",
                      "missing": missing}
    return info


def records_bucket(settings: PixelFlowSettings) -> str:
    """The bucket holding the asset records (``error.json``, ``retries.json``): the output bucket,
    which only PixelFlow writes (never the upload bucket, where uploaders could forge one)."""
    return settings.output_bucket


def _records_root(settings: PixelFlowSettings) -> str:
    return settings.record_prefix


def iter_error_records(settings: PixelFlowSettings, s3) -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """Every asset's rejection or failure record as ``(asset_id, record, LastModified)`` (records
    that PixelFlow did not write are skipped, see :func:`_get_record`)."""
    bucket, root = records_bucket(settings), _records_root(settings)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root, Delimiter="/")
    for page in pages:
        for prefix in page.get("CommonPrefixes", []):
            candidate = prefix["Prefix"][len(root):].rstrip("/")
            if not is_asset_id(candidate):
                continue
            record = _get_record(s3, bucket, settings.layout(candidate).error_key)
            if record:
                yield candidate, record[0], record[1]


def published_asset(asset_id: str, settings: PixelFlowSettings, s3) -> AssetInfo | None:
    """The published asset as one listing of its prefix shows it: ``ready`` when every object its
    manifest names is there, ``broken`` when some are gone; ``None`` without a manifest."""
    found = _get_json(s3, settings.output_bucket, settings.layout(asset_id).manifest_key)
    return _check_whole(_from_manifest(asset_id, *found), found[0], settings, s3) if found else None


def asset_state(asset_id: str, settings: PixelFlowSettings, s3, source: dict[str, Any] | None) -> AssetInfo | None:
    """What S3 says of an asset whose upload is known (``source``, e.g. from its record), without
    listing the upload bucket: published (ready or broken), rejected or failed, processing (its
    upload is still there, same ETag), or ``None`` (nothing of it is left)."""
    info = published_asset(asset_id, settings, s3) or published_or_rejected(asset_id, settings, s3)
    if info is not None or not source or not source.get("key") or source.get("bucket") != settings.upload_bucket:
        return info
    try:
        head = s3.head_object(Bucket=source["bucket"], Key=source["key"])
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    upload = Upload.from_head(source["bucket"], source["key"], head)
    if upload.asset_id != asset_id:
        return None
    return _processing(asset_id, settings, s3, head.get("LastModified"), upload.to_dict())


def _processing(asset_id: str, settings: PixelFlowSettings, s3, created: datetime | None,
                source: dict[str, Any]) -> AssetInfo:
    """An asset whose upload is being processed: playable once a progressive run published its
    master playlist (before its manifest)."""
    try:
        s3.head_object(Bucket=settings.output_bucket, Key=settings.layout(asset_id).master_key)
        playable = True
    except ClientError as exc:
        if not is_missing(exc):
            raise
        playable = False
    return AssetInfo(asset_id=asset_id, status=PROCESSING, created=created, source=source, playable=playable)


def read_manifest(asset_id: str, settings: PixelFlowSettings, s3) -> dict[str, Any] | None:
    """The published ``manifest.json`` of an asset, or ``None`` when not published (yet)."""
    found = _get_json(s3, settings.output_bucket, settings.layout(asset_id).manifest_key)
    return found[0] if found else None


def read_rejection(asset_id: str, settings: PixelFlowSettings, s3) -> dict[str, Any] | None:
    """The ``error.json`` record of an asset (output bucket), or ``None`` when there is none."""
    found = _get_record(s3, records_bucket(settings), settings.layout(asset_id).error_key)
    return found[0] if found else None


def published_or_rejected(asset_id: str, settings: PixelFlowSettings, s3) -> AssetInfo | None:
    """The asset's final state (ready, rejected or failed), or ``None`` while it has none."""
    layout = settings.layout(asset_id)
    found = _get_json(s3, settings.output_bucket, layout.manifest_key)
    if found:
        return _from_manifest(asset_id, *found)
    found = _get_record(s3, records_bucket(settings), layout.error_key)
    if found:
        return _from_error(asset_id, *found)
    return None


def _bucket_versioned(s3, bucket: str) -> bool:
    return s3.get_bucket_versioning(Bucket=bucket).get("Status") in {"Enabled", "Suspended"}


def iter_uploads(settings: PixelFlowSettings, s3) -> Iterator[tuple[Upload, datetime]]:
    """Current uploads in the upload bucket as ``(upload, uploaded_at)``.

    The quarantine prefix is skipped. In a versioned bucket the latest version of each key is
    used, as that is what the upload notification carried.
    """
    bucket = settings.upload_bucket
    if _bucket_versioned(s3, bucket):
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        objects = (v for page in pages for v in page.get("Versions", []) if v.get("IsLatest"))
    else:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        objects = (o for page in pages for o in page.get("Contents", []))
    for obj in objects:
        key = obj["Key"]
        if key.startswith(settings.quarantine_prefix) or key.endswith("/") or is_caption_key(key):
            continue  # a caption sidecar is part of its video's asset, not an upload of its own
        yield Upload.from_head(bucket, key, obj), obj["LastModified"]


def iter_sources(settings: PixelFlowSettings, s3) -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """:func:`iter_uploads` as ``(asset_id, source, uploaded_at)``, ``source`` the upload as a dict."""
    for upload, uploaded in iter_uploads(settings, s3):
        yield upload.asset_id, upload.to_dict(), uploaded


def resolve(ref: str, settings: PixelFlowSettings, s3) -> str:
    """The asset id a reference names: an asset id itself, or a key in the upload bucket.

    A key resolves through ``head_object`` (its current ETag and VersionId).

    Raises:
        PixelFlowError: ``source_not_found`` when ``ref`` is neither an asset id nor an
            existing key.
    """
    if is_asset_id(ref):
        return ref
    try:
        head = s3.head_object(Bucket=settings.upload_bucket, Key=ref)
    except ClientError as exc:
        if is_missing(exc):
            raise PixelFlowError(
                ErrorCode.SOURCE_NOT_FOUND,
                f"{ref!r} is not an asset id nor a key in bucket {settings.upload_bucket!r}.",
            ) from None
        raise
    return Upload.from_head(settings.upload_bucket, ref, head).asset_id


def get_asset(asset_id: str, settings: PixelFlowSettings, s3) -> AssetInfo:
    """The current state of one asset.

    Raises:
        AssetNotFound: Nothing is published, recorded or uploaded for ``asset_id``.
    """
    if not is_asset_id(asset_id):
        raise AssetNotFound(f"{asset_id!r} is not an asset id.")
    info = published_asset(asset_id, settings, s3) or published_or_rejected(asset_id, settings, s3)
    if info:
        return info
    for found_id, source, uploaded in iter_sources(settings, s3):
        if found_id == asset_id:
            return _processing(asset_id, settings, s3, uploaded, source)
    raise AssetNotFound(f"No asset {asset_id} (nothing published, rejected or uploaded with this id).")


def list_assets(settings: PixelFlowSettings, s3) -> list[AssetInfo]:
    """Every asset: published ones, rejected/failed ones and uploads still processing.

    Sorted newest first.
    """
    found: dict[str, AssetInfo] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.output_bucket, Prefix=settings.asset_prefix, Delimiter="/"
    )
    for page in pages:
        for prefix in page.get("CommonPrefixes", []):
            candidate = prefix["Prefix"][len(settings.asset_prefix):].rstrip("/")
            if not is_asset_id(candidate):
                continue
            published = published_asset(candidate, settings, s3)
            if published:
                found[candidate] = published
    for candidate, record, modified in iter_error_records(settings, s3):
        if candidate not in found:
            found[candidate] = _from_error(candidate, record, modified)
    for candidate, source, uploaded in iter_sources(settings, s3):
        info = found.get(candidate)
        if info is None:
            found[candidate] = _processing(candidate, settings, s3, uploaded, source)
        elif info.source is None:
            info.source = source
    return sorted(found.values(), key=lambda a: (a.created is not None, a.created), reverse=True)
