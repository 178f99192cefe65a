"""The safety net of the event chain: every upload gets a transcode run, even when an event was
lost on the way.

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
                 within: float = 86400.0, now: datetime | None = None) -> list[Orphan]:
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
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    from pixelflow.ops.assets import iter_sources, published_or_rejected

    now = now or datetime.now(timezone.utc)
    newest, oldest = now - timedelta(seconds=older_than), now - timedelta(seconds=within)
    candidates = [(a, source, uploaded) for a, source, uploaded in iter_sources(settings, s3)
                  if oldest <= uploaded <= newest]
    candidates = [c for c in candidates if published_or_rejected(c[0], settings, s3) is None]
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


def reconcile(settings: PixelFlowSettings, s3, client, deployment: str = "local", *, older_than: float = 300.0,
              within: float = 86400.0) -> list[Orphan]:
    """Create the missing run of every orphaned upload (see :func:`find_orphans`).

    Returns:
        The orphans, each with the id of the run created for it.
    """
    orphans = find_orphans(settings, s3, client, deployment, older_than=older_than, within=within)
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
                      log: Callable[[str], None] = print, stop: Callable[[], bool] = lambda: False) -> None:
    """Run :func:`reconcile` every ``every`` seconds until ``stop()`` (errors are logged, not fatal)."""
    from prefect.client.orchestration import get_client

    from pixelflow.aws import s3_client

    s3 = s3_client()
    while not stop():
        started = time.monotonic()
        try:
            with get_client(sync_client=True) as client:
                for orphan in reconcile(settings, s3, client, deployment, older_than=older_than, within=within):
                    log(f"s3://{orphan.source['bucket']}/{orphan.source['key']} (asset {orphan.asset_id}) had no run "
                        f"{(datetime.now(timezone.utc) - orphan.uploaded_at).total_seconds():.0f} s after its upload; "
                        f"started flow run {orphan.flow_run_id}")
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log(f"reconcile failed: {type(exc).__name__}: {exc}")
        while not stop() and time.monotonic() - started < every:
            time.sleep(min(1.0, every))
