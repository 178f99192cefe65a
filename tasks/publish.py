"""Tasks that write to the production bucket: renditions as they finish, then the asset, and the
one listing that tells which of an asset's objects are really there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from prefect import get_run_logger, task

from pixelflow.aws import is_missing, read_json_object, s3_client
from pixelflow.core.layout import MANIFEST, MASTER, in_folder, manifest_objects, missing_objects
from pixelflow.core.manifest import RenditionOutput, master_from_manifest, object_headers
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient


def rendition_cache_key(context, parameters: dict[str, Any]) -> str:
    """A published rendition is identified by asset, rung and ``fingerprint`` (a hash of what
    the upload depends on: output bucket and endpoint, the asset's prefix, the ladder and
    encoder settings): never by a local path, so a retried run in a fresh container finds it.

    A record under this key is only a claim: the flow trusts it for a rendition only when one
    listing of the asset's prefix shows every object the record names, with its size.
    """
    return f"pixelflow-rendition-{parameters['asset_id']}-{parameters['name']}-{parameters['fingerprint']}"


def _upload(s3, local: Path, bucket: str, key: str, config: TransferConfig) -> None:
    s3.upload_file(str(local), bucket, key, ExtraArgs=object_headers(key), Config=config)


def _transfer_config() -> TransferConfig:
    return TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=16 * 1024**2, max_concurrency=8)


@task(name="fetch-rendition", task_run_name="fetch-{output.name}", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def fetch_rendition(output: RenditionOutput, local_root: Path, bucket: str, prefix: str) -> RenditionOutput:
    """Download a rendition an earlier attempt published into ``local_root`` (for an MP4
    download remuxed from it)."""
    s3 = s3_client()
    config = _transfer_config()
    try:
        for relative in output.files:
            (local_root / relative).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, f"{prefix}{relative}", str(local_root / relative), Config=config)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Downloading the published {output.name} failed: {exc}") from None
    return output


@task(name="upload-mp4", task_run_name="upload-mp4-{name}", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def publish_download(name: str, local: Path, bucket: str, key: str, disposition: str) -> int:
    """Upload one MP4 download, saved by browsers under the name ``disposition`` gives. Returns
    its size."""
    try:
        s3_client().upload_file(str(local), bucket, key, Config=_transfer_config(),
                                ExtraArgs={**object_headers(key), "ContentDisposition": disposition})
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Uploading the {name} MP4 failed: {exc}") from None
    return local.stat().st_size


@task(name="upload-rendition", task_run_name="upload-{name}", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_key_fn=rendition_cache_key, persist_result=True)
def publish_rendition(name: str, output: RenditionOutput | None, local_root: Path, bucket: str, prefix: str,
                      asset_id: str, fingerprint: str, folder: str = "") -> RenditionOutput:
    """Upload one finished rendition (segments first, its playlist last) into ``folder``, the
    attempt's own folder of the asset, and return it as published there. The asset stays
    invisible to clients until its manifest is written. Cached by asset, rung and ladder
    settings: a retried run skips renditions an earlier attempt published, and names them where
    that attempt put them."""
    if output is None:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"The {name} rendition was expected to be published already.")
    s3 = s3_client()
    config = _transfer_config()
    try:
        for relative in output.files:
            _upload(s3, local_root / relative, bucket, f"{prefix}{in_folder(folder, relative)}", config)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Uploading {output.name} failed: {exc}") from None
    placed = output.placed(folder)
    get_run_logger().info("published %s (%d files) to s3://%s/%s%s", output.name, len(output.files), bucket, prefix,
                          placed.playlist.rsplit("/", 1)[0] + "/")
    return placed


def _list_prefix(s3, bucket: str, prefix: str) -> dict[str, int]:
    listed: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            listed[obj["Key"][len(prefix):]] = obj["Size"]
    return listed


@task(name="list-asset", task_run_name="list-asset", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def list_asset(bucket: str, prefix: str) -> dict[str, int]:
    """Every object under the asset's prefix (path inside the asset -> size): what is really
    published, whatever a result store remembers."""
    try:
        return _list_prefix(s3_client(), bucket, prefix)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Listing the asset failed: {exc}") from None


@task(name="find-published", task_run_name="find-published", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def find_published(bucket: str, prefix: str) -> dict[str, Any] | None:
    """The manifest of an already published asset, or ``None``."""
    try:
        found = read_json_object(s3_client(), bucket, f"{prefix}{MANIFEST}")
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the manifest failed: {exc}") from None
    return found[0] if found else None


@task(name="withdraw-broken-asset", task_run_name="withdraw-broken-asset", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def withdraw_manifest(bucket: str, prefix: str, missing: list[str]) -> None:
    """Remove the manifest (and master playlist) of a published asset whose objects are missing,
    so clients stop seeing it as ready while the run rebuilds it."""
    s3 = s3_client()
    try:
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}{MANIFEST}"},
                                                                        {"Key": f"{prefix}master.m3u8"}], "Quiet": True})
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Withdrawing the broken manifest failed: {exc}") from None
    if response.get("Errors"):
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Withdrawing the broken manifest failed: {response['Errors']}")
    get_run_logger().warning("the published asset at s3://%s/%s lacks %d objects (%s); withdrawn to be rebuilt",
                             bucket, prefix, len(missing), ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))


@task(name="publish-asset", task_run_name="publish-asset", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def publish_asset(files: dict[str, bytes | Path], manifest: dict[str, Any], bucket: str, prefix: str,
                  folder: str = "") -> dict[str, Any]:
    """Upload the images, the storyboard's WebVTT and the captions (``files``, by path inside
    the asset, all in the attempt's ``folder``), check that every object the manifest names is in
    place, write ``manifest.json``, then the master playlist: an asset is visible (ready) only
    once it is whole, and written once.

    The check is one listing of the asset's prefix against the manifest's objects and sizes; an
    object missing there (removed meanwhile, or a rendition wrongly taken as published) fails
    the task with ``asset_incomplete`` and the missing paths in ``details["missing"]``, and no
    manifest is written. The manifest is written with ``If-None-Match: *``, so of two runs racing
    on one asset exactly one publishes it; the other finds it published, removes what it wrote
    in its own folder that the published manifest does not name, writes the master playlist if
    it is still missing, and returns that manifest."""
    s3 = s3_client()
    master = master_from_manifest(manifest).encode()
    manifest = dict(manifest)
    sizes = {MASTER: len(master)}
    for relative, content in files.items():
        key = f"{prefix}{relative}"
        if isinstance(content, Path):
            _upload(s3, content, bucket, key, _transfer_config())
            sizes[relative] = content.stat().st_size
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=content, **object_headers(key))
            sizes[relative] = len(content)
    manifest["object_sizes"] = {**manifest.get("object_sizes", {}), **sizes}
    expected = {path: size for path, size in manifest_objects(manifest).items() if path != MASTER}
    listed = _list_prefix(s3, bucket, prefix)
    missing = missing_objects(expected, listed)
    if missing:
        raise PixelFlowError(ErrorCode.ASSET_INCOMPLETE,
                             f"{len(missing)} objects of asset {manifest['asset_id']} are not in the bucket; "
                             "no manifest was written.", {"missing": missing})
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    try:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{MANIFEST}", Body=body, IfNoneMatch="*", **object_headers(MANIFEST))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            existing = read_json_object(s3, bucket, f"{prefix}{MANIFEST}")[0]
            removed = _remove_unnamed(s3, bucket, prefix, existing, [f"{folder}/{path}" for path in
                                                                     _list_prefix(s3, bucket, f"{prefix}{folder}/")])
            # the run whose manifest this is may have stopped before its master playlist (this
            # run's own earlier try, when S3 failed the answer to a write it carried out)
            if not _exists(s3, bucket, f"{prefix}{MASTER}"):
                put_master(s3, bucket, prefix, master_from_manifest(existing).encode())
            get_run_logger().info("asset %s was published by another run meanwhile; removed the %d objects this "
                                  "attempt wrote that it does not name", manifest["asset_id"], removed)
            return existing
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Writing the manifest failed: {exc}") from None
    put_master(s3, bucket, prefix, master)
    get_run_logger().info("published asset %s: s3://%s/%s%s", manifest["asset_id"], bucket, prefix, MASTER)
    # What earlier attempts left and the asset does not name (a failed attempt's partial
    # rendition, a rebuilt asset's old objects) is removed; an attempt still writing loses the
    # manifest's race and removes the rest of its own.
    try:  # the asset is published: what is left over only costs storage, never a failed run
        removed = _remove_unnamed(s3, bucket, prefix, manifest, listed)
        if removed:
            get_run_logger().info("removed %d objects of earlier attempts that asset %s does not name", removed,
                                  manifest["asset_id"])
    except (ClientError, PixelFlowError) as exc:
        get_run_logger().warning("could not remove the objects asset %s does not name: %s", manifest["asset_id"], exc)
    return manifest


def put_master(s3, bucket: str, prefix: str, master: bytes, growing: bool = False) -> None:
    """Write the asset's master playlist (derived from its manifest by the caller, or, while a
    progressive asset is ``growing``, from what is published of it)."""
    try:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{MASTER}", Body=master, **object_headers(MASTER, growing))
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Writing the master playlist failed: {exc}") from None


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise
    return True


def _remove_unnamed(s3, bucket: str, prefix: str, manifest: dict[str, Any], paths) -> int:
    """Delete, of ``paths`` (inside the asset at ``prefix``), the objects ``manifest`` does not
    name, besides the manifest itself and the master playlist: what an attempt that lost the
    race wrote, or what earlier attempts left. Returns how many."""
    named = set(manifest_objects(manifest)) | {MANIFEST, MASTER}
    keys = [f"{prefix}{path}" for path in paths if path not in named]
    for start in range(0, len(keys), 1000):
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                            "Quiet": True})
        if response.get("Errors"):
            raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Removing {len(response['Errors'])} objects of the asset "
                                 f"that it does not name failed: {response['Errors'][:3]}")
    return len(keys)


@task(name="restore-master", task_run_name="restore-master", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def restore_master(manifest: dict[str, Any], bucket: str, prefix: str) -> None:
    """Write the master playlist of a published asset whose run stopped between its manifest and
    its master playlist: the same bytes that run would have written (a function of the manifest)."""
    put_master(s3_client(), bucket, prefix, master_from_manifest(manifest).encode())
    get_run_logger().info("restored the master playlist of asset %s", manifest.get("asset_id"))
