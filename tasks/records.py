"""What the transcode flow calls to keep its asset's record (:mod:`pixelflow.records`) at each
state change (``preparing`` with progress, ``ready``, ``errored``).

The writes are plain calls, not task runs: a run's task list shows its work only (a run that
gives up after too many attempts still shows none), and each write is one DynamoDB request
retried by botocore.

The records are an index, S3 the truth: a write that fails (the table is unreachable, or not
provisioned on an older deployment) is logged and the run goes on; ``pixelflow reconcile``
repairs the record from S3 later. A write refused because the asset was deleted returns
``{"deleted": True}``: the run must not publish (or must withdraw) the asset.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pixelflow.core.upload import Upload
from pixelflow.errors import PixelFlowError
from pixelflow.records import PREPARING, ProgressRecorder, Records, record_asset_state
from pixelflow.settings import PixelFlowSettings

#: What :func:`record_asset` returns for a deleted asset.
DELETED = {"deleted": True}


def _logger():
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (tests, scripts)
        import logging

        return logging.getLogger("pixelflow.records")


def record_asset(table: str, upload_key_prefix: str, upload: Upload, status: str, *,
                 progress: float | None = None, manifest: Mapping[str, Any] | None = None,
                 error: PixelFlowError | None = None, flow_run_id: str | None = None,
                 playable: bool = False) -> dict[str, Any]:
    """Record the asset's new state in ``table``; its record (with the API upload's
    ``passthrough``), ``{}`` when the records could not be written (logged), :data:`DELETED`
    when the asset was deleted."""
    settings = PixelFlowSettings().model_copy(update={"records_table": table, "upload_key_prefix": upload_key_prefix})
    try:
        record = record_asset_state(settings, upload, status, progress=progress, manifest=manifest, error=error,
                                    flow_run_id=flow_run_id, playable=playable)
    except Exception as exc:  # noqa: BLE001 - the index lags; the reconciler repairs it from S3
        _logger().warning("could not record asset %s as %s (%s: %s); pixelflow reconcile will repair it",
                                 upload.asset_id, status, type(exc).__name__, exc)
        return {}
    if record is None:
        _logger().warning("asset %s was deleted: its state %s is not recorded", upload.asset_id, status)
        return dict(DELETED)
    return record


def revive_if_uploaded_again(table: str, upload: Upload) -> bool:
    """Whether the deleted asset of ``upload`` lives again because its object was uploaded
    again after the deletion (its ``LastModified`` is not older than the deletion); a late or
    duplicate event of the deleted upload finds it still deleted."""
    from pixelflow.aws import s3_client

    try:
        extra = {"VersionId": upload.version_id} if upload.version_id else {}
        modified = s3_client().head_object(Bucket=upload.bucket, Key=upload.key, **extra)["LastModified"]
        revived = Records(table).revive_asset(upload.asset_id, modified.strftime("%Y-%m-%dT%H:%M:%S"))
    except Exception as exc:  # noqa: BLE001 - the index lags; the asset stays as recorded
        _logger().warning("could not check whether asset %s was uploaded again (%s)", upload.asset_id, exc)
        return False
    if revived:
        _logger().info("asset %s was deleted, and its upload made again since: it is made anew", upload.asset_id)
    return revived


def progress_recorder(table: str, asset_id: str) -> ProgressRecorder:
    """A throttled writer of the asset's ``progress`` in ``table`` (at most one write per 10 % and per 5 s)."""
    records = Records(table)

    def write(percent: float) -> None:
        records.record_asset(asset_id, PREPARING, {"progress": round(percent, 1)})

    return ProgressRecorder(write)


@contextmanager
def report_progress(percent: Callable[[], float], recorder: ProgressRecorder, tick: float = 1.0) -> Iterator[None]:
    """Feed ``percent()`` to ``recorder`` every ``tick`` seconds, from a thread, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(tick):
            try:
                recorder(percent())
            except Exception:  # noqa: BLE001 - progress is a nicety
                pass

    thread = threading.Thread(target=loop, name="pixelflow-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def encode_percent(ladder: Any, duration: float) -> Callable[[], float]:
    """How far a run's encode is, for its record: the position in the source of the process
    encoding the ladder, scaled to 5 to 95 % (downloading and validating come before,
    publishing after). Read from memory: no request per tick.

    >>> class Ladder: out_time = 3.0
    >>> encode_percent(Ladder(), 6.0)()
    50.0
    """

    def percent() -> float:
        position = getattr(ladder, "out_time", 0.0) or 0.0
        return 5.0 + 90.0 * min(1.0, position / duration if duration > 0 else 0.0)

    return percent


@task(name="withdraw-deleted-asset", task_run_name="withdraw-deleted-asset", retries=2, retry_delay_seconds=[1, 5],
      cache_policy=NO_CACHE)
def withdraw_deleted(bucket: str, prefix: str, asset_id: str) -> int:
    """Remove what this run published (``prefix`` of ``bucket``) of an asset deleted while it ran;
    the number of objects."""
    from pixelflow.aws import s3_client

    s3 = s3_client()
    removed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            removed += len(keys)
    get_run_logger().warning("asset %s was deleted while this run published it: %d objects withdrawn", asset_id, removed)
    return removed
