"""Uploads to a running local stack and their results: :class:`Uploads` puts a file into the
upload bucket and waits for the manifest it becomes; :func:`make_sample` generates the sample clip
``pixelflow stack up`` transcodes."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pixelflow.settings import PixelFlowSettings


@dataclass(frozen=True)
class Uploads:
    """The upload and output buckets of a running local stack.

    Attributes:
        settings: The settings the stack's services run with (bucket names, asset prefix).
        s3: A boto3 S3 client for the stack's endpoint.
        aws_endpoint: The stack's S3/SQS endpoint.
        api_url: The stack's Prefect API.
        check: Called while waiting: raises when the stack stopped working.
    """

    settings: PixelFlowSettings
    s3: Any
    aws_endpoint: str
    api_url: str
    check: Callable[[], None]

    def upload_file(self, path: Path, key: str | None = None) -> dict[str, Any]:
        """Upload a file to the upload bucket.

        Returns:
            bucket, key, etag, version_id, the resulting asset_id and ``uploaded_at`` (epoch
            seconds when S3 answered the PUT).
        """
        from pixelflow.core.ids import asset_id, normalize_etag

        bucket = self.settings.upload_bucket
        key = key or f"uploads/{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{path.name}"
        with open(path, "rb") as body:
            response = self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded_at = time.time()
        etag = normalize_etag(response.get("ETag"))
        version_id = response.get("VersionId")
        return {
            "bucket": bucket,
            "key": key,
            "etag": etag,
            "version_id": version_id,
            "asset_id": asset_id(bucket, key, etag, version_id),
            "uploaded_at": uploaded_at,
        }

    def manifest_key(self, asset: str) -> str:
        """Key of an asset's ``manifest.json`` in the output bucket."""
        return f"{self.settings.asset_prefix}{asset}/manifest.json"

    def wait_for_manifest(self, asset: str, timeout: float = 900.0,
                          on_wait: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Wait until ``<asset_prefix><asset>/manifest.json`` is in the output bucket; return it.

        Args:
            asset: The asset id.
            timeout: Seconds to wait.
            on_wait: Called every 10 s of waiting with the seconds waited so far.

        Raises:
            TimeoutError: When the manifest did not appear within ``timeout``.
        """
        from botocore.exceptions import ClientError

        bucket = self.settings.output_bucket
        key = self.manifest_key(asset)
        started = time.monotonic()
        last_note = started
        while time.monotonic() - started < timeout:
            self.check()
            try:
                return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
            if on_wait and time.monotonic() - last_note >= 10:
                last_note = time.monotonic()
                on_wait(last_note - started)
            time.sleep(0.5)
        raise TimeoutError(f"s3://{bucket}/{key} did not appear within {timeout:.0f} s")

    def object_url(self, bucket: str, key: str) -> str:
        """HTTP URL of an object on the local endpoint (path-style)."""
        return f"{self.aws_endpoint}/{bucket}/{key}"

    def how_to_upload(self) -> str:
        """Shell lines to upload more files to the running stack."""
        settings = self.settings
        return "\n".join([
            f"export AWS_ENDPOINT_URL={self.aws_endpoint} AWS_ACCESS_KEY_ID=testing "
            "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1",
            f"aws s3 cp my-video.mp4 s3://{settings.upload_bucket}/my-video.mp4 --endpoint-url {self.aws_endpoint}",
            f"aws s3 ls --recursive s3://{settings.output_bucket}/{settings.asset_prefix} --endpoint-url {self.aws_endpoint}",
            f"export PREFECT_API_URL={self.api_url}   # for the prefect CLI, e.g. `prefect flow-run ls`",
        ])


def make_sample(path: Path, seconds: float = 4.0, size: str = "1920x1080", rate: int = 30) -> Path:
    """Generate a sample video (FFmpeg's testsrc2 pattern with a sine tone) unless it exists."""
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(tmp)],
        check=True,
    )
    tmp.replace(path)
    return path
