"""The ``captions`` task: the upload's caption sidecars (``talk.en.vtt`` beside ``talk.mp4``),
read from the upload bucket, validated and converted to WebVTT before anything is encoded."""

from __future__ import annotations

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pixelflow.aws import s3_client
from pixelflow.core.captions import Captions, invalid, load_captions, sidecar_of, sidecar_prefix
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient


@task(name="captions", task_run_name="captions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_captions(source: Upload, duration: float, max_bytes: int, max_cues: int, max_languages: int) -> list[Captions]:
    """Every sidecar of the upload, validated: one per language, sorted by key.

    Args:
        source: The upload (its bucket and key).
        duration: The video's duration in seconds (no cue may start after it).
        max_bytes: Largest accepted caption file (``PIXELFLOW_CAPTIONS_MAX_BYTES``).
        max_cues: Most cues of one file (``PIXELFLOW_CAPTIONS_MAX_CUES``).
        max_languages: Most caption files (``PIXELFLOW_CAPTIONS_MAX_LANGUAGES``; 0: none are read).

    Raises:
        PixelFlowError: ``invalid_captions`` for the first bad file (the whole upload is
            rejected: nothing is published), ``storage_error`` when S3 fails.
    """
    if max_languages <= 0:
        return []
    s3 = s3_client()
    found = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket,
                                                                 Prefix=sidecar_prefix(source.key)):
            found += [obj for obj in page.get("Contents", []) if sidecar_of(source.key, obj["Key"])]
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Listing the caption files failed: {exc}") from None
    found.sort(key=lambda obj: obj["Key"])
    if len(found) > max_languages:
        raise invalid(found[0]["Key"].rsplit("/", 1)[-1], "too_many_files",
                      f"{len(found)} caption files; at most {max_languages} (PIXELFLOW_CAPTIONS_MAX_LANGUAGES)")
    captions: dict[str, Captions] = {}
    for obj in found:
        name = obj["Key"].rsplit("/", 1)[-1]
        if obj["Size"] > max_bytes:  # never downloaded
            raise invalid(name, "too_large", f"{obj['Size']} bytes; the largest accepted is {max_bytes} "
                          "(PIXELFLOW_CAPTIONS_MAX_BYTES)")
        try:
            body = s3.get_object(Bucket=source.bucket, Key=obj["Key"], Range=f"bytes=0-{max_bytes}")["Body"]
            data = body.read(max_bytes + 1)
        except ClientError as exc:
            raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading {name} failed: {exc}") from None
        loaded = load_captions(obj["Key"], source.key, data, duration, max_bytes=max_bytes, max_cues=max_cues)
        if loaded.language in captions:
            raise invalid(name, "duplicate_language", f"a second caption file in {loaded.language} "
                          f"(also {captions[loaded.language].source_key.rsplit('/', 1)[-1]})")
        captions[loaded.language] = loaded
    if captions:
        get_run_logger().info("captions: %s", ", ".join(f"{c.language} ({c.source_key})" for c in captions.values()))
    return list(captions.values())
