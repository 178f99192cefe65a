"""Tasks that read the uploaded object: look it up, download it, probe and validate it."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botocore.exceptions import ClientError
from prefect import get_run_logger, task

from pixelflow.pipeline import ffmpeg
from pixelflow.aws import is_missing, s3_client
from pixelflow.core.probe import SourceInfo, interpret_probe
from pixelflow.core.upload import Upload
from pixelflow.core.validation import Limits, check_size, validate_source
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient


def _storage_error(action: str, exc: ClientError) -> PixelFlowError:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if is_missing(exc):
        return PixelFlowError(ErrorCode.SOURCE_NOT_FOUND, "The uploaded object no longer exists.", {"action": action})
    return PixelFlowError(ErrorCode.STORAGE_ERROR, f"S3 {action} failed: {code or status}.", {"action": action, "code": code})


@task(name="inspect-upload", task_run_name="inspect-upload", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def inspect_source(upload: Upload) -> Upload:
    """HEAD the uploaded object: the upload as S3 has it now (size, ETag and version), before
    anything is downloaded."""
    extra = {"VersionId": upload.version_id} if upload.version_id else {}
    try:
        head = s3_client().head_object(Bucket=upload.bucket, Key=upload.key, **extra)
    except ClientError as exc:
        raise _storage_error("HeadObject", exc) from None
    found = Upload.from_head(upload.bucket, upload.key, head)
    if found.version_id is None and upload.version_id:
        found = Upload(found.bucket, found.key, found.etag, upload.version_id, found.size)
    return found


@task(name="check-upload", task_run_name="check-upload")
def check_upload(source: Upload, limits: Limits) -> None:
    """Reject by size before spending any transfer or compute."""
    check_size(source.size or 0, limits)


@task(name="download", task_run_name="download", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def download_source(source: Upload, dest: Path, headroom: float = 2.5, chunk_mb: int = 16,
                    concurrency: int = 8) -> Path:
    """Stream the object to local scratch space in parallel ranged GETs (never the whole file in
    memory), after checking there is room for it and the renditions. Every GET is pinned to the
    revision ``inspect-upload`` saw: an upload overwritten meanwhile fails with
    ``source_changed``, never mixing two uploads under one asset id."""
    logger = get_run_logger()
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    needed = int((source.size or 0) * headroom)
    if free < needed:
        raise PixelFlowError(
            ErrorCode.INSUFFICIENT_DISK,
            f"Scratch space has {free} bytes free; {needed} are needed for this upload.",
            {"free": free, "needed": needed},
        )
    partial = dest.with_name(dest.name + ".part")
    try:
        _download_pinned(s3_client(), source, partial, chunk_mb * 1024**2, concurrency)
    except ClientError as exc:
        partial.unlink(missing_ok=True)
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            raise PixelFlowError(ErrorCode.SOURCE_CHANGED,
                                 f"{source.uri} was overwritten while it was being read (ETag {source.etag}); the "
                                 "newer upload is processed by its own run.") from None
        raise _storage_error("GetObject", exc) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    got = partial.stat().st_size
    if got != source.size:
        partial.unlink(missing_ok=True)
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Downloaded {got} bytes of {source.size}.")
    partial.rename(dest)
    logger.info("downloaded s3://%s/%s (%d bytes)", source.bucket, source.key, got)
    return dest


def _download_pinned(s3, source: Upload, path: Path, chunk: int, concurrency: int) -> None:
    """Read exactly the object ``inspect-upload`` saw into ``path``: every GET names its version
    (versioned buckets) or carries ``If-Match`` with its ETag, so an overwrite while reading fails
    with ``PreconditionFailed`` instead of mixing two uploads. Parts of ``chunk`` bytes are read in
    parallel and written at their offsets; nothing is held in memory whole."""
    size = source.size or 0
    pin = {"VersionId": source.version_id} if source.version_id else {"IfMatch": f'"{source.etag}"'} if source.etag else {}
    ranges = [(start, min(start + chunk, size)) for start in range(0, size, chunk)] or [(0, 0)]
    with open(path, "wb") as handle:
        handle.truncate(size)
    fd = os.open(path, os.O_WRONLY)

    def fetch(span: tuple[int, int]) -> None:
        start, end = span
        extra = {"Range": f"bytes={start}-{end - 1}"} if len(ranges) > 1 else {}
        offset = start
        body = s3.get_object(Bucket=source.bucket, Key=source.key, **pin, **extra)["Body"]
        try:
            for part in body.iter_chunks(1 << 20):
                os.pwrite(fd, part, offset)
                offset += len(part)
        finally:
            body.close()
        if offset != end:
            raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Read {offset - start} bytes of the {end - start} asked for.")

    try:
        with ThreadPoolExecutor(max(1, min(concurrency, len(ranges)))) as pool:
            list(pool.map(fetch, ranges))
    finally:
        os.close(fd)


@task(name="validate", task_run_name="validate")
def validate(path: Path, size: int, limits: Limits, memory_bytes: int | None = None, sandbox: str = "auto") -> SourceInfo:
    """Probe the local copy's headers with ffprobe (demuxers limited to the allow-list, file
    protocol only, ``memory_bytes`` of address space, no network as ``sandbox`` says) and check
    it is a video (or an audio-only recording) PixelFlow can transcode, within the work budget,
    before any frame is decoded."""
    data = ffmpeg.probe(str(path), formats=sorted(limits.containers | limits.audio_containers),
                        memory_bytes=memory_bytes or None, sandbox=sandbox)
    info = interpret_probe(data, size=size)
    validate_source(info, limits)
    get_run_logger().info("source: %s", info.summary())
    return info
