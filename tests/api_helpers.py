"""Helpers for the API tests: the API app served by a real uvicorn on a free port, against the
session's moto server (S3 and DynamoDB over HTTP), with its own buckets and records table."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from pixelflow.aws import dynamodb_client, s3_client
from pixelflow.local.processes import free_port
from pixelflow.records import Records
from pixelflow.settings import PixelFlowSettings
from pixelflow.local.stack.provision import ensure_upload_cors

TOKEN = "test-token-" + uuid.uuid4().hex
MiB = 1024 * 1024


@dataclass
class Api:
    """A running API and what it runs on."""

    url: str
    settings: PixelFlowSettings
    records: Records
    server: Any
    thread: threading.Thread

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    # --- what exists, for "nothing was created" assertions --------------------------------
    def record_count(self) -> int:
        return dynamodb_client().scan(TableName=self.records.table, Select="COUNT")["Count"]

    def object_keys(self, bucket: str | None = None) -> list[str]:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket or self.settings.upload_bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def multipart_uploads(self) -> list[str]:
        response = s3_client().list_multipart_uploads(Bucket=self.settings.upload_bucket)
        return [u["Key"] for u in response.get("Uploads", [])]


def make_settings(**overrides: Any) -> PixelFlowSettings:
    """Fresh buckets (created) and records table (created) names, small multipart parts."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {"upload_bucket": f"up-{suffix}", "output_bucket": f"out-{suffix}",
                              "records_table": f"records-{suffix}", "api_tokens": [TOKEN],
                              "upload_part_bytes": 5 * MiB, "multipart_threshold_bytes": 6 * MiB,
                              "ladder": [360], "preset": "ultrafast", "segment_seconds": 2.0}
    values.update(overrides)
    settings = PixelFlowSettings(**values)
    s3 = s3_client()
    s3.create_bucket(Bucket=settings.upload_bucket)
    s3.create_bucket(Bucket=settings.output_bucket)
    Records.from_settings(settings).ensure_table()
    ensure_upload_cors(s3, settings.upload_bucket)  # browsers PUT straight to S3, as in the local stack
    return settings


def start_api(settings: PixelFlowSettings, **app_options: Any) -> Api:
    """The API app of ``settings`` (and ``create_app``'s ``app_options``) on a real uvicorn server,
    on a free loopback port."""
    import uvicorn

    from pixelflow.ops.api import create_app

    app = create_app(settings, tokens=list(settings.api_tokens), **app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="pixelflow-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    return Api(f"http://127.0.0.1:{port}", settings, Records.from_settings(settings), server, thread)


def env_for(settings: PixelFlowSettings) -> dict[str, str]:
    """``PIXELFLOW_*`` variables that point a flow run at ``settings``' buckets, table and ladder."""
    return {"PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket, "PIXELFLOW_OUTPUT_BUCKET": settings.output_bucket,
            "PIXELFLOW_RECORDS_TABLE": settings.records_table, "PIXELFLOW_LADDER": ",".join(map(str, settings.ladder)),
            "PIXELFLOW_PRESET": settings.preset, "PIXELFLOW_SEGMENT_SECONDS": str(settings.segment_seconds)}
