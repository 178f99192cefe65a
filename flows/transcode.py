"""The ``transcode`` flow: one uploaded object becomes a published HLS asset, or a recorded
rejection.

Steps, each a Prefect task run visible in the UI: inspect the upload (HEAD), check its size,
download it, validate it (ffprobe of the headers), decode it once (``encode-ladder``: one FFmpeg
process encoding every rung, the audio and the poster; or, with ``PIXELFLOW_ENGINE=fanout``,
``decode`` feeding one encoder process per rung), one ``transcode-<rung>`` task per rung of the
ladder (plus ``transcode-audio`` and ``poster``), ``upload-<rung>`` as each rendition finishes,
then ``publish-asset`` writes the master playlist and, last, ``manifest.json``.

Example:
    Run one object now, in-process (a Prefect server or ``PREFECT_API_URL`` must be reachable)::

        from flows.transcode import transcode
        manifest = transcode(bucket="pixelflow-uploads", key="cat.mp4")
        print(manifest["asset_id"], manifest["renditions"])
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.futures import wait
from prefect.results import get_result_store
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from pixelflow.aws import s3_endpoint
from pixelflow.core.hls import master_playlist
from pixelflow.core.ids import asset_id as make_asset_id, normalize_etag
from pixelflow.core.ladder import plan_ladder
from pixelflow.core.layout import AssetLayout, manifest_objects, missing_objects, publish_fingerprint
from pixelflow.core.manifest import SourceRef, audio_entry, build_manifest, variant_entry
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.fanout import open_fanout, open_shared
from pixelflow.settings import PixelFlowSettings
from tasks.encode import (decode_source, encode_ladder, ffmpeg_timeout, make_poster, transcode_audio,
                          transcode_rendition)
from tasks.publish import (find_published, list_asset, publish_asset, publish_rendition, rendition_cache_key,
                           withdraw_manifest)
from tasks.records import (encode_percent, progress_recorder, record_asset, wait_reporting_progress,
                           withdraw_deleted)
from tasks.reject import clear_failure_record, error_record, quarantine_source
from tasks.source import SourceObject, check_upload, download_source, inspect_source, validate

FIX_HINTS = {
    ErrorCode.EMPTY_FILE: "Upload the file again; the object was empty.",
    ErrorCode.NOT_MEDIA: "Upload a video file (MP4, MOV, MKV, WebM...).",
    ErrorCode.NO_VIDEO_STREAM: "Upload a file with a video track; audio-only files are not transcoded.",
    ErrorCode.UNSUPPORTED_CONTAINER: "Export the video as MP4 or MOV and upload that.",
    ErrorCode.UNSUPPORTED_CODEC: "Re-encode the video to H.264, HEVC, VP9 or AV1 and upload it again.",
    ErrorCode.TOO_LONG: "Split the video into shorter parts, or raise PIXELFLOW_MAX_DURATION_SECONDS.",
    ErrorCode.TOO_LARGE: "Upload a smaller file, or raise PIXELFLOW_MAX_SOURCE_BYTES.",
    ErrorCode.DIMENSIONS_TOO_LARGE: "Scale the video down (8K at most) and upload it again.",
    ErrorCode.DIMENSIONS_TOO_SMALL: "Upload a larger video.",
    ErrorCode.FRAME_RATE_OUT_OF_RANGE: "Re-encode the video at a normal frame rate (24 to 60 fps).",
    ErrorCode.INVALID_DURATION: "The recording looks unfinished: upload the complete file.",
    ErrorCode.CORRUPT_STREAM: "The file is damaged: export or copy it again and re-upload.",
    ErrorCode.TRUNCATED: "The upload is incomplete: upload the whole file again.",
    ErrorCode.SOURCE_NOT_FOUND: "The object was deleted before it could be processed: upload it again.",
}


def _run_name() -> str:
    params = get_run_context().flow_run.parameters
    return f"transcode: {params.get('key', '?')}"


def _tag_run(tags: list[str]) -> None:
    """Add tags (the asset id) to the current flow run, for filtering in the UI."""
    from prefect.client.orchestration import get_client

    context = get_run_context()
    run = context.flow_run
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, tags=sorted(set(run.tags or []) | set(tags)))
    except Exception:
        get_run_logger().debug("could not tag the flow run", exc_info=True)


def _emit(event: str, asset: str, payload: dict[str, Any]) -> None:
    try:
        emit_event(event=event, resource={"prefect.resource.id": f"pixelflow.asset.{asset}",
                                          "prefect.resource.name": payload.get("key", asset)}, payload=payload)
    except Exception:
        get_run_logger().warning("could not emit %s", event, exc_info=True)


def _asset_table(manifest: dict[str, Any]) -> None:
    rows = [
        {"rendition": r["name"], "resolution": f"{r['width']}x{r['height']}", "bitrate (kbit/s)": round(r["bandwidth"] / 1000),
         "average (kbit/s)": round(r["average_bandwidth"] / 1000), "size (bytes)": r["size"], "segments": r["segments"],
         "duration (s)": r["duration"], "fps": r["frame_rate"]}
        for r in manifest["renditions"]
    ]
    if manifest.get("audio"):
        a = manifest["audio"]
        rows.append({"rendition": "audio", "resolution": "-", "bitrate (kbit/s)": round(a["bandwidth"] / 1000),
                     "average (kbit/s)": round(a["average_bandwidth"] / 1000), "size (bytes)": a["size"],
                     "segments": a["segments"], "duration (s)": a["duration"], "fps": "-"})
    try:
        create_table_artifact(rows, key=f"asset-{manifest['asset_id']}", description="Renditions of the published asset")
        create_markdown_artifact(
            f"### Asset `{manifest['asset_id']}` is ready\n\n"
            f"- master playlist: `{manifest['location']}`\n"
            f"- play it locally: `pixelflow play {manifest['asset_id']}`\n"
            f"- status: `pixelflow status {manifest['asset_id']}`\n",
            key=f"asset-{manifest['asset_id']}-links", description="Where the asset is")
    except Exception:
        get_run_logger().debug("could not create artifacts", exc_info=True)


def _rejection_artifact(error: PixelFlowError, key: str, asset: str) -> None:
    try:
        create_markdown_artifact(
            f"### {'Rejected' if error.is_rejection else 'Failed'}: `{error.code.value}`\n\n"
            f"**{key}** (asset `{asset}`)\n\n{error.message}\n\n"
            f"**What to do:** {FIX_HINTS.get(error.code, 'Retry the run; if it fails again, check the worker logs.')}\n",
            key=f"asset-{asset}-error", description="Why this upload was not published")
    except Exception:
        get_run_logger().debug("could not create the rejection artifact", exc_info=True)


def _published_renditions(asset: str, names: list[str], fingerprint: str, listed: dict[str, int]) -> tuple[set, set]:
    """Which renditions an earlier attempt published: those with a persisted result under this
    fingerprint whose every object the listing shows with its size. A remembered result whose
    objects are gone (another bucket or endpoint, a deletion, a lifecycle rule) is stale: the
    rendition is encoded and uploaded again. Returns ``(done, stale)``."""
    store = get_result_store().update_for_task(publish_rendition)
    done, stale = set(), set()
    for name in names:
        cache_key = rendition_cache_key(None, {"asset_id": asset, "name": name, "fingerprint": fingerprint})
        if not store.exists(cache_key):
            continue
        try:
            output = store.read(cache_key).result
            expected = output.objects() or {f: None for f in output.files}
        except Exception:  # noqa: BLE001 - an unreadable record is as good as none
            stale.add(name)
            continue
        (stale if missing_objects(expected, listed) else done).add(name)
    return done, stale


@flow(name="transcode", flow_run_name=_run_name, task_runner=ThreadPoolTaskRunner(max_workers=16),
      validate_parameters=True)
def transcode(bucket: str, key: str, etag: str | None = None, version_id: str | None = None,
              size: int | None = None) -> dict[str, Any]:
    """Transcode one uploaded object into an adaptive HLS ladder and publish it.

    Args:
        bucket: The upload bucket.
        key: The object key (as stored, not URL-encoded).
        etag: The ETag the upload event reported, when known.
        version_id: The object version, when the bucket is versioned.
        size: The size the upload event reported (informational; the object is checked).

    Returns:
        The published asset's manifest.
    """
    settings = PixelFlowSettings()
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)
    limits = settings.limits()
    config = settings.ladder_config()

    attempt = get_run_context().flow_run.run_count
    if attempt > settings.max_attempts:
        error = PixelFlowError(ErrorCode.TOO_MANY_ATTEMPTS,
                               f"Gave up after {attempt - 1} attempts (PIXELFLOW_MAX_ATTEMPTS={settings.max_attempts}).")
        asset = make_asset_id(bucket, key, etag, version_id)
        _emit("pixelflow.asset.alert", asset, {"asset_id": asset, "bucket": bucket, "key": key,
                                                "code": error.code.value, "message": error.message})
        return _reject(error, asset, bucket, key, etag, version_id, None, flow_run_id, settings, keep=False)

    try:
        source = inspect_source(bucket, key, version_id)
    except PixelFlowError as error:
        asset = make_asset_id(bucket, key, etag, version_id)
        return _reject(error, asset, bucket, key, etag, version_id, None, flow_run_id, settings, keep=False)

    if etag and normalize_etag(etag) != source.etag and not version_id:
        message = (f"s3://{bucket}/{key} was overwritten since this upload (ETag {normalize_etag(etag)} is now "
                   f"{source.etag}); the newer upload is processed by its own run.")
        logger.info(message)
        return Completed(message=message, data={"status": "superseded", "bucket": bucket, "key": key})

    asset = make_asset_id(bucket, key, source.etag, source.version_id)
    _tag_run([f"asset:{asset}"])
    layout = AssetLayout.of(asset, settings.asset_prefix)
    prefix = layout.prefix
    existing = find_published(settings.output_bucket, prefix)
    listed = list_asset(settings.output_bucket, prefix)
    upload = Upload(bucket, key, source.etag, source.version_id, source.size)

    def record(status: str, **fields: Any) -> dict[str, Any]:  # the asset's record (docs/api.md)
        return record_asset(settings.records_table, settings.upload_key_prefix, upload, status,
                            flow_run_id=flow_run_id, **fields)

    if existing is not None:
        broken = missing_objects(manifest_objects(existing), listed)
        if not broken:
            if record("ready", manifest=existing).get("deleted"):
                return _deleted(asset)
            message = f"Asset {asset} is already published; nothing to do."
            logger.info(message)
            return Completed(message=message, data=existing)
        # A manifest naming objects that are gone is not an asset: withdraw it and rebuild.
        withdraw_manifest(settings.output_bucket, prefix, broken)
    # The asset's record: preparing from now on (a deleted asset is not made again).
    if record("preparing", progress=0).get("deleted"):
        return _deleted(asset)

    scratch = Path(settings.scratch_dir) / f"{asset}-{flow_run_id[:8]}"
    info = None
    fanout = None
    try:
        check_upload(source, limits)
        local = download_source(source, scratch / "source", settings.scratch_headroom, settings.multipart_chunk_mb,
                                settings.transfer_concurrency)
        info = validate(local, source.size, limits)
        width, height = info.video.display_size
        plan = plan_ladder(width, height, info.video.frame_rate, config)
        timeout = ffmpeg_timeout(info.duration, settings.ffmpeg_timeout_factor)
        fingerprint = publish_fingerprint(settings.output_bucket, s3_endpoint(), prefix, config)
        logger.info("asset %s: ladder %s", asset, ", ".join(f"{r.name} {r.width}x{r.height}@{float(r.fps):.3g}" for r in plan))

        names = [r.name for r in plan] + (["audio"] if info.audio is not None else [])
        done, stale = _published_renditions(asset, names, fingerprint, listed)
        pending = [r for r in plan if r.name not in done]
        if done:
            logger.info("renditions already published by an earlier attempt: %s", ", ".join(sorted(done)))
        if stale:
            logger.warning("renditions remembered as published but missing from the bucket, redone: %s",
                           ", ".join(sorted(stale)))
        # A rendition encoded in this run is uploaded whatever a result store remembers of it.
        upload_fresh = publish_rendition.with_options(refresh_cache=True)
        out_root = scratch / "out"
        encode = transcode_rendition.with_options(retries=settings.task_retries)
        single = settings.engine == "single"
        decoded = None
        # The single engine's process also encodes the audio: one read of the source, the bare command.
        # So does the poster, from its rung's pictures, when that rung is encoded.
        shared_audio = single and bool(pending) and info.audio is not None and "audio" not in done
        poster_rung = plan[min(len(plan) - 1, 2)]
        poster_path = scratch / "poster.jpg"
        shared_poster = single and any(r.name == poster_rung.name for r in pending)
        if pending:
            fanout = (open_shared if single else open_fanout)(
                [r.name for r in pending] + (["audio"] if shared_audio else []) + (["poster"] if shared_poster else []))
            decoded = (encode_ladder.submit(local, info, pending, config, out_root, fanout.id, timeout, audio=shared_audio,
                                            poster=(poster_rung, poster_path) if shared_poster else None)
                       if single else decode_source.submit(local, info, pending, fanout.id, timeout))
        # Nothing is uploaded before one full decode has vouched for the source: a file found
        # damaged half-way must leave nothing behind in the production bucket. With fanout the
        # decoder's task vouches. With the single engine each rung's task carries the verdict (the
        # ladder process's, or its own decode's when it retried alone), and a failed ladder process
        # is each rung's to retry, not the run's failure.
        decoder_gate = [decoded] if decoded is not None and not single else None
        futures = list(decoder_gate or [])
        uploads = []
        encodes = []
        for r in plan:
            encoded = None
            if r.name not in done:
                encoded = encode.submit(r, config, local, info, out_root / r.name, timeout, fanout.id)
                encodes.append(encoded)
            uploads.append((upload_fresh if encoded is not None else publish_rendition).submit(
                r.name, encoded, out_root, settings.output_bucket, prefix, asset, fingerprint, wait_for=decoder_gate))
        futures += encodes
        audio_gate = (encodes or None) if single else decoder_gate
        audio_upload = None
        if info.audio is not None:
            audio_encoded = None
            if "audio" not in done:
                audio_encoded = transcode_audio.with_options(retries=settings.task_retries).submit(
                    local, info, config, out_root / "audio", timeout, fanout.id if shared_audio else None)
            audio_upload = (upload_fresh if audio_encoded is not None else publish_rendition).submit(
                "audio", audio_encoded, out_root, settings.output_bucket, prefix, asset, fingerprint, wait_for=audio_gate)
        poster = make_poster.submit(local, info, poster_rung, poster_path, timeout, fanout.id if shared_poster else None)
        all_futures = futures + uploads + [poster] + ([audio_upload] if audio_upload else [])
        running = all_futures + ([decoded] if decoded is not None else [])
        wait_reporting_progress(running, encode_percent(fanout, info.duration, running),
                                progress_recorder(settings.records_table, upload, flow_run_id))
        _raise_first_failure(all_futures)

        videos = [u.result() for u in uploads]
        audio = audio_upload.result() if audio_upload else None
        poster_file = poster.result()
        for redo in (True, False):
            master = master_playlist([variant_entry(v) for v in videos], audio_entry(audio) if audio else None)
            manifest = build_manifest(
                asset, SourceRef(bucket, key, source.etag, source.version_id, source.size), info.summary(), videos,
                audio, config.fingerprint(), flow_run_id,
                extra={"location": f"s3://{settings.output_bucket}/{prefix}master.m3u8", "key_prefix": prefix},
            )
            publishing = publish_asset.submit({"poster.jpg": poster_file, "master.m3u8": master.encode()}, manifest,
                                              settings.output_bucket, prefix)
            publishing.wait()
            incomplete = _incomplete(publishing)
            if not incomplete or not redo:
                published = publishing.result()
                break
            # Objects vanished before the manifest was written: encode and upload those
            # renditions again (each alone, from the downloaded source), then publish.
            logger.warning("objects missing before the manifest was written, redoing: %s", ", ".join(sorted(incomplete)))
            redone = {}
            for r in plan:
                if r.name in incomplete:
                    encoded = encode.submit(r, config, local, info, out_root / r.name, timeout)
                    redone[r.name] = upload_fresh.submit(r.name, encoded, out_root, settings.output_bucket, prefix,
                                                         asset, fingerprint)
            if audio is not None and "audio" in incomplete:
                encoded = transcode_audio.with_options(retries=settings.task_retries).submit(
                    local, info, config, out_root / "audio", timeout)
                redone["audio"] = upload_fresh.submit("audio", encoded, out_root, settings.output_bucket, prefix,
                                                      asset, fingerprint)
            wait(list(redone.values()))
            _raise_first_failure(list(redone.values()))
            videos = [redone[v.name].result() if v.name in redone else v for v in videos]
            audio = redone["audio"].result() if "audio" in redone else audio
    except PixelFlowError as error:
        return _reject(error, asset, bucket, key, source.etag, source.version_id, info.summary() if info else None,
                       flow_run_id, settings)
    finally:
        if fanout is not None:
            fanout.close()
        shutil.rmtree(scratch, ignore_errors=True)

    try:
        clear_failure_record(bucket, asset, settings.quarantine_prefix)
    except Exception:  # noqa: BLE001 - the asset is published; a stale record is only cosmetic
        logger.warning("could not remove an earlier attempt's failure record for asset %s", asset, exc_info=True)
    recorded = record("ready", manifest=published)
    if recorded.get("deleted"):  # deleted while this run published it: withdraw what it published
        withdraw_deleted(settings.output_bucket, prefix, asset)
        return _deleted(asset)
    _asset_table(published)
    if published.get("flow_run_id") not in (None, flow_run_id):
        logger.info("asset %s was published by flow run %s, which announces it", asset, published["flow_run_id"])
        return published
    _emit("pixelflow.asset.ready", asset, {
        "asset_id": asset, "bucket": bucket, "key": key, "status": "ready",
        "master_playlist": published.get("location"), "renditions": [r["name"] for r in published["renditions"]],
        "duration": published.get("duration"), "passthrough": recorded.get("passthrough"),
    })
    return published


def _deleted(asset: str):
    message = f"Asset {asset} was deleted (DELETE /v1/assets); it is not published again."
    get_run_logger().info(message)
    return Completed(message=message, data={"status": "deleted", "asset_id": asset})


def _incomplete(future) -> set[str]:
    """The renditions (or ``poster``/``master``) whose objects ``publish-asset`` found missing."""
    state = future.state
    if not state.is_failed():
        return set()
    try:
        future.result()
    except PixelFlowError as error:
        if error.code == ErrorCode.ASSET_INCOMPLETE:
            return {path.split("/", 1)[0] if "/" in path else path for path in error.details.get("missing", [])}
    except Exception:  # noqa: BLE001 - reported by ``result()`` in the caller
        pass
    return set()


def _raise_first_failure(futures) -> None:
    """Raise the most telling error among failed task runs: a rejection of the source first."""
    errors = []
    for future in futures:
        state = future.state
        if state.is_failed() or state.is_crashed() or state.is_cancelled():
            try:
                future.result()
            except PixelFlowError as error:
                errors.append(error)
            except Exception as exc:  # noqa: BLE001 - anything else is an internal failure
                errors.append(PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"{type(exc).__name__}: {exc}"))
    if errors:
        errors.sort(key=lambda e: (not e.is_rejection, e.code == ErrorCode.TRANSCODE_FAILED))
        raise errors[0]


def _reject(error: PixelFlowError, asset: str, bucket: str, key: str, etag: str | None, version_id: str | None,
            probe: dict[str, Any] | None, flow_run_id: str, settings: PixelFlowSettings, keep: bool = True):
    """Record why the upload was not published, tell listeners, and fail the run with the code."""
    logger = get_run_logger()
    _tag_run([f"asset:{asset}"])
    logger.error("%s: %s", error.code.value, error.message)
    record = error_record(asset, bucket, key, etag, version_id, error, probe, flow_run_id, None)
    if keep:
        try:
            record = quarantine_source(bucket, key, version_id, asset, settings.quarantine_prefix, record)
        except Exception:
            logger.exception("could not record the rejection")
    _rejection_artifact(error, key, asset)
    recorded = record_asset(settings.records_table, settings.upload_key_prefix, Upload(bucket, key, etag, version_id),
                            "errored", error=error, flow_run_id=flow_run_id)
    _emit("pixelflow.asset.errored", asset, {
        "asset_id": asset, "bucket": bucket, "key": key, "status": record["status"],
        "code": error.code.value, "message": error.message, "passthrough": recorded.get("passthrough"),
    })
    return Failed(message=str(error), data=error)
