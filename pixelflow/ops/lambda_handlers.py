"""AWS Lambda entry points: the HTTP API behind a Function URL, and the bridge triggered by the
upload queue (a small deployment needs no always-on container).

* :func:`api_handler`: the API app (:func:`pixelflow.ops.api.create_app`) through Mangum, built once
  per container from the environment (``PIXELFLOW_*``; tokens from Secrets Manager through
  ``PIXELFLOW_API_TOKENS_SECRET_ID``).
* :func:`playback_sync_handler`: the records table's stream; each asset policy recorded is
  written to CloudFront's playback key-value store (:mod:`pixelflow.ops.playback_cdn`).
* :func:`webhooks_handler`: the webhook queue's deliveries (:mod:`pixelflow.ops.webhook_dispatch`).
* :func:`bridge_handler`: an SQS event source mapping's batch. Each message's S3 records become
  the same ``pixelflow.upload.created`` events, with the same ids, as the container bridge posts
  (:mod:`pixelflow.pipeline.bridge`); messages whose events Prefect did not accept are reported in
  ``batchItemFailures`` (``ReportBatchItemFailures``), so SQS delivers them again and, after
  ``maxReceiveCount`` receives, moves them to the dead-letter queue. Test events and objects
  PixelFlow wrote itself are dropped; bodies that are not S3 notifications fail (dead-letter).

* :func:`reconcile_handler`: one round of the reconciler, invoked on a schedule (EventBridge
  Scheduler): the run of every upload whose event was lost, the retries of failed uploads whose
  backoff has passed, and the repair of the records from S3 (:mod:`pixelflow.ops.reconcile`).

Prefect credentials: ``PREFECT_API_KEY_SECRET_ARN`` or ``PREFECT_API_AUTH_STRING_SECRET_ARN``
name Secrets Manager secrets read at cold start into ``PREFECT_API_KEY`` /
``PREFECT_API_AUTH_STRING`` (never logged).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

import httpx

from pixelflow.settings import PixelFlowSettings

logger = logging.getLogger("pixelflow.lambda")

_SECRET_ENV = {"PREFECT_API_KEY_SECRET_ARN": "PREFECT_API_KEY",
               "PREFECT_API_AUTH_STRING_SECRET_ARN": "PREFECT_API_AUTH_STRING"}
_api = None


def load_prefect_secrets(secrets: Any = None) -> None:
    """Read the Prefect credential secrets named in the environment into Prefect's variables."""
    for source, target in _SECRET_ENV.items():
        arn = os.environ.get(source)
        if arn and not os.environ.get(target):
            if secrets is None:
                from pixelflow.aws import secretsmanager_client

                secrets = secretsmanager_client()
            os.environ[target] = secrets.get_secret_value(SecretId=arn)["SecretString"]


def api_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda handler of the HTTP API (Function URL or API Gateway payloads)."""
    global _api
    if _api is None:
        from mangum import Mangum

        from pixelflow.ops.api import create_app

        load_prefect_secrets()
        _api = Mangum(create_app(PixelFlowSettings()), lifespan="off")
    return _api(event, context)


def handle_message(body: str, settings: PixelFlowSettings, post: Callable[[list[dict[str, Any]]], bool],
                   message_id: str = "?", sqs: Any = None) -> bool:
    """Forward one SQS message body; whether it is done with (delivered, or nothing to deliver).

    The same rules as the container bridge: records that are no new upload are skipped, and the
    invalid records of a message with valid ones go to the dead-letter queue on their own."""
    from dataclasses import asdict

    from pixelflow.core.s3events import Malformed, S3Notification, S3TestEvent, parse_body
    from pixelflow.pipeline.bridge import build_event, dead_letter_records, skip_reason

    parsed = parse_body(body)
    if isinstance(parsed, S3TestEvent):
        return True
    if isinstance(parsed, Malformed) or not isinstance(parsed, S3Notification):
        logger.error("not an S3 notification (%s): left for the dead-letter queue", getattr(parsed, "reason", "?"))
        return False
    invalid = [{"reason": bad.reason, "record": bad.raw} for bad in parsed.invalid]
    records, events = [], []
    for record in parsed.records:
        if skip_reason(record, settings) is not None:
            continue
        try:
            events.append(build_event(record))
        except ValueError as exc:
            invalid.append({"reason": f"cannot become a Prefect event: {exc}", "record": asdict(record)})
            continue
        records.append(record)
    if invalid and not records:
        logger.error("no record can become a Prefect event (%s): left for the dead-letter queue", invalid[0]["reason"])
        return False
    if not records:
        return True
    delivered = post(events)
    if delivered:
        for record, event in zip(records, events):
            logger.info("forwarded s3://%s/%s (etag %s) as event %s", record.bucket, record.key, record.etag,
                        event["id"])
        if invalid:
            from pixelflow.aws import sqs_client

            try:
                dead_letter_records(sqs or sqs_client(), settings, invalid, message_id)
            except Exception:  # noqa: BLE001 - retried with the message; its events are the same ids
                logger.exception("cannot move the invalid records to the dead-letter queue")
                return False
    return delivered


def poster(api_url: str | None = None, timeout: float = 10.0) -> Callable[[list[dict[str, Any]]], bool]:
    """A function posting events to the Prefect API once; whether the server accepted them."""
    from pixelflow.pipeline.bridge import _auth_headers, prefect_api_url

    url = (api_url or prefect_api_url()).rstrip("/")

    def post(events: list[dict[str, Any]]) -> bool:
        try:
            response = httpx.post(f"{url}/events", json=events, headers=_auth_headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            logger.warning("Prefect API %s unreachable (%s): the message is retried", url, type(exc).__name__)
            return False
        if not response.is_success:
            logger.warning("Prefect API answered HTTP %s: the message is retried", response.status_code)
        return response.is_success

    return post


def bridge_handler(event: dict[str, Any], context: Any = None, *, settings: PixelFlowSettings | None = None,
                   post: Callable[[list[dict[str, Any]]], bool] | None = None) -> dict[str, Any]:
    """Lambda handler of the upload queue's event source mapping (``ReportBatchItemFailures``).

    Example:
        >>> bridge_handler({"Records": [{"messageId": "m1", "body": "not json"}]},
        ...                settings=PixelFlowSettings(), post=lambda events: True)
        {'batchItemFailures': [{'itemIdentifier': 'm1'}]}
    """
    if post is None:
        load_prefect_secrets()
        post = poster()
    settings = settings or PixelFlowSettings()
    failures = []
    for message in event.get("Records", []):
        try:
            done = handle_message(message.get("body", ""), settings, post, message.get("messageId", "?"))
        except Exception:  # noqa: BLE001 - one message never fails the batch
            logger.exception("unexpected error on message %s", message.get("messageId"))
            done = False
        if not done:
            failures.append({"itemIdentifier": message["messageId"]})
    return {"batchItemFailures": failures}


# --- private playback: the records table's stream into CloudFront's key-value store ------------
_playback_store = None


def playback_sync_handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """Lambda handler of the records table's stream: every asset policy recorded (by the API, the
    transcode flow, the reconciler) is written to the CloudFront playback key-value store
    (``PIXELFLOW_PLAYBACK_KVS_ARN``), with the signing key at cold start. A failed write fails the
    batch, which the stream delivers again."""
    global _playback_store
    from pixelflow.ops.playback import load_signing_key
    from pixelflow.ops.playback_cdn import CdnPlaybackStore, sync_from_stream

    if _playback_store is None:
        settings = PixelFlowSettings()
        _playback_store = CdnPlaybackStore.from_settings(settings, load_signing_key(settings))
    if _playback_store is None:
        return {"written": 0}
    return {"written": sync_from_stream(_playback_store, event.get("Records") or [])}


def webhooks_handler(event: dict[str, Any], context: Any = None, *,
                     settings: PixelFlowSettings | None = None) -> dict[str, Any]:
    """Lambda handler of the webhook queue's event source mapping (FIFO, ``ReportBatchItemFailures``):
    the same deliveries as ``pixelflow webhooks dispatch`` (:mod:`pixelflow.ops.webhook_dispatch`).

    A delivery to retry is hidden for its backoff (``ChangeMessageVisibility``) and reported as a
    failure, with the rest of its endpoint's messages in the batch (they wait their turn); Lambda
    deletes the others.
    """
    from pixelflow.ops.webhook_dispatch import Dispatcher

    dispatcher = Dispatcher(settings or PixelFlowSettings())
    not_done = dispatcher.handle_batch(event.get("Records", []), delete=False)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in not_done]}


def _number(event: dict[str, Any], name: str, default: float) -> float:
    from pixelflow.errors import ErrorCode, PixelFlowError

    value = event.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 366 * 86400:
        raise PixelFlowError(ErrorCode.INVALID_REQUEST, f"{name} must be a number of seconds (0 to a year).")
    return float(value)


def reconcile_handler(event: dict[str, Any] | None = None, context: Any = None, *,
                      settings: PixelFlowSettings | None = None) -> dict[str, Any]:
    """Lambda handler of the reconciler's schedule: one round, then the function ends.

    The schedule's input may set ``deployment`` (default ``ecs``), ``older_than`` (the grace
    period of an upload without a run, default 300 s), ``within`` (how far back uploads are
    looked at, default 86400 s) and ``repair`` (repair the records, default true).

    Returns:
        What the round did: the runs started for lost uploads and as retries, the uploads given
        up on, and the number of records repaired.
    """
    from prefect.client.orchestration import get_client

    from pixelflow.aws import s3_client
    from pixelflow.ops.reconcile import reconcile, repair_records
    from pixelflow.ops.retries import retry_failed
    from pixelflow.records import Records

    from pixelflow.errors import ErrorCode, PixelFlowError

    event = event or {}
    if not isinstance(event, dict) or set(event) - {"deployment", "older_than", "within", "repair"}:
        raise PixelFlowError(ErrorCode.UNKNOWN_FIELD, "The reconciler's input takes deployment, older_than, within "
                             "and repair only.")
    deployment = event.get("deployment", "ecs")
    if not isinstance(deployment, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", deployment):
        raise PixelFlowError(ErrorCode.INVALID_REQUEST, "deployment must be a deployment name.")
    if not isinstance(event.get("repair", True), bool):
        raise PixelFlowError(ErrorCode.INVALID_REQUEST, "repair must be true or false.")
    older_than, within = _number(event, "older_than", 300.0), _number(event, "within", 86400.0)
    load_prefect_secrets()
    settings = settings or PixelFlowSettings()
    s3, records = s3_client(), Records.from_settings(settings)
    with get_client(sync_client=True) as client:
        orphans = reconcile(settings, s3, client, deployment, older_than=older_than, within=within, records=records)
        retries = retry_failed(settings, s3, client, deployment, records=records)
    repaired = repair_records(settings, s3, records, older_than=older_than) if event.get("repair", True) else []
    for orphan in orphans:
        logger.info("asset %s had no run: started flow run %s", orphan.asset_id, orphan.flow_run_id)
    for retry in retries:
        logger.info("asset %s failed (%s): %s", retry.asset_id, retry.code,
                    f"retry {retry.attempt} is flow run {retry.flow_run_id}" if retry.flow_run_id
                    else f"given up after {retry.attempt} retries")
    return {"started": [{"asset_id": o.asset_id, "flow_run_id": o.flow_run_id} for o in orphans],
            "retried": [{"asset_id": r.asset_id, "attempt": r.attempt, "flow_run_id": r.flow_run_id}
                        for r in retries if r.flow_run_id],
            "given_up": [r.asset_id for r in retries if not r.flow_run_id],
            "repaired": len(repaired)}
