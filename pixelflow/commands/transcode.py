"""``pixelflow transcode s3://BUCKET/KEY``: run the transcode flow for one object now, in-process.

Without ``PREFECT_API_URL`` the command starts a Prefect server of its own for the run (SQLite in
a temporary directory) and stops it afterwards, as ``pixelflow demo`` does.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlparse

from pixelflow.commands._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_json_flag, emit, fail
from pixelflow.errors import ErrorCode, PixelFlowError


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key.mp4`` -> ``("bucket", "some/key.mp4")``.

    >>> parse_s3_url("s3://uploads/a b/c.mp4")
    ('uploads', 'a b/c.mp4')
    """
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        raise ValueError(f"expected s3://BUCKET/KEY, got {url!r}")
    return parsed.netloc, url.split("/", 3)[3]


def summary_text(manifest: dict) -> str:
    lines = [f"published asset {manifest['asset_id']}", f"  master playlist: {manifest.get('location')}"]
    duration = manifest.get("duration")
    if duration is not None:
        lines.append(f"  duration: {duration:.2f} s")
    for r in manifest.get("renditions", []):
        lines.append(f"  {r['name']:>6}  {r['width']}x{r['height']} @ {r['frame_rate']:g} fps  "
                     f"{r['bandwidth'] / 1000:.0f} kbit/s peak  {r['segments']} segments  {r['size']} bytes")
    if manifest.get("audio"):
        a = manifest["audio"]
        lines.append(f"  {'audio':>6}  AAC {a['average_bandwidth'] / 1000:.0f} kbit/s  {a['segments']} segments")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        bucket, key = parse_s3_url(args.url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from pixelflow.local.processes import LocalServerError, prefect_api

    try:
        with prefect_api(say=lambda line: print(f"note: {line}", file=sys.stderr)):
            return _transcode(args, bucket, key)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_in_process(bucket: str, key: str, etag: str | None = None, version_id: str | None = None, **options):
    """Run the ``transcode`` flow in this process, as ``pixelflow transcode`` does.

    Without flow-run heartbeats: they tell a worker's automations that a run's process is gone,
    and an in-process run has no worker (Prefect records an interrupted one itself). Prefect
    3.8 joins its heartbeat thread at the end of every flow run, which waits out the thread's
    current 1 s sleep: up to 1 s added to every command.

    Args:
        options: Passed to the flow call (e.g. ``return_state=True``).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.transcode import transcode

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return transcode(bucket=bucket, key=key, etag=etag, version_id=version_id, **options)


def _transcode(args: argparse.Namespace, bucket: str, key: str) -> int:
    """Run the flow on ``s3://bucket/key`` against the current Prefect API and report the outcome."""
    try:
        manifest = run_in_process(bucket, key, args.etag, args.version_id)
    except PixelFlowError as error:
        return fail(args, error)
    except Exception as exc:  # the flow run failed for another reason: its logs say why
        return fail(args, PixelFlowError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
    if manifest.get("status") == "superseded":
        emit(args, manifest, f"s3://{bucket}/{key} was overwritten; the newer upload is processed by its own run")
        return EXIT_OK
    emit(args, manifest, summary_text(manifest))
    return EXIT_OK if manifest.get("status") == "ready" else EXIT_FAILED


def register(subparsers) -> None:
    parser = subparsers.add_parser("transcode", help="transcode one S3 object now, in-process",
                                   description="Run the transcode flow for one uploaded object now and print where "
                                               "the asset was published. Exits 1 with the reason when the source is "
                                               "rejected.")
    parser.add_argument("url", help="the object, as s3://BUCKET/KEY")
    parser.add_argument("--etag", help="the upload's ETag, when known (the object is checked against it)")
    parser.add_argument("--version-id", help="the object version, for versioned buckets")
    add_json_flag(parser)
    parser.set_defaults(func=run)
