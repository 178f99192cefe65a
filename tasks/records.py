"""Thin tasks over :mod:`pixelflow.records`: the transcode flow records its asset's state at each
change (``preparing`` with progress, ``ready``, ``errored``).

The records are an index, S3 the truth: a write that fails (the table is unreachable, or not
provisioned on an older deployment) is logged and the run goes on; ``pixelflow reconcile``
repairs the record from S3 later. A write refused because the asset was deleted returns
``{"deleted": True}``: the run must not publish (or must withdraw) the asset.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from pixelflow.core.upload import Upload
from pixelflow.errors import PixelFlowError
from pixelflow.records import PREPARING, ProgressRecorder, Records, record_asset_state
from pixelflow.settings import PixelFlowSettings

#: What :func:`record_asset` returns for a deleted asset.
DELETED = {"deleted": True}


@task(name="record-asset", task_run_name="record-{status}", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def record_asset(settings: PixelFlowSettings, upload: Upload, status: str, *, progress: float | None = None,
                 manifest: Mapping[str, Any] | None = None, error: PixelFlowError | None = None,
                 flow_run_id: str | None = None) -> dict[str, Any]:
    """Record the asset's new state; its record (with the API upload's ``passthrough``), ``{}``
    when the records could not be written (logged), :data:`DELETED` when the asset was deleted."""
    try:
        record = record_asset_state(settings, upload, status, progress=progress, manifest=manifest, error=error,
                                    flow_run_id=flow_run_id)
    except Exception as exc:  # noqa: BLE001 - the index lags; the reconciler repairs it from S3
        get_run_logger().warning("could not record asset %s as %s (%s: %s); pixelflow reconcile will repair it",
                                 upload.asset_id, status, type(exc).__name__, exc)
        return {}
    if record is None:
        get_run_logger().warning("asset %s was deleted: its state %s is not recorded", upload.asset_id, status)
        return dict(DELETED)
    return record


def progress_recorder(settings: PixelFlowSettings, upload: Upload, flow_run_id: str | None = None) -> ProgressRecorder:
    """A throttled writer of the asset's ``progress`` (at most one write per 10 % and per 5 s)."""
    records = Records.from_settings(settings)

    def write(percent: float) -> None:
        records.record_asset(upload.asset_id, PREPARING, {"progress": round(percent, 1), "flow_run_id": flow_run_id})

    return ProgressRecorder(write)


def wait_reporting_progress(futures: Iterable, percent: Callable[[], float], recorder: ProgressRecorder,
                            tick: float = 1.0) -> None:
    """:func:`prefect.futures.wait` on ``futures``, feeding ``percent()`` to ``recorder`` meanwhile."""
    futures = list(futures)
    while True:
        done = wait(futures, timeout=tick)
        if not done.not_done:
            return
        try:
            recorder(percent())
        except Exception:  # noqa: BLE001 - progress is a nicety
            pass
        time.sleep(0)
