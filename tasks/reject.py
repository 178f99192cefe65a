"""Record a rejected or failed upload: the source is kept, with an ``error.json`` beside it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect import get_run_logger, task

from pixelflow.aws import s3_client
from pixelflow.errors import PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS

ERROR_RECORD = "error.json"


def error_record(asset_id: str, bucket: str, key: str, etag: str | None, version_id: str | None,
                 error: PixelFlowError, probe: dict[str, Any] | None, flow_run_id: str | None,
                 kept_at: str | None) -> dict[str, Any]:
    return {
        "asset_id": asset_id,
        "status": "rejected" if error.is_rejection else "failed",
        "code": error.code.value,
        "message": error.message,
        "details": error.details,
        "retryable": error.retryable,
        "source": {"bucket": bucket, "key": key, "etag": etag, "version_id": version_id},
        "kept_at": kept_at,
        "probe": probe,
        "flow_run_id": flow_run_id,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@task(name="quarantine", task_run_name="quarantine", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def quarantine_source(bucket: str, key: str, version_id: str | None, asset_id: str, prefix: str,
                      record: dict[str, Any]) -> dict[str, Any]:
    """Write ``<prefix><asset_id>/error.json``; for a rejected source, also copy the source to
    ``<prefix><asset_id>/source`` (server-side; the original stays where it was uploaded).

    A failed run (a service problem, ``status: failed``) only gets the record: its source is fine
    and stays where it was uploaded for the retry.
    """
    s3 = s3_client()
    base = f"{prefix}{asset_id}/"
    record = dict(record)
    copy_source = {"Bucket": bucket, "Key": key}
    if version_id:
        copy_source["VersionId"] = version_id
    try:
        if record.get("status") == "rejected":
            s3.copy(copy_source, bucket, f"{base}source")
            record["kept_at"] = f"s3://{bucket}/{base}source"
    except ClientError as exc:  # a vanished source still gets its record
        get_run_logger().warning("could not keep a copy of s3://%s/%s: %s", bucket, key, exc)
    s3.put_object(Bucket=bucket, Key=f"{base}{ERROR_RECORD}", Body=json.dumps(record, indent=2).encode(),
                  ContentType="application/json")
    get_run_logger().info("recorded %s for s3://%s/%s at s3://%s/%s%s", record["code"], bucket, key, bucket, base, ERROR_RECORD)
    return record


@task(name="clear-failure-record", task_run_name="clear-failure-record", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS)
def clear_failure_record(bucket: str, asset_id: str, prefix: str) -> bool:
    """Remove the ``error.json`` an earlier, failed attempt left for an asset now published.

    Only ``failed`` records (service problems) are removed; a ``rejected`` record is never
    cleared by a later success, as a rejection is decided once. Returns whether one was removed.
    """
    s3 = s3_client()
    key = f"{prefix}{asset_id}/{ERROR_RECORD}"
    try:
        record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise
    if record.get("status") != "failed":
        return False
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}, {"Key": f"{prefix}{asset_id}/source"}],
                                             "Quiet": True})
    get_run_logger().info("asset %s is published; removed the failure record of an earlier attempt", asset_id)
    return True
