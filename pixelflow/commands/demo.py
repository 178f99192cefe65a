"""``pixelflow demo``: transcode a generated sample clip through a local S3 endpoint, start to end.

Starts a moto server (local S3) and a Prefect server (SQLite) unless ``AWS_ENDPOINT_URL`` and
``PREFECT_API_URL`` already point somewhere, creates the two buckets, uploads a generated clip,
runs the transcode flow in-process and prints where the asset was published.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pixelflow.commands._common import EXIT_FAILED, EXIT_OK, add_json_flag, emit, fail
from pixelflow.errors import PixelFlowError

STATE_DIR = Path(".pixelflow")


def sample_clip(path: Path, seconds: int = 8, size: str = "1920x1080") -> Path:
    """A clip with detail, motion and audio, made with FFmpeg's lavfi sources (cached)."""
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(path),
    ]
    subprocess.run(args, check=True)
    return path


def run(args: argparse.Namespace) -> int:
    from pixelflow.local import LocalServerError, prefect_api, start_moto

    services = []
    try:
        if not os.environ.get("AWS_ENDPOINT_URL"):
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            print("starting a local S3 endpoint (moto server)...", file=sys.stderr)
            moto = start_moto(log_dir=STATE_DIR / "logs")
            services.append(moto)
            os.environ["AWS_ENDPOINT_URL"] = moto.url
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        with prefect_api(home=STATE_DIR / "demo-prefect", log_dir=STATE_DIR / "logs",
                         say=lambda line: print(line, file=sys.stderr)):
            return _demo(args)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for service in reversed(services):
            service.stop()


def _demo(args: argparse.Namespace) -> int:
    """Upload the clip and transcode it against the current S3 endpoint and Prefect API."""
    from pixelflow.aws import s3_client
    from pixelflow.settings import PixelFlowSettings

    settings = PixelFlowSettings()
    s3 = s3_client()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (settings.upload_bucket, settings.output_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    clip = Path(args.file) if args.file else sample_clip(STATE_DIR / "sample-1080p.mp4")
    key = args.key or f"samples/{clip.name}"
    print(f"uploading {clip} to s3://{settings.upload_bucket}/{key}...", file=sys.stderr)
    s3.upload_file(str(clip), settings.upload_bucket, key)
    etag = s3.head_object(Bucket=settings.upload_bucket, Key=key)["ETag"]

    from flows.transcode import transcode
    from pixelflow.commands.transcode import summary_text

    state = transcode(bucket=settings.upload_bucket, key=key, etag=etag, return_state=True)
    run_url = os.environ["PREFECT_API_URL"].removesuffix("/api") + f"/runs/flow-run/{state.state_details.flow_run_id}"
    try:
        manifest = state.result()
    except PixelFlowError as error:
        print(f"flow run: {run_url}", file=sys.stderr)
        return fail(args, error)
    emit(args, {**manifest, "flow_run_url": run_url}, summary_text(manifest) + f"\n  flow run: {run_url}")
    return EXIT_OK if manifest.get("status") == "ready" else EXIT_FAILED


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="transcode a sample clip through a local S3 endpoint",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="transcode this local file instead of a generated 1080p clip")
    parser.add_argument("--key", help="object key to upload it as")
    add_json_flag(parser)
    parser.set_defaults(func=run)
