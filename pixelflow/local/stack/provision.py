"""Provision what the event chain and the HTTP API need, on AWS and on the local stack's Prefect server.

* :func:`provision`: the upload notification chain (buckets, queue, dead-letter queue,
  notification). It works against AWS and against a local endpoint such as moto's server, and
  is idempotent: run it as often as you like. It also creates what the HTTP API needs: the
  records table and the upload bucket's CORS rule for browsers that send files straight to S3
  through presigned URLs.
* :func:`install_automations`, :func:`ensure_work_pool`, :func:`deploy`: the crash-recovery
  automations, the ``pixelflow-local`` work pool and the ``local`` deployment with its upload
  trigger on the local stack's Prefect server.
* :func:`settle_previous_runs`: closes the runs a previous local stack left unfinished.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelflow.settings import PixelFlowSettings
from pixelflow.local.stack.config import DEPLOYMENT_NAME, WORK_POOL, StackError
from pixelflow.local.stack.prefect_api import PrefectApi
from pixelflow.local.stack.state import tail

#: Id of PixelFlow's entry in the upload bucket's notification configuration.
NOTIFICATION_ID = "pixelflow-upload-created"
#: Id of PixelFlow's rule in the upload bucket's CORS configuration.
CORS_RULE_ID = "pixelflow-direct-uploads"


@dataclass(frozen=True)
class Provisioned:
    """What :func:`provision` created or found."""

    upload_bucket: str
    output_bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    records_table: str = ""


def provision(settings: PixelFlowSettings, *, s3: Any = None, sqs: Any = None, dynamodb: Any = None) -> Provisioned:
    """Create the buckets, queues and notification PixelFlow's event chain needs.

    Idempotent: running it again converges existing resources to the settings (queue
    attributes, redrive ``maxReceiveCount``, queue policy) and rewrites the bucket notification
    only when PixelFlow's entry changed, keeping any other notification entries of the bucket.

    Args:
        settings: Bucket and queue names, ``max_receive_count``, visibility timeout, wait.
        s3: A boto3 S3 client (default: :func:`pixelflow.aws.s3_client`).
        sqs: A boto3 SQS client (default: :func:`pixelflow.aws.sqs_client`).
        dynamodb: A boto3 DynamoDB client (default: :func:`pixelflow.aws.dynamodb_client`).

    Returns:
        The names, URLs and ARNs of the provisioned resources.
    """
    from pixelflow import aws

    s3 = s3 or aws.s3_client()
    sqs = sqs or aws.sqs_client()
    region = s3.meta.region_name or aws.region()
    for bucket in dict.fromkeys([settings.upload_bucket, settings.output_bucket]):
        _ensure_bucket(s3, bucket, region)

    dlq_url = _ensure_queue(sqs, settings.dlq_name, {"MessageRetentionPeriod": str(14 * 24 * 3600)})
    dlq_arn = _queue_arn(sqs, dlq_url)
    bucket_arn = f"arn:aws:s3:::{settings.upload_bucket}"
    queue_url = _ensure_queue(
        sqs,
        settings.queue_name,
        {
            "VisibilityTimeout": str(settings.bridge_visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(min(20, max(0, settings.bridge_wait_seconds))),
            "MessageRetentionPeriod": str(4 * 24 * 3600),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
            ),
        },
    )
    queue_arn = _queue_arn(sqs, queue_url)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowUploadBucketNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    _ensure_notification(s3, settings.upload_bucket, queue_arn)
    ensure_upload_cors(s3, settings.upload_bucket)
    ensure_records_table(settings, dynamodb)
    from pixelflow.outbox import ensure_webhook_queues

    ensure_webhook_queues(settings, sqs)
    return Provisioned(settings.upload_bucket, settings.output_bucket, queue_url, queue_arn, dlq_url, dlq_arn,
                       settings.records_table)


def ensure_records_table(settings: PixelFlowSettings, dynamodb: Any = None) -> bool:
    """Create the records table (:mod:`pixelflow.records`) unless it exists; ``True`` if created."""
    from pixelflow.records import Records

    return Records.from_settings(settings, dynamodb).ensure_table()


def ensure_upload_cors(s3: Any, bucket: str, origins: list[str] | None = None) -> None:
    """Let browsers PUT files and parts straight into ``bucket`` through presigned URLs (and read
    each part's ``ETag``), keeping the bucket's other CORS rules. The presigned URL is what
    authorises a PUT, so the rule allows any origin unless ``origins`` is given."""
    from botocore.exceptions import ClientError

    ours = {"ID": CORS_RULE_ID, "AllowedMethods": ["PUT"], "AllowedOrigins": origins or ["*"],
            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}
    try:
        rules = s3.get_bucket_cors(Bucket=bucket).get("CORSRules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchCORSConfiguration":
            raise
        rules = []
    if [r for r in rules if r.get("ID") == CORS_RULE_ID] == [ours]:
        return
    rules = [r for r in rules if r.get("ID") != CORS_RULE_ID] + [ours]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    from botocore.exceptions import ClientError

    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in exc.response.get("Error", {}).get("Code", ""):
            raise
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _ensure_notification(s3: Any, bucket: str, queue_arn: str) -> None:
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    ours = {"Id": NOTIFICATION_ID, "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
    queues = current.get("QueueConfigurations", [])
    existing = [q for q in queues if q.get("Id") == NOTIFICATION_ID]
    if len(existing) == 1 and existing[0].get("QueueArn") == queue_arn and existing[0].get("Events") == ours["Events"] \
            and not existing[0].get("Filter"):
        return
    config = {k: v for k, v in current.items() if k in (
        "TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")}
    config["QueueConfigurations"] = [q for q in queues if q.get("Id") != NOTIFICATION_ID] + [ours]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)


def install_automations(api_url: str, heartbeat_seconds: int) -> list[str]:
    """Install (or replace) the crash-recovery automations on a Prefect server; returns their names."""
    from prefect.client.orchestration import SyncPrefectClient

    from pixelflow.ops.automations import install

    with SyncPrefectClient(api_url) as client:
        return install(client, heartbeat_seconds)


def ensure_work_pool(api_url: str) -> None:
    """Create the ``pixelflow-local`` process work pool, or bring an existing one's template up
    to date.

    Its ``command`` is the flow starter's launcher (:mod:`pixelflow.local.flow_starter`): a run
    is forked from the warm starter when the worker's environment names one, and starts as
    ``python -m prefect.engine`` otherwise.

    Raises:
        StackError: When the Prefect server refuses it.
    """
    import httpx
    from prefect.workers.process import ProcessWorker

    from pixelflow.local.flow_starter import launch_command

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = launch_command()
    response = httpx.post(
        f"{api_url}/work_pools/",
        json={"name": WORK_POOL, "type": "process", "base_job_template": template,
              "description": "PixelFlow's local transcodes (pixelflow stack up)."},
        timeout=30,
    )
    if response.status_code == 409:
        response = httpx.patch(f"{api_url}/work_pools/{WORK_POOL}", json={"base_job_template": template}, timeout=30)
    if response.status_code not in (201, 204):
        raise StackError(f"cannot create work pool {WORK_POOL}: HTTP {response.status_code} {response.text[:300]}")


def deploy(env: dict[str, str], project_dir: Path, log_path: Path) -> None:
    """``prefect deploy --name local`` in ``project_dir``: the deployment and its upload trigger.

    Raises:
        StackError: When the command fails (its output is in ``log_path``).
    """
    from pixelflow.local.processes import _bin

    args = ["deploy", "--no-prompt", "--name", DEPLOYMENT_NAME]
    with open(log_path, "ab") as log:
        result = subprocess.run(
            [_bin("prefect"), *args], env=env, cwd=str(project_dir),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300,
        )
    if result.returncode != 0:
        raise StackError(f"`prefect {' '.join(args)}` failed (exit {result.returncode}); see {log_path}:\n{tail(log_path)}")


def settle_previous_runs(prefect: PrefectApi, sources_lost: bool) -> int:
    """Close the runs a previous stack left behind in the (persistent) Prefect database.

    Runs that were Pending or Running died with the previous worker: they are marked Crashed,
    which also frees their deployment concurrency slots (and lets the re-run automation
    schedule them again). When the S3 endpoint is a fresh moto server, every unfinished run
    refers to an object that no longer exists: they are all cancelled instead.

    Returns:
        How many runs were closed.
    """
    try:
        deployment = prefect.deployment_id()
    except Exception:
        return 0  # first start: nothing deployed yet
    states = {"PENDING": "CRASHED", "RUNNING": "CRASHED", "CANCELLING": "CANCELLED"}
    if sources_lost:
        states = dict.fromkeys(["PENDING", "RUNNING", "CANCELLING", "SCHEDULED", "PAUSED"], "CANCELLED")
    runs = prefect.api("POST", "/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment]}},
        "flow_runs": {"state": {"type": {"any_": sorted(states)}}},
        "limit": 200,
    })
    for run in runs:
        prefect.api("POST", f"/flow_runs/{run['id']}/set_state", json={
            "state": {"type": states[run["state_type"]], "message": "Closed when the local stack restarted."},
            "force": True,
        })
    return len(runs)
