"""``pixelflow upload FILE [--key KEY] [--captions CAPTIONS]... [--wait] [--timeout S]``: put a
video into the upload bucket (multipart, with a progress bar) and print the asset it becomes.

``--captions talk.en.vtt`` (WebVTT or SRT, the language in the file's name) is put first, as the
video's sidecar (``<key without extension>.en.vtt``), so that the video's run publishes it.

The asset id comes from the uploaded object's ETag/VersionId (read back with ``head_object``).
With ``--wait`` the command polls until the asset is published (``manifest.json``) or rejected
(``error.json``). Exit codes: 0 uploaded (and, with ``--wait``, ready); 1 rejected, failed or
timed out; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from pixelflow.ops import assets
from pixelflow.aws import s3_client
from pixelflow.commands._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_json_flag, fail
from pixelflow.commands.status import describe
from pixelflow.core.captions import FORMATS, caption_language, sidecar_key
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.settings import PixelFlowSettings

POLL_SECONDS = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upload", help="upload a video to the upload bucket and print its asset id",
        description="Upload FILE to the upload bucket (multipart) and print the asset id it becomes. "
                    "With --wait, follow it until it is published or rejected (exit 1 when rejected).",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the video file to upload")
    parser.add_argument("--key", help="object key in the upload bucket (default: the file name)")
    parser.add_argument("--captions", type=Path, action="append", default=[], metavar="CAPTIONS",
                        help="a caption file to upload first, as the video's sidecar: NAME.<language>.vtt or "
                             ".srt (e.g. talk.en.vtt); repeat for more languages")
    parser.add_argument("--wait", action="store_true", help="wait until the asset is ready or rejected")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                        help="give up waiting after S seconds (default: 1800)")
    add_json_flag(parser)
    parser.set_defaults(func=run)


class ProgressBar:
    """A thread-safe boto3 transfer callback drawing ``[#####-----]  42%  12.0/28.5 MiB`` on a stream.

    On a terminal the bar is redrawn in place; otherwise a line is printed every 10 %.
    """

    def __init__(self, total: int, stream: TextIO, width: int = 30):
        self.total = max(total, 0)
        self.stream = stream
        self.width = width
        self.done = 0
        self.lock = threading.Lock()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_draw = 0.0
        self.last_step = -1

    def render(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        mib = 1024 * 1024
        return (f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction * 100:3.0f}%  "
                f"{self.done / mib:.1f}/{self.total / mib:.1f} MiB")

    def __call__(self, transferred: int) -> None:
        with self.lock:
            self.done = min(self.total, self.done + transferred) if self.total else self.done + transferred
            now = time.monotonic()
            step = int(self.done * 10 / self.total) if self.total else 10
            if self.tty and (now - self.last_draw >= 0.1 or self.done >= self.total):
                self.stream.write("\r" + self.render())
                self.stream.flush()
                self.last_draw = now
            elif not self.tty and step > self.last_step:
                self.stream.write(self.render() + "\n")
                self.stream.flush()
                self.last_step = step

    def finish(self) -> None:
        with self.lock:
            if self.tty:
                self.stream.write("\r" + self.render() + "\n")
                self.stream.flush()
            elif self.last_step < 10:
                self.stream.write(self.render() + "\n")
                self.stream.flush()


def transfer_config(settings: PixelFlowSettings) -> TransferConfig:
    """Multipart above one part size, parts of ``multipart_chunk_mb``, ``transfer_concurrency`` threads."""
    chunk = max(5, settings.multipart_chunk_mb) * 1024 * 1024  # S3's minimum part size is 5 MiB
    return TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                          max_concurrency=settings.transfer_concurrency)


def upload_file(path: Path, key: str, settings: PixelFlowSettings, s3, progress: ProgressBar | None = None) -> dict:
    """Upload ``path`` as ``key`` into the upload bucket.

    Returns:
        ``{"asset_id", "bucket", "key", "etag", "version_id", "size"}`` of the stored object.
    """
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    s3.upload_file(str(path), settings.upload_bucket, key, ExtraArgs={"ContentType": content_type},
                   Config=transfer_config(settings), Callback=progress)
    upload = Upload.from_head(settings.upload_bucket, key, s3.head_object(Bucket=settings.upload_bucket, Key=key))
    return {"asset_id": upload.asset_id, **upload.to_dict()}


def caption_sidecar(caption: Path, key: str) -> str:
    """The sidecar key of caption file ``caption`` (``talk.en.vtt``) for the video ``key``.

    Raises:
        PixelFlowError: ``invalid_captions`` when it is no file, or its name has no known
            language and format.
    """
    stem, _, fmt = caption.name.rpartition(".")
    language = stem.rpartition(".")[2] if "." in stem else ""
    if not caption.is_file() or fmt.lower() not in FORMATS or not language:
        raise PixelFlowError(ErrorCode.INVALID_CAPTIONS, f"{caption} must be a caption file named "
                             "NAME.<language>.vtt or .srt (e.g. talk.en.vtt).", {"file": caption.name})
    return sidecar_key(key, caption_language(language, caption.name), fmt.lower())


def wait_for(asset_id: str, settings: PixelFlowSettings, s3, timeout: float,
             interval: float = POLL_SECONDS) -> assets.AssetInfo | None:
    """Poll until the asset is ready, rejected or failed; ``None`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        info = assets.published_or_rejected(asset_id, settings, s3)
        if info is not None:
            return info
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return EXIT_USAGE
    settings = PixelFlowSettings()
    key = args.key or path.name
    try:
        sidecars = [(caption, caption_sidecar(caption, key)) for caption in args.captions]
    except PixelFlowError as error:
        print(f"error [{error.code.value}]: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    s3 = s3_client()
    progress = ProgressBar(path.stat().st_size, sys.stderr)
    try:
        for caption, caption_key in sidecars:  # before the video: its run reads them when it starts
            s3.upload_file(str(caption), settings.upload_bucket, caption_key)
        uploaded = upload_file(path, key, settings, s3, progress)
    except (ClientError, BotoCoreError, OSError) as exc:
        return fail(args, PixelFlowError(ErrorCode.STORAGE_ERROR, f"Uploading {path.name} failed: {exc}"))
    finally:
        progress.finish()
    asset_id = uploaded["asset_id"]
    as_json = getattr(args, "json", False)
    if not args.wait:
        if as_json:
            print(json.dumps({**uploaded, "status": assets.PROCESSING}, indent=2))
        else:
            print(f"uploaded s3://{uploaded['bucket']}/{key}")
            print(f"asset    {asset_id}")
            print(f"follow   pixelflow status {asset_id}")
        return EXIT_OK

    print(f"uploaded s3://{uploaded['bucket']}/{key} -> asset {asset_id}; waiting for it...", file=sys.stderr)
    try:
        info = wait_for(asset_id, settings, s3, args.timeout)
    except (ClientError, BotoCoreError) as exc:
        return fail(args, PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the buckets failed: {exc}"))
    if info is None:
        message = f"Asset {asset_id} is still processing after {args.timeout:g} s."
        if as_json:
            print(json.dumps({**uploaded, "status": assets.PROCESSING, "code": "wait_timeout", "message": message}, indent=2))
        else:
            print(f"error [wait_timeout]: {message}", file=sys.stderr)
        return EXIT_FAILED
    if info.source is None:
        info.source = {k: uploaded[k] for k in ("bucket", "key", "etag", "version_id")}
    if as_json:
        print(json.dumps(info.to_dict(), indent=2, default=str))
    else:
        print(describe(info, settings))
    return EXIT_OK if info.status == assets.READY else EXIT_FAILED
