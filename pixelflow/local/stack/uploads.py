"""Uploads to a running local stack and their results: :class:`Uploads` puts a file into the
upload bucket and waits for the manifest it becomes; :func:`make_sample` generates the sample clip
``pixelflow stack up`` transcodes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
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
        from pixelflow.core.upload import Upload

        bucket = self.settings.upload_bucket
        key = key or f"uploads/{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{path.name}"
        with open(path, "rb") as body:
            response = self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded_at = time.time()
        upload = Upload(bucket, key, response.get("ETag"), response.get("VersionId"))
        return {"bucket": bucket, "key": key, "etag": upload.etag, "version_id": upload.version_id,
                "asset_id": upload.asset_id, "uploaded_at": uploaded_at}

    def manifest_key(self, asset: str) -> str:
        """Key of an asset's ``manifest.json`` in the output bucket."""
        return self.settings.layout(asset).manifest_key

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
        """Shell lines to upload more files to the running stack with what ``./dev.sh`` installed.

        They export the stack's endpoint, test credentials, buckets and prefixes, then run this
        environment's ``pixelflow upload --wait`` (``.venv/bin/pixelflow`` in a clone), not the
        AWS CLI, which nothing installs.
        """
        settings = self.settings
        aws = {"AWS_ENDPOINT_URL": self.aws_endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        buckets = {"PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket, "PIXELFLOW_OUTPUT_BUCKET": settings.output_bucket,
                   "PIXELFLOW_ASSET_PREFIX": settings.asset_prefix,
                   "PIXELFLOW_QUARANTINE_PREFIX": settings.quarantine_prefix,
                   "PIXELFLOW_RECORD_PREFIX": settings.record_prefix}
        return "\n".join([
            _export(aws),
            _export(buckets),
            f"{_pixelflow_command()} upload my-video.mp4 --wait   # prints the asset id, then waits until it is published",
            f"{_pixelflow_command()} ls                           # every asset and its state",
            f"{_export({'PREFECT_API_URL': self.api_url})}   # for the prefect CLI, e.g. `prefect flow-run ls`",
        ])


def _export(variables: dict[str, str]) -> str:
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())


def _pixelflow_command() -> str:
    """This environment's ``pixelflow`` script, relative to the current directory when it is
    below it (``.venv/bin/pixelflow`` in a clone); plain ``pixelflow`` when there is none."""
    script = Path(sys.executable).with_name("pixelflow")
    if not script.exists():
        return "pixelflow"
    try:
        script = script.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.quote(str(script))


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
