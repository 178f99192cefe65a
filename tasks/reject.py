"""Record a rejected or failed upload: its ``error.json`` in the output bucket's records (where
uploaders cannot write), and for a rejected source a copy kept under the upload bucket's
quarantine prefix."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect import get_run_logger, task

from pixelflow.aws import read_json_object, s3_client
from pixelflow.core.layout import AssetLayout
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS


def error_record(upload: Upload, error: PixelFlowError, probe: dict[str, Any] | None,
                 flow_run_id: str | None) -> dict[str, Any]:
    """The ``error.json`` of an upload that was not published."""
    return {
        "asset_id": upload.asset_id,
        "status": "rejected" if error.is_rejection else "failed",
        "code": error.code.value,
        "message": error.message,
        "details": error.details,
        "retryable": error.retryable,
        "source": {"bucket": upload.bucket, "key": upload.key, "etag": upload.etag, "version_id": upload.version_id},
        "kept_at": None,
        "probe": probe,
        "flow_run_id": flow_run_id,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@task(name="quarantine", task_run_name="quarantine", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def quarantine_source(upload: Upload, layout: AssetLayout, record: dict[str, Any], records_bucket: str) -> dict[str, Any]:
    """Write the asset's ``error.json`` (``<record prefix><asset_id>/error.json`` in
    ``records_bucket``, the output bucket); for a rejected source, also keep a copy at
    ``<quarantine prefix><asset_id>/source`` in the upload bucket (server-side; the original stays
    where it was uploaded).

    A failed run (a service problem, ``status: failed``) only gets the record: its source is fine
    and stays where it was uploaded for the retry.
    """
    s3 = s3_client()
    record = dict(record)
    copy_source = {"Bucket": upload.bucket, "Key": upload.key}
    if upload.version_id:
        copy_source["VersionId"] = upload.version_id
    try:
        if record.get("status") == "rejected":
            s3.copy(copy_source, upload.bucket, layout.kept_source_key)
            record["kept_at"] = f"s3://{upload.bucket}/{layout.kept_source_key}"
    except ClientError as exc:  # a vanished source still gets its record
        get_run_logger().warning("could not keep a copy of %s: %s", upload.uri, exc)
    s3.put_object(Bucket=records_bucket, Key=layout.error_key, Body=json.dumps(record, indent=2).encode(),
                  ContentType="application/json")
    get_run_logger().info("recorded %s for %s at s3://%s/%s", record["code"], upload.uri, records_bucket,
                          layout.error_key)
    return record


@task(name="clear-failure-record", task_run_name="clear-failure-record", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS)
def clear_failure_record(bucket: str, layout: AssetLayout) -> bool:
    """Remove the ``error.json`` (and retry count) an earlier, failed attempt left in ``bucket``
    (the output bucket) for an asset now published.

    Only ``failed`` records (service problems) are removed; a ``rejected`` record is never
    cleared by a later success, as a rejection is decided once. Returns whether one was removed.
    """
    s3 = s3_client()
    found = read_json_object(s3, bucket, layout.error_key)
    if found is None:
        return False
    record = found[0]
    if not isinstance(record, dict) or record.get("status") != "failed":
        return False
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": layout.error_key},
                                                                    {"Key": layout.retries_key}], "Quiet": True})
    if response.get("Errors"):
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Removing the failure record failed: {response['Errors']}")
    get_run_logger().info("asset %s is published; removed the failure record of an earlier attempt", layout.asset_id)
    return True
