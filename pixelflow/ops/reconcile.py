"""The safety net of the event chain: every upload gets a transcode run, even when an event was
lost on the way, and a run that failed for a service reason is retried with backoff
(:mod:`pixelflow.ops.retries`).

The chain S3 notification -> SQS -> bridge -> Prefect event -> deployment trigger is at least once
up to the Prefect server, but the trigger's ``run-deployment`` action is not retried: a Prefect
server too busy to create the run (HTTP 503, a locked SQLite database) drops it, and the upload
would wait forever. :func:`reconcile` finds uploads that are neither published nor recorded as
rejected, and for which no run of the deployment exists, once they are older than a grace
period, and creates their run. The run's idempotency key is derived from the asset id, so
reconcilers running side by side create it once; and should the trigger's run still appear
later, the flow finds the asset already published and does nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pixelflow.settings import PixelFlowSettings

FLOW_NAME = "transcode"
#: Tag of the runs the reconciler created.
RECONCILED_TAG = "pixelflow:reconciled"


@dataclass(frozen=True)
class Orphan:
    """An upload that has no asset, no rejection record and no run."""

    asset_id: str
    source: dict[str, Any]
    uploaded_at: datetime
    flow_run_id: str | None = None


def _run_key(params: dict[str, Any]) -> tuple[str, str, str]:
    """What identifies the upload a run (or a listed upload) is for: bucket, key and ETag."""
    from pixelflow.core.upload import Upload

    if not params.get("bucket") or not params.get("key"):
        return "", "", ""
    upload = Upload.from_dict(params)
    return upload.bucket, upload.key, upload.etag or ""


def find_orphans(settings: PixelFlowSettings, s3, client, deployment: str, *, older_than: float = 300.0,
                 within: float = 86400.0, now: datetime | None = None, records=None) -> list[Orphan]:
    """Uploads between ``within`` and ``older_than`` seconds old with no asset, no rejection
    record and no run of ``transcode/<deployment>``.

    Args:
        settings: Bucket names and prefixes.
        s3: A boto3 S3 client.
        client: A synchronous Prefect client.
        deployment: Name of the transcode deployment (``local``, ``ecs``).
        older_than: Grace period: younger uploads may still be on their way.
        within: Look no further back than this (bounds the work on big buckets).
        now: The current time (for tests).
        records: The API's records (:class:`pixelflow.records.Records`): uploads of deleted assets
            get no run.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    from pixelflow.ops.assets import iter_sources, published_or_rejected

    now = now or datetime.now(timezone.utc)
    newest, oldest = now - timedelta(seconds=older_than), now - timedelta(seconds=within)
    candidates = [(a, source, uploaded) for a, source, uploaded in iter_sources(settings, s3)
                  if oldest <= uploaded <= newest]
    candidates = [c for c in candidates if published_or_rejected(c[0], settings, s3) is None]
    if records is not None:
        candidates = [c for c in candidates if not _deleted(records, c[0])]
    if not candidates:
        return []
    since = min(uploaded for _, _, uploaded in candidates) - timedelta(minutes=5)
    seen: set[tuple[str, str, str]] = set()
    offset = 0
    while True:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            limit=200, offset=offset)
        seen.update(_run_key(run.parameters or {}) for run in runs)
        if len(runs) < 200:
            break
        offset += 200
    return [Orphan(a, source, uploaded) for a, source, uploaded in candidates
            if _run_key(source) not in seen]


def _deleted(records, asset_id: str) -> bool:
    try:
        record = records.get_asset(asset_id)
    except Exception:  # noqa: BLE001 - no records table: nothing was deleted through the API
        return False
    return bool(record and record.get("deleted_at"))


def reconcile(settings: PixelFlowSettings, s3, client, deployment: str = "local", *, older_than: float = 300.0,
              within: float = 86400.0, records=None) -> list[Orphan]:
    """Create the missing run of every orphaned upload (see :func:`find_orphans`).

    Returns:
        The orphans, each with the id of the run created for it.
    """
    orphans = find_orphans(settings, s3, client, deployment, older_than=older_than, within=within, records=records)
    if not orphans:
        return []
    target = client.read_deployment_by_name(f"{FLOW_NAME}/{deployment}")
    created = []
    for orphan in orphans:
        source = orphan.source
        run = client.create_flow_run_from_deployment(
            target.id,
            parameters={"bucket": source["bucket"], "key": source["key"], "etag": source["etag"],
                        "version_id": source.get("version_id")},
            idempotency_key=f"pixelflow-reconcile-{orphan.asset_id}",
            tags=[RECONCILED_TAG],
        )
        created.append(Orphan(orphan.asset_id, source, orphan.uploaded_at, str(run.id)))
    return created


def reconcile_forever(settings: PixelFlowSettings, deployment: str, every: float, older_than: float, within: float,
                      log: Callable[[str], None] = print, stop: Callable[[], bool] = lambda: False,
                      repair: bool = True) -> None:
    """Run :func:`reconcile` every ``every`` seconds until ``stop()`` (errors are logged, not fatal);
    with ``repair``, :func:`repair_records` too (at most once a minute: it lists the buckets)."""
    from prefect.client.orchestration import get_client

    from pixelflow.aws import s3_client
    from pixelflow.ops.retries import retry_failed
    from pixelflow.records import Records

    s3 = s3_client()
    records = Records.from_settings(settings)
    repaired_at = 0.0
    while not stop():
        started = time.monotonic()
        try:
            with get_client(sync_client=True) as client:
                for orphan in reconcile(settings, s3, client, deployment, older_than=older_than, within=within,
                                        records=records):
                    log(f"s3://{orphan.source['bucket']}/{orphan.source['key']} (asset {orphan.asset_id}) had no run "
                        f"{(datetime.now(timezone.utc) - orphan.uploaded_at).total_seconds():.0f} s after its upload; "
                        f"started flow run {orphan.flow_run_id}")
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log(f"reconcile failed: {type(exc).__name__}: {exc}")
        try:
            with get_client(sync_client=True) as client:
                for retry in retry_failed(settings, s3, client, deployment, records=records):
                    log(describe_retry(retry))
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log(f"retrying failed uploads failed: {type(exc).__name__}: {exc}")
        if repair and time.monotonic() - repaired_at >= max(every, 60.0):  # a full listing: not every round
            repaired_at = time.monotonic()
            try:
                for fixed in repair_records(settings, s3, records, older_than=older_than):
                    log(f"record of asset {fixed.asset_id} said {fixed.before or 'nothing'}; S3 says {fixed.after}: "
                        "corrected")
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log(f"records repair failed: {type(exc).__name__}: {exc}")
                if "ResourceNotFoundException" in str(exc):
                    log(f"no records table {settings.records_table!r}: records are not repaired")
                    repair = False
        while not stop() and time.monotonic() - started < every:
            time.sleep(min(1.0, every))


def describe_retry(retry) -> str:
    """One log line for a :class:`pixelflow.ops.retries.Retry`."""
    where = f"s3://{retry.source['bucket']}/{retry.source['key']} (asset {retry.asset_id})"
    if retry.flow_run_id is None:
        return f"{where} failed again ({retry.code}) after {retry.attempt} retries: not retried any more"
    return f"{where} had failed ({retry.code}); started retry {retry.attempt} as flow run {retry.flow_run_id}"


# --- records repair -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Repair:
    """A record corrected from S3: ``before`` is the record's state (``None``: no record), ``after``
    the one S3 shows (``purged``: a deleted asset's objects that reappeared were removed)."""

    asset_id: str
    before: str | None
    after: str


def _record_time(value: Any) -> datetime | None:
    from pixelflow.ops.assets import _parse_time

    return _parse_time(value)


def record_from_s3(records, info, record: dict[str, Any] | None, first: dict[str, Any] | None = None) -> Repair | None:
    """Make one asset's record (``record``, not a tombstone) say what S3 says of it (``info``, an
    :class:`pixelflow.ops.assets.AssetInfo`), as :func:`repair_records` describes; the API's view
    of one asset uses the same rule. ``first``: the fields a new record starts with (default its
    source). Returns the correction made, if any."""
    from pixelflow.ops import assets as s3_assets
    from pixelflow.records import ERRORED, PREPARING, READY, asset_fields_from_manifest

    before = None if record is None else record.get("status")
    first = first or {"source": info.source}
    created = info.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if info.created else None
    if info.status == s3_assets.READY:
        if before == READY:
            return None
        fields = {**asset_fields_from_manifest({"renditions": info.renditions, "duration": info.duration,
                                                "poster": info.poster, "storyboard": info.storyboard,
                                                "downloads": info.downloads}),
                  "progress": 100, "errors": None}
        records.record_asset(info.asset_id, READY, fields, first=first, created_at=created)
        return Repair(info.asset_id, before, READY)
    if info.status in (s3_assets.BROKEN, s3_assets.REJECTED, s3_assets.FAILED):
        error = {"code": info.error["code"], "message": info.error["message"]}
        if info.status != s3_assets.BROKEN and before == PREPARING:
            recorded, written = info.created, _record_time(record.get("updated_at"))
            if recorded is None or written is None or recorded <= written:
                return None  # a retry is on its way: its error.json is older than its last write
        if before == ERRORED and ((record or {}).get("errors") or {}).get("code") == error["code"]:
            return None
        records.record_asset(info.asset_id, ERRORED, {"errors": error, "progress": None}, first=first,
                             created_at=created)
        return Repair(info.asset_id, before, ERRORED)
    if info.status == s3_assets.PROCESSING and before in (None, READY):
        records.record_asset(info.asset_id, PREPARING, {"progress": 0, "renditions": None}, first=first,
                             created_at=created)
        return Repair(info.asset_id, before, PREPARING)
    return None


def repair_records(settings: PixelFlowSettings, s3, records, *, older_than: float = 300.0,
                   now: datetime | None = None) -> list[Repair]:
    """Make the records agree with S3, the source of truth for published objects.

    * An asset S3 shows whole (manifest and every object it names) is ``ready``.
    * One whose manifest names missing objects is ``errored`` (``asset_incomplete``).
    * One with an ``error.json`` newer than its record's last write is ``errored`` with that code.
    * An upload still processing in S3 gets a ``preparing`` record if it has none, and a ``ready``
      record whose objects are gone becomes ``preparing`` (a new run rebuilds it).
    * A ``preparing`` or ``ready`` record that S3 knows nothing of (the source is gone too) and
      that was not written for ``older_than`` seconds is ``errored`` (``source_not_found``).
    * A deleted asset (tombstone) whose objects reappeared (a run finishing after the delete) is
      emptied again.

    Returns:
        The corrections made.
    """
    from pixelflow.ops import assets as s3_assets
    from pixelflow.errors import ErrorCode
    from pixelflow.records import ERRORED, PREPARING, READY, api_upload, upload_link

    now = now or datetime.now(timezone.utc)
    repairs: list[Repair] = []
    known = s3_assets.list_assets(settings, s3)
    for info in known:
        record = records.get_asset(info.asset_id)
        if record is not None and record.get("deleted_at"):
            if info.status in (s3_assets.READY, s3_assets.BROKEN):
                from pixelflow.ops.api.assets import AssetService

                AssetService(settings, s3, records).purge(info.asset_id, record)
                repairs.append(Repair(info.asset_id, "deleted", "purged"))
            continue
        first = {"source": info.source}
        upload_record = api_upload(settings, records, info.source["key"]) if (info.source or {}).get("key") else None
        if upload_record is not None:  # an API upload's asset keeps its passthrough and playback policy
            first.update(upload_link(upload_record))
        repaired = record_from_s3(records, info, record, first)
        if repaired is not None:
            repairs.append(repaired)
    seen = {info.asset_id for info in known}
    for status in (PREPARING, READY):
        cursor = None
        while True:
            items, cursor = records.list_assets(status, 100, cursor)
            for item in items:
                written = _record_time(item.get("updated_at"))
                if item["id"] in seen or written is None or (now - written).total_seconds() < older_than:
                    continue
                records.record_asset(item["id"], ERRORED, {"progress": None, "errors": {
                    "code": ErrorCode.SOURCE_NOT_FOUND.value,
                    "message": "Neither the upload nor a published asset or rejection record is in S3 any more."}})
                repairs.append(Repair(item["id"], status, ERRORED))
            if not cursor:
                break
    return repairs
