"""boto3 clients, built in one place.

boto3 reads the standard AWS configuration itself (credentials chain, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), so the same code talks to AWS or to a local S3/SQS endpoint such as moto's
server. Only retry behaviour and addressing style are set here.

Clients are made once per process and configuration and then shared (boto3 clients are
thread-safe), and every client of the process reads the services' API models through one
loader: parsing a model costs about 0.1 s of CPU, which a run's dozen tasks would otherwise pay
each time, and which a warm process (:func:`load_models`) pays once for all its runs.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

#: The environment a client depends on: a change (another endpoint, other keys) makes a new one.
_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION")
_clients: dict[tuple, Any] = {}
_lock = threading.Lock()

_RETRIES = {"max_attempts": 8, "mode": "adaptive"}
_loader = botocore.loaders.create_loader()


def _config(**extra) -> Config:
    s3 = {}
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        s3["addressing_style"] = "path"  # local endpoints have no wildcard DNS for bucket hosts
    return Config(retries=_RETRIES, s3=s3 or None, connect_timeout=10, read_timeout=60, **extra)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _client(service: str, **extra):
    key = (service, os.getpid(), tuple(os.environ.get(name) for name in _ENV), tuple(sorted(extra.items())))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _session().client(service, region_name=region(), config=_config(**extra))
        return client


def _session() -> boto3.session.Session:
    """A boto3 session reading API models through the process's one loader (it caches them)."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core)


def load_models(services: tuple[str, ...] = ("s3", "dynamodb", "sqs")) -> None:
    """Parse the API models of ``services`` now (a warm process does this before it forks runs,
    so that their first clients are built in milliseconds).

    Example:
        >>> load_models(("s3",))
    """
    for service in services:
        _session().client(service, region_name=region(), config=_config())


def s3_client(**extra):
    """An S3 client with adaptive retries (throttling and 5xx are retried by botocore), shared
    by every caller in this process with the same configuration.

    Example:
        >>> s3_client() is s3_client()
        True
    """
    return _client("s3", **extra)


def sqs_client():
    """An SQS client, shared like :func:`s3_client`'s."""
    return _client("sqs")


def dynamodb_client():
    """A DynamoDB client (upload and asset records, :mod:`pixelflow.records`), shared like
    :func:`s3_client`'s."""
    return _client("dynamodb")


def secretsmanager_client():
    """A Secrets Manager client (the API's tokens on AWS), shared like :func:`s3_client`'s."""
    return _client("secretsmanager")


def s3_endpoint() -> str:
    """Which S3 the clients talk to: the endpoint URL when one is set (``AWS_ENDPOINT_URL_S3``,
    else ``AWS_ENDPOINT_URL``), else ``aws:<region>``."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or f"aws:{region()}"


#: Error codes S3 answers for an object, version or bucket that is not there.
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion", "NoSuchBucket", "NoSuchUpload"})


def is_missing(exc: BaseException) -> bool:
    """Whether a boto3 error says the object (or its version, bucket or upload) does not exist.

    Example:
        >>> is_missing(ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject"))
        True
        >>> is_missing(ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"))
        False
    """
    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in MISSING_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


#: The largest JSON object PixelFlow reads back (a manifest, a rejection record): anything
#: larger was not written by PixelFlow.
MAX_JSON_BYTES = 4 * 1024 * 1024


def read_json_object(s3, bucket: str, key: str, limit: int = MAX_JSON_BYTES) -> tuple[Any, Any] | None:
    """``(document, LastModified)`` of a JSON object, or ``None`` when there is none.

    The size is checked before anything is read, so a planted huge object costs nothing.

    Raises:
        PixelFlowError: ``record_unreadable`` when the object is larger than ``limit`` bytes or
            is not JSON.
    """
    import json

    from pixelflow.errors import ErrorCode, PixelFlowError

    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    with obj["Body"] as body:
        if obj.get("ContentLength", 0) > limit:
            raise PixelFlowError(ErrorCode.RECORD_UNREADABLE,
                                 f"s3://{bucket}/{key} is {obj['ContentLength']} bytes, more than a PixelFlow record "
                                 f"({limit}); it is not read.", {"bucket": bucket, "key": key})
        raw = body.read(limit + 1)
    try:
        return json.loads(raw), obj["LastModified"]
    except ValueError:
        raise PixelFlowError(ErrorCode.RECORD_UNREADABLE, f"s3://{bucket}/{key} is not JSON.",
                             {"bucket": bucket, "key": key}) from None
