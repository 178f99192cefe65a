"""boto3 clients, built in one place.

boto3 reads the standard AWS configuration itself (credentials chain, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), so the same code talks to AWS or to a local S3/SQS endpoint such as moto's
server. Only retry behaviour and addressing style are set here.
"""

from __future__ import annotations

import os

import boto3
from botocore.config import Config

_RETRIES = {"max_attempts": 8, "mode": "adaptive"}


def _config(**extra) -> Config:
    s3 = {}
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        s3["addressing_style"] = "path"  # local endpoints have no wildcard DNS for bucket hosts
    return Config(retries=_RETRIES, s3=s3 or None, connect_timeout=10, read_timeout=60, **extra)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_client(**extra):
    """An S3 client with adaptive retries (throttling and 5xx are retried by botocore)."""
    return boto3.session.Session().client("s3", region_name=region(), config=_config(**extra))


def sqs_client():
    return boto3.session.Session().client("sqs", region_name=region(), config=_config())
