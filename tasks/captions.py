"""The caption tasks: the upload's caption sidecars (``talk.en.vtt`` beside ``talk.mp4``), read
from the upload bucket, validated and converted to WebVTT before anything is encoded
(``captions``), and the sidecars sent after their video attached to its published asset
(``attach-captions``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pixelflow.aws import MAX_JSON_BYTES, is_missing, s3_client
from pixelflow.core.captions import (GROUP_ID, Captions, caption_revision, captions_read, invalid, load_captions,
                                     merge_subtitles, sidecar_of, sidecar_prefix)
from pixelflow.core.layout import MANIFEST, MASTER, in_folder
from pixelflow.core.manifest import master_from_manifest, object_headers
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient
from tasks.publish import put_master

#: Attempts at replacing the manifest when other attaches keep replacing it first (``If-Match``).
REPLACE_ATTEMPTS = 8


def _sidecars(s3, source: Upload) -> list[dict[str, Any]]:
    """The listing entries of the upload's sidecars, sorted by key."""
    found = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket,
                                                                 Prefix=sidecar_prefix(source.key)):
            found += [obj for obj in page.get("Contents", []) if sidecar_of(source.key, obj["Key"])]
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Listing the caption files failed: {exc}") from None
    return sorted(found, key=lambda obj: obj["Key"])


def _load(s3, source: Upload, obj: dict[str, Any], duration: float, max_bytes: int, max_cues: int) -> Captions:
    """One sidecar read (never more than ``max_bytes`` + 1 bytes), validated and converted."""
    name = obj["Key"].rsplit("/", 1)[-1]
    if obj["Size"] > max_bytes:  # never downloaded
        raise invalid(name, "too_large", f"{obj['Size']} bytes; the largest accepted is {max_bytes} "
                      "(PIXELFLOW_CAPTIONS_MAX_BYTES)")
    try:
        response = s3.get_object(Bucket=source.bucket, Key=obj["Key"], Range=f"bytes=0-{max_bytes}")
        data = response["Body"].read(max_bytes + 1)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading {name} failed: {exc}") from None
    return load_captions(obj["Key"], source.key, data, duration, max_bytes=max_bytes, max_cues=max_cues,
                         etag=response.get("ETag"))


def _too_many(found: list[dict[str, Any]], count: int, max_languages: int) -> PixelFlowError:
    return invalid(found[0]["Key"].rsplit("/", 1)[-1], "too_many_files",
                   f"{count} caption files; at most {max_languages} (PIXELFLOW_CAPTIONS_MAX_LANGUAGES)")


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
    found = _sidecars(s3, source)
    if len(found) > max_languages:
        raise _too_many(found, len(found), max_languages)
    captions: dict[str, Captions] = {}
    for obj in found:
        loaded = _load(s3, source, obj, duration, max_bytes, max_cues)
        if loaded.language in captions:
            raise invalid(obj["Key"].rsplit("/", 1)[-1], "duplicate_language", f"a second caption file in "
                          f"{loaded.language} (also {captions[loaded.language].source_key.rsplit('/', 1)[-1]})")
        captions[loaded.language] = loaded
    if captions:
        get_run_logger().info("captions: %s", ", ".join(f"{c.language} ({c.source_key})" for c in captions.values()))
    return list(captions.values())


def _manifest(s3, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The published manifest and its ETag, or ``None`` when the asset is not published."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the manifest failed: {exc}") from None
    if response["ContentLength"] > MAX_JSON_BYTES:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"The manifest is larger than {MAX_JSON_BYTES} bytes.")
    return json.loads(response["Body"].read()), response["ETag"]


def _settle_master(s3, bucket: str, prefix: str, manifest: dict[str, Any], etag: str) -> None:
    """Write the master playlist of ``manifest`` (whose ETag is ``etag``), then check that the
    manifest is still that one; if another writer replaced it meanwhile, write the master playlist
    of the new one too. Every writer checking after its own write, the last master playlist
    written is always the current manifest's, whatever order the writes land in."""
    for _ in range(REPLACE_ATTEMPTS):
        put_master(s3, bucket, prefix, master_from_manifest(manifest).encode())
        current = _manifest(s3, bucket, f"{prefix}{MANIFEST}")
        if current is None or current[1] == etag:
            return
        manifest, etag = current


def _master_matches(s3, bucket: str, prefix: str, manifest: dict[str, Any]) -> bool:
    try:
        master = s3.get_object(Bucket=bucket, Key=f"{prefix}{MASTER}")["Body"].read()
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the master playlist failed: {exc}") from None
    return master == master_from_manifest(manifest).encode()


@task(name="attach-captions", task_run_name="attach-captions", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def attach_captions(source: Upload, bucket: str, prefix: str, folder: str, max_bytes: int, max_cues: int,
                    max_languages: int) -> dict[str, Any]:
    """Attach to the published asset of ``source`` the sidecars it has not taken into account yet
    (sent after the video, or while its run was going).

    Each new sidecar is validated on its own against the asset's duration; the valid ones are
    written into ``folder`` (this attempt's own folder of the asset), then ``manifest.json`` is
    replaced on the condition that it is still the one read (``If-Match`` on its ETag), then the
    master playlist is written from it (:func:`_settle_master`). A manifest replaced meanwhile
    (another attach) is read again and the work redone on it, so no attach loses another's
    captions; with nothing to attach to a manifest an attach wrote, a master playlist that is not
    that manifest's (written from an older one by a run repairing the asset) is written again. A language the asset
    has is replaced (its old files stay, named by no manifest); a file the asset already took
    into account (published, or replaced since) is never attached again.

    Returns:
        ``{"status", "manifest", "attached", "errors"}``: ``status`` is ``not_published`` (the
        video's run attaches what it finds once it has published), ``unchanged`` (nothing new,
        or only invalid files), or ``attached``; ``attached`` the languages attached;
        ``errors`` each invalid file's ``{code, message, details, revision}`` (``invalid_captions``;
        nothing of it is published and the asset is left as it was).
    """
    if max_languages <= 0:
        return {"status": "unchanged", "manifest": None, "attached": [], "errors": []}
    s3, logger = s3_client(), get_run_logger()
    for _ in range(REPLACE_ATTEMPTS):
        found = _manifest(s3, bucket, f"{prefix}{MANIFEST}")
        if found is None:
            return {"status": "not_published", "manifest": None, "attached": [], "errors": []}
        manifest, etag = found
        duration = float(manifest.get("duration") or 0)
        read = captions_read(manifest)
        pending = [obj for obj in _sidecars(s3, source) if caption_revision(obj["Key"], obj["ETag"]) not in read]
        pending.sort(key=lambda obj: (obj["LastModified"], obj["Key"]))  # the later file of a language wins
        loaded, errors = [], []
        for obj in pending:
            try:
                loaded.append(_load(s3, source, obj, duration, max_bytes, max_cues))
            except PixelFlowError as error:
                if error.code != ErrorCode.INVALID_CAPTIONS:
                    raise
                errors.append({**error.to_dict(), "revision": caption_revision(obj["Key"], obj["ETag"])})
        subtitles = merge_subtitles(manifest.get("subtitles") or [], [
            {**c.entry(duration, False), "file": in_folder(folder, c.file),
             "playlist": in_folder(folder, c.playlist), "group_id": GROUP_ID} for c in loaded])
        if len(subtitles) > max_languages:
            errors.append(_too_many(pending, len(subtitles), max_languages).to_dict())
            loaded = []
        if not loaded:
            if "captions_read" in manifest and not _master_matches(s3, bucket, prefix, manifest):
                _settle_master(s3, bucket, prefix, manifest, etag)
            return {"status": "unchanged", "manifest": manifest, "attached": [], "errors": errors}
        written = {}
        for caption in {c.language: c for c in loaded}.values():
            written.update({in_folder(folder, path): body
                            for path, body in caption.files(duration).items()})
        for path, body in written.items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}{path}", Body=body, **object_headers(path))
        updated = {**manifest, "subtitles": subtitles,
                   "captions_read": sorted(read | {caption_revision(c.source_key, c.source_etag) for c in loaded}),
                   "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        master = master_from_manifest(updated).encode()
        updated["object_sizes"] = {**manifest.get("object_sizes", {}), MASTER: len(master)}
        body = json.dumps(updated, indent=2, sort_keys=True).encode()
        try:
            replaced = s3.put_object(Bucket=bucket, Key=f"{prefix}{MANIFEST}", Body=body, IfMatch=etag,
                                     **object_headers(MANIFEST))
        except ClientError as exc:
            # replaced meanwhile (412, 409), or withdrawn (404: its run rebuilds the asset and reads the sidecars)
            if exc.response.get("Error", {}).get("Code", "") not in ("PreconditionFailed", "ConditionalRequestConflict",
                                                                     "412", "409", "NoSuchKey", "404"):
                raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Replacing the manifest failed: {exc}") from None
            logger.info("the manifest of asset %s was replaced meanwhile; reading it again", manifest["asset_id"])
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}{p}"} for p in written],
                                                     "Quiet": True})
            continue
        _settle_master(s3, bucket, prefix, updated, replaced["ETag"])
        attached = sorted({c.language for c in loaded})
        logger.info("attached captions %s to asset %s", ", ".join(attached), manifest["asset_id"])
        return {"status": "attached", "manifest": updated, "attached": attached, "errors": errors}
    raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"The manifest kept changing: {REPLACE_ATTEMPTS} attempts at "
                         "attaching the captions lost to other writers.")
