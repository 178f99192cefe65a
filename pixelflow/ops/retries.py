"""Retries of failed uploads: the reconciler's second safety net.

A run that failed for a service reason (``status: failed`` in the asset's ``error.json``: a full
scratch disk, S3 or FFmpeg trouble past the tasks' own retries) leaves a source that is fine.
:func:`retry_failed` starts a new run of such an upload once its backoff has passed, up to
``PIXELFLOW_FAILED_RETRY_LIMIT`` times. A rejection (the source is unacceptable,
:data:`pixelflow.errors.REJECTION_CODES`) and the codes the flow decides on itself
(:data:`pixelflow.errors.FINAL_CODES`, ``too_many_attempts``) are never retried.

The retries made so far are kept in S3 beside the failure record (``retries.json``, see
:attr:`pixelflow.core.layout.AssetLayout.retries_key`), written *before* each run is created:
the limit holds across reconciler runs, processes and machines, and a crash between the write
and the run costs an attempt rather than exceeding the limit. Each retry's idempotency key names
its number, so reconcilers running side by side start it once. No retry starts while a run of the
upload is still scheduled, pending or running.

Example:
    >>> [retry_delay(n, 300, 3600) for n in range(5)]
    [300.0, 600.0, 1200.0, 2400.0, 3600.0]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pixelflow.errors import FINAL_CODES, REJECTION_CODES, ErrorCode
from pixelflow.settings import PixelFlowSettings

#: Tag of the runs started as retries of a failed upload.
RETRIED_TAG = "pixelflow:retried"
#: Failure codes that are never retried: a run that already gave up after its attempts.
NEVER_RETRIED = frozenset(REJECTION_CODES | FINAL_CODES | {ErrorCode.TOO_MANY_ATTEMPTS})
_ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


@dataclass(frozen=True)
class Retry:
    """A failed upload the reconciler retried (``flow_run_id`` set) or gave up on (``None``).

    Attributes:
        asset_id: The asset.
        source: The upload (``bucket``, ``key``, ``etag``, ``version_id``).
        code: The failure's code.
        attempt: The number of this retry (1 for the first); for a give-up, the retries made.
        flow_run_id: The run created, or ``None`` when the limit was reached.
    """

    asset_id: str
    source: dict[str, Any]
    code: str
    attempt: int
    flow_run_id: str | None = None


def retry_delay(retries_done: int, base: float, cap: float) -> float:
    """Seconds to wait after a failure before the next retry: ``base`` doubled for each retry
    already made, at most ``cap``."""
    return float(min(base * 2 ** retries_done, cap))


def is_retryable(record: dict[str, Any]) -> bool:
    """Whether a failure record (``error.json``) is one the reconciler retries: a ``failed`` run
    with a known code that retrying may cure.

    >>> is_retryable({"status": "failed", "code": "insufficient_disk"})
    True
    >>> is_retryable({"status": "rejected", "code": "not_media"}), is_retryable({"status": "failed", "code": "not_media"})
    (False, False)
    >>> is_retryable({"status": "failed", "code": "asset_incomplete"}), is_retryable({"status": "failed", "code": "?"})
    (False, False)
    """
    if record.get("status") != "failed":
        return False
    try:
        code = ErrorCode(str(record.get("code")))
    except ValueError:
        return False
    return code not in NEVER_RETRIED


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def read_retries(asset_id: str, settings: PixelFlowSettings, s3) -> dict[str, Any]:
    """The retries made of an asset's failed upload (``{"attempts": n, ...}``; ``{}`` for none)."""
    from pixelflow.ops.assets import _get_record, records_bucket

    found = _get_record(s3, records_bucket(settings), settings.layout(asset_id).retries_key)
    return found[0] if found else {}


def _write_retries(asset_id: str, state: dict[str, Any], settings: PixelFlowSettings, s3) -> None:
    from pixelflow.ops.assets import records_bucket

    s3.put_object(Bucket=records_bucket(settings), Key=settings.layout(asset_id).retries_key,
                  Body=json.dumps(state, indent=2).encode(), ContentType="application/json")


def _active_uploads(client, deployment: str) -> set[tuple[str, str, str]]:
    """The uploads (bucket, key, ETag) with a run of ``transcode/<deployment>`` not yet finished."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from pixelflow.ops.reconcile import FLOW_NAME, _run_key

    active: set[tuple[str, str, str]] = set()
    offset = 0
    while True:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(name) for name in _ACTIVE_STATES]))),
            limit=200, offset=offset)
        active.update(_run_key(run.parameters or {}) for run in runs)
        if len(runs) < 200:
            return active
        offset += 200


def retry_failed(settings: PixelFlowSettings, s3, client, deployment: str = "local", *,
                 now: datetime | None = None, records=None) -> list[Retry]:
    """Start a new run of every failed upload whose backoff has passed (see the module's
    description), and report those that reached the limit (once each).

    Args:
        settings: Buckets, prefixes and the retry settings (``PIXELFLOW_FAILED_RETRY_*``).
        s3: A boto3 S3 client.
        client: A synchronous Prefect client.
        deployment: Name of the transcode deployment to run (``local``, ``ecs``).
        now: The current time (for tests).
        records: The API's records: a deleted asset's upload is not retried.

    Returns:
        The retries started and the uploads given up on.
    """
    from pixelflow.core.upload import Upload
    from pixelflow.ops.assets import _parse_time, iter_error_records
    from pixelflow.ops.reconcile import FLOW_NAME, _deleted, _run_key

    if settings.failed_retry_limit <= 0:  # retries are off
        return []
    now = now or datetime.now(timezone.utc)
    due: list[tuple[str, dict[str, Any], str, int, dict[str, Any]]] = []
    given_up: list[Retry] = []
    for asset_id, record, modified in iter_error_records(settings, s3):
        source = record.get("source")
        if not is_retryable(record) or not isinstance(source, dict) or not source.get("key") \
                or source.get("bucket") != settings.upload_bucket:
            continue
        if Upload.from_dict(source).asset_id != asset_id:
            continue  # a record that is not this asset's
        state = read_retries(asset_id, settings, s3)
        attempts = int(state.get("attempts") or 0)
        code = str(record["code"])
        if attempts >= settings.failed_retry_limit:
            if not state.get("gave_up_at"):
                _write_retries(asset_id, {**state, "attempts": attempts, "gave_up_at": _iso(now)}, settings, s3)
                given_up.append(Retry(asset_id, source, code, attempts))
            continue
        failed_at = _parse_time(record.get("recorded_at")) or modified
        last = max(failed_at, _parse_time(state.get("retried_at")) or failed_at)
        wait = retry_delay(attempts, settings.failed_retry_backoff_seconds, settings.failed_retry_backoff_max_seconds)
        if now < last + timedelta(seconds=wait):
            continue
        if records is not None and _deleted(records, asset_id):
            continue
        due.append((asset_id, source, code, attempts, state))
    if not due:
        return given_up
    active = _active_uploads(client, deployment)
    target = client.read_deployment_by_name(f"{FLOW_NAME}/{deployment}")
    started = []
    for asset_id, source, code, attempts, state in due:
        if _run_key(source) in active:
            continue  # a run of this upload is on its way
        attempt = attempts + 1
        counted = {"asset_id": asset_id, "attempts": attempt, "retried_at": _iso(now),
                   "codes": list(state.get("codes") or []) + [code],
                   "flow_run_ids": list(state.get("flow_run_ids") or [])}
        _write_retries(asset_id, counted, settings, s3)  # counted before the run exists: never one too many
        run = client.create_flow_run_from_deployment(
            target.id,
            parameters={"bucket": source["bucket"], "key": source["key"], "etag": source.get("etag"),
                        "version_id": source.get("version_id")},
            idempotency_key=f"pixelflow-retry-{asset_id}-{attempt}",
            tags=[RETRIED_TAG])
        counted["flow_run_ids"].append(str(run.id))
        _write_retries(asset_id, counted, settings, s3)
        started.append(Retry(asset_id, source, code, attempt, str(run.id)))
    return started + given_up
