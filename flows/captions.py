"""The ``attach-captions`` flow: a caption file uploaded after its video (``talk.en.vtt`` beside
the published ``talk.mp4``) is attached to the video's asset, without a transcode.

The bridge forwards a caption object as a ``pixelflow.captions.created`` event; the
``attach-captions`` deployment's trigger (prefect.yaml) starts this flow with it. It finds the
caption's video beside it in the upload bucket (``find-videos``), HEADs it for its asset id
(``inspect-upload``) and attaches to its published asset every sidecar the asset has not taken
into account yet (``attach-captions``: validated, written into this attempt's own folder, the
manifest replaced under ``If-Match``, then the master playlist). The asset's record follows and
``video.asset.updated`` is sent.

When the caption file arrives first, or while the video's run is going, there is nothing to
attach to yet: the video's run reads the sidecars before encoding, and once more right after
it published its manifest (:func:`late_captions`), so a caption file is in the first
publication or attached right after it, never lost.

Example:
    Attach ``talks/talk.en.vtt`` to the published asset of ``talks/talk.mp4`` in-process::

        from flows.captions import attach_captions_flow
        attach_captions_flow(bucket="pixelflow-uploads", key="talks/talk.en.vtt")
"""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger, task
from prefect.context import get_run_context
from prefect.states import Completed, Failed

from pixelflow.aws import s3_client
from pixelflow.core.captions import caption_videos, captions_read, is_caption_key, videos_prefix
from pixelflow.core.layout import attempt_folder
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.records import record_asset_update
from pixelflow.settings import PixelFlowSettings
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient
from tasks.captions import attach_captions
from tasks.source import inspect_source


@task(name="find-videos", task_run_name="find-videos", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def find_videos(bucket: str, caption_key: str) -> list[str]:
    """The videos beside ``caption_key`` in the upload bucket that it is a sidecar of."""
    keys = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                          Prefix=videos_prefix(caption_key)):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Listing the caption's videos failed: {exc}") from None
    return caption_videos(caption_key, keys)


def _revision(result: dict[str, Any]) -> str:
    """What makes this change of the asset distinct: the caption files it took into account,
    or the ones it refused (the same change is the same ``video.asset.updated`` event)."""
    if result["status"] == "attached":
        material = sorted(captions_read(result["manifest"]))
    else:
        material = ["refused"] + sorted(e.get("revision", "") for e in result["errors"])
    return "captions:" + hashlib.sha256("\x00".join(material).encode()).hexdigest()[:16]


def late_captions(settings: PixelFlowSettings, source: Upload, folder: str) -> dict[str, Any]:
    """Attach the sidecars of ``source`` its published asset has not taken into account
    (``attach-captions``, writing into ``folder``), then record the change and send
    ``video.asset.updated`` (also for refused files: the record's ``errors`` says why).

    Returns:
        The ``attach-captions`` result (``status``, ``manifest``, ``attached``, ``errors``).
    """
    from flows.transcode import _emit, _retried

    layout = settings.layout(source.asset_id)
    result = _retried(attach_captions, settings)(source, settings.output_bucket, layout.prefix, folder,
                                                 settings.captions_max_bytes, settings.captions_max_cues,
                                                 settings.captions_max_languages)
    if result["status"] != "attached" and not result["errors"]:
        return result
    error = result["errors"][0] if result["errors"] else None
    manifest = result["manifest"] if result["status"] == "attached" else None
    try:
        record_asset_update(settings, source, _revision(result), manifest=manifest, error=error)
    except Exception as exc:  # noqa: BLE001 - the index lags; the reconciler repairs it from S3
        get_run_logger().warning("could not record the captions of asset %s (%s: %s)", source.asset_id,
                                 type(exc).__name__, exc)
    _emit("pixelflow.asset.updated", source, {
        "status": "ready", "attached": result["attached"],
        "subtitles": [s["language"] for s in (result["manifest"] or {}).get("subtitles") or []],
        "errors": [{k: e.get(k) for k in ("code", "message")} for e in result["errors"]]})
    return result


def _run_name() -> str:
    return f"attach-captions: {get_run_context().flow_run.parameters.get('key', '?')}"


@flow(name="attach-captions", flow_run_name=_run_name, validate_parameters=True)
def attach_captions_flow(bucket: str, key: str, etag: str | None = None, version_id: str | None = None) -> Any:
    """Attach a caption file uploaded after its video to the video's published asset.

    Args:
        bucket: The upload bucket.
        key: The caption object's key (``talks/talk.en.vtt``).
        etag: The ETag its event reported (the flow reads what S3 has now).
        version_id: Its version, when the bucket is versioned.

    Returns:
        ``{"status", "assets"}``: per video, its asset id, ``status`` and the languages attached.
        A refused caption file fails the run with ``invalid_captions: <message>`` (calling the
        flow raises that :class:`PixelFlowError`); its asset is left as it was.
    """
    from flows.transcode import _retried

    settings = PixelFlowSettings()
    logger = get_run_logger()
    if not is_caption_key(key):
        return Completed(message=f"{key} is not a caption file.", data={"status": "ignored", "key": key})
    videos = _retried(find_videos, settings)(bucket, key)
    if not videos:
        message = f"No video beside {key} yet: its video's run reads it."
        logger.info(message)
        return Completed(message=message, data={"status": "no_video", "key": key})
    run = get_run_context().flow_run
    folder = attempt_folder(str(run.id), run.run_count)
    results, errors = [], []
    for video in videos:
        source = _retried(inspect_source, settings)(Upload(bucket, video))
        result = late_captions(settings, source, folder)
        results.append({"asset_id": source.asset_id, "video": video, "status": result["status"],
                        "attached": result["attached"]})
        errors += result["errors"]
        if result["status"] == "not_published":
            logger.info("asset %s of %s is not published yet: its run attaches %s once it is", source.asset_id,
                        video, key)
    data = {"status": "attached" if any(r["attached"] for r in results) else results[0]["status"], "assets": results}
    if errors:
        error = PixelFlowError(ErrorCode(errors[0]["code"]), errors[0]["message"], errors[0].get("details") or {})
        logger.error("%s (asset left as it was)", error)
        return Failed(message=str(error), data=error)
    return Completed(message=f"{key}: {data['status']}", data=data)

