"""The ``transcode`` flow: one uploaded object becomes a published HLS asset, or a recorded
rejection.

Steps, each a Prefect task run visible in the UI: inspect the upload (HEAD), check its size,
download it, validate it (ffprobe of the headers), read and validate its caption sidecars
(``captions``: ``talk.en.vtt`` beside ``talk.mp4``; a bad one rejects the upload), decode it once (``encode-ladder``: one FFmpeg
process encoding every rung, the audio, the poster and the storyboard), one ``transcode-<rung>``
task per rung of the ladder (plus ``transcode-audio``, ``poster`` and ``storyboard``) taking its
output over from that process,
``upload-<rung>`` as each rendition finishes,
then ``publish-asset`` writes ``manifest.json`` (the write that makes the asset: everything before
it went into this attempt's own folder of the asset) and then the master playlist.

Example:
    Run one object now, in-process (a Prefect server or ``PREFECT_API_URL`` must be reachable)::

        from flows.transcode import transcode
        manifest = transcode(bucket="pixelflow-uploads", key="cat.mp4")
        print(manifest["asset_id"], manifest["renditions"])
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.futures import as_completed, wait
from prefect.results import get_result_store
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.captions import late_captions
from pixelflow.aws import s3_endpoint
from pixelflow.core.captions import Captions, is_caption_key, subtitle_entries
from pixelflow.core.downloads import content_disposition, download_path, download_renditions
from pixelflow.core.ladder import plan_ladder, poster_rendition
from pixelflow.core.layout import (MASTER, POSTER, AssetLayout, attempt_folder, in_folder, manifest_objects,
                                   missing_objects, owners, publish_fingerprint)
from pixelflow.core.manifest import RenditionOutput, build_manifest
from pixelflow.core.text import markdown_text
from pixelflow.core.probe import SourceInfo
from pixelflow.core.storyboard import STORYBOARD_IMAGE, STORYBOARD_VTT, Storyboard
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline.ffmpeg import ProcessLimits
from pixelflow.pipeline.ladder_process import LadderProcess
from pixelflow.settings import PixelFlowSettings
from tasks.captions import read_captions
from tasks.encode import encode_ladder, make_download, make_poster, make_storyboard, transcode_audio, transcode_rendition
from tasks.publish import (fetch_rendition, find_published, list_asset, publish_asset, publish_download,
                           publish_rendition, rendition_cache_key, restore_master, withdraw_manifest)
from tasks.records import (encode_percent, progress_recorder, record_asset, report_progress,
                           revive_if_uploaded_again, withdraw_deleted)
from tasks.reject import clear_failure_record, error_record, quarantine_source
from tasks.source import check_upload, download_source, inspect_source, validate

FIX_HINTS = {
    ErrorCode.EMPTY_FILE: "Upload the file again; the object was empty.",
    ErrorCode.NOT_MEDIA: "Upload a video file (MP4, MOV, MKV, WebM...).",
    ErrorCode.NO_VIDEO_STREAM: "Upload a file with a video or an audio track.",
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
    ErrorCode.WORK_BUDGET_EXCEEDED: "Lower the resolution, frame rate or length, or raise PIXELFLOW_MAX_WORK_PIXELS.",
    ErrorCode.SOURCE_TOO_SLOW: "Re-encode the video to a common codec and frame rate, or raise "
                               "PIXELFLOW_FFMPEG_TIMEOUT_FACTOR.",
    ErrorCode.RUN_TIME_EXCEEDED: "Split the video into shorter parts, or raise PIXELFLOW_MAX_RUN_SECONDS.",
    ErrorCode.MEMORY_LIMIT_EXCEEDED: "Re-encode the video with a common encoder, or raise PIXELFLOW_FFMPEG_MEMORY_BYTES.",
    ErrorCode.TOO_MANY_STREAMS: "Keep only the video and the audio tracks needed, or raise PIXELFLOW_MAX_STREAMS.",
    ErrorCode.METADATA_TOO_LARGE: "Strip the file's metadata and extra tracks (e.g. ffmpeg -map_metadata -1) and "
                                  "upload it again.",
    ErrorCode.INVALID_CAPTIONS: "Fix or remove the caption file named in the error (UTF-8 WebVTT or SRT, well-formed "
                                "timestamps, a known language tag: talk.en.vtt), then upload the video again.",
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


def _emit(event: str, upload: Upload, payload: dict[str, Any]) -> None:
    """Emit a ``pixelflow.asset.*`` event for the upload's asset (``asset_id``, ``bucket`` and
    ``key`` lead its payload)."""
    payload = {"asset_id": upload.asset_id, "bucket": upload.bucket, "key": upload.key, **payload}
    try:
        emit_event(event=event, resource={"prefect.resource.id": f"pixelflow.asset.{upload.asset_id}",
                                          "prefect.resource.name": upload.key}, payload=payload)
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


def _rejection_artifact(error: PixelFlowError, upload: Upload) -> None:
    asset = upload.asset_id
    try:
        create_markdown_artifact(
            f"### {'Rejected' if error.is_rejection else 'Failed'}: `{error.code.value}`\n\n"
            f"**{markdown_text(upload.key)}** (asset `{asset}`)\n\n{markdown_text(error.message)}\n\n"
            f"**What to do:** {FIX_HINTS.get(error.code, 'Retry the run; if it fails again, check the worker logs.')}\n",
            key=f"asset-{asset}-error", description="Why this upload was not published")
    except Exception:
        get_run_logger().debug("could not create the rejection artifact", exc_info=True)


def _retried(task, settings: PixelFlowSettings):
    """``task`` with ``PIXELFLOW_TASK_RETRIES`` retries: the setting covers every transcode and
    transfer task of a run (the tasks' own ``retries`` are only the default)."""
    return task.with_options(retries=settings.task_retries)


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
def transcode(bucket: str, key: str, etag: str | None = None, version_id: str | None = None) -> dict[str, Any]:
    """Transcode one uploaded object into an adaptive HLS ladder and publish it.

    The parameters are the upload as its event described it; the asset id is derived from the
    object as S3 has it when the run starts (``inspect-upload``), never taken on trust.

    Args:
        bucket: The upload bucket.
        key: The object key (as stored, not URL-encoded).
        etag: The ETag the upload event reported, when known.
        version_id: The object version, when the bucket is versioned.

    Returns:
        The published asset's manifest.
    """
    settings = PixelFlowSettings()
    started = time.time()  # the run's time cap (PIXELFLOW_MAX_RUN_SECONDS) counts from here
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)
    announced = Upload(bucket, key, etag, version_id)
    if is_caption_key(key):  # a sidecar is read by its video's run (docs/api.md, Captions)
        return Completed(message=f"{key} is a caption file, not a video: its video's run publishes it.",
                         data={"status": "ignored", "bucket": bucket, "key": key})

    attempt = get_run_context().flow_run.run_count
    if attempt > settings.max_attempts:
        error = PixelFlowError(ErrorCode.TOO_MANY_ATTEMPTS,
                               f"Gave up after {attempt - 1} attempts (PIXELFLOW_MAX_ATTEMPTS={settings.max_attempts}).")
        _emit("pixelflow.asset.alert", announced, {"code": error.code.value, "message": error.message})
        return _reject(error, announced, None, flow_run_id, settings, keep=False)

    try:
        source = _retried(inspect_source, settings)(announced)
    except PixelFlowError as error:
        return _reject(error, announced, None, flow_run_id, settings, keep=False)
    if not announced.same_revision(source):
        message = (f"{source.uri} was overwritten since this upload (ETag {announced.etag} is now {source.etag}); "
                   "the newer upload is processed by its own run.")
        logger.info(message)
        return Completed(message=message, data={"status": "superseded", "bucket": bucket, "key": key})

    layout = settings.layout(source.asset_id)
    _tag_run([f"asset:{layout.asset_id}"])
    existing = _retried(find_published, settings)(settings.output_bucket, layout.prefix)
    listed = _retried(list_asset, settings)(settings.output_bucket, layout.prefix)

    def record(status: str, **fields: Any) -> dict[str, Any]:  # the asset's record (docs/api.md)
        return record_asset(settings.records_table, settings.upload_key_prefix, source, status,
                            flow_run_id=flow_run_id, **fields)

    if existing is not None:
        broken = missing_objects(manifest_objects(existing), listed)
        if broken == [existing.get("master_playlist") or MASTER]:  # its run stopped between the two writes
            _retried(restore_master, settings)(existing, settings.output_bucket, layout.prefix)
            broken = []
        if not broken:
            if record("ready", manifest=existing).get("deleted"):
                return _deleted(layout.asset_id)
            existing = late_captions(settings, source, _late_folder(flow_run_id, attempt))["manifest"] or existing
            message = f"Asset {layout.asset_id} is already published; nothing to do."
            logger.info(message)
            return Completed(message=message, data=existing)
        # A manifest naming objects that are gone is not an asset: withdraw it and rebuild.
        _retried(withdraw_manifest, settings)(settings.output_bucket, layout.prefix, broken)
    # The asset's record: preparing from now on (a deleted asset is not made again).
    if record("preparing", progress=0).get("deleted") and (
            not revive_if_uploaded_again(settings.records_table, source)
            or record("preparing", progress=0).get("deleted")):
        return _deleted(layout.asset_id)

    scratch = Path(settings.scratch_dir) / f"{layout.asset_id}-{flow_run_id[:8]}"
    info = None
    try:
        limits = settings.limits()
        check_upload(source, limits)
        local = _retried(download_source, settings)(source, scratch / "source", settings.scratch_headroom,
                                                    settings.multipart_chunk_mb, settings.transfer_concurrency)
        info = validate(local, source.size, limits, settings.ffmpeg_memory_bytes, settings.ffmpeg_sandbox)
        captions = _retried(read_captions, settings)(source, info.duration, settings.captions_max_bytes,
                                                     settings.captions_max_cues, settings.captions_max_languages)
        run_type = _Run
        if info.video is not None and 0 < settings.chunk_seconds < info.duration:  # a long source: in chunks
            from flows.chunked import ChunkedRun as run_type
        run = run_type(settings, layout, local, info, scratch, listed, started, attempt_folder(flow_run_id, attempt),
                       source)
        run.on_playable = lambda percent, until: _playable(record, source, percent, until)
        videos, audio, images = run.encode_and_upload()
        published = run.publish(source, videos, audio, images, flow_run_id, captions)
    except PixelFlowError as error:
        if error.code == ErrorCode.SOURCE_CHANGED:  # the newer upload is processed by its own run
            logger.info(error.message)
            return Completed(message=error.message, data={"status": "superseded", "bucket": bucket, "key": key})
        return _reject(error, source, info.summary() if info else None, flow_run_id, settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    try:
        _retried(clear_failure_record, settings)(settings.output_bucket, layout)
    except Exception:  # noqa: BLE001 - the asset is published; a stale record is only cosmetic
        logger.warning("could not remove an earlier attempt's failure record for asset %s", layout.asset_id, exc_info=True)
    recorded = record("ready", manifest=published)
    if recorded.get("deleted"):  # deleted while this run published it: withdraw what it published
        withdraw_deleted(settings.output_bucket, layout.prefix, layout.asset_id)
        return _deleted(layout.asset_id)
    # Caption files sent while this run went on, after it read them: attached now (flows/captions.py).
    published = late_captions(settings, source, _late_folder(flow_run_id, attempt))["manifest"] or published
    _asset_table(published)
    if published.get("flow_run_id") not in (None, flow_run_id):
        logger.info("asset %s was published by flow run %s, which announces it", layout.asset_id, published["flow_run_id"])
        return published
    _emit("pixelflow.asset.ready", source, {
        "status": "ready", "master_playlist": published.get("location"),
        "renditions": [r["name"] for r in published["renditions"]], "duration": published.get("duration"),
        "passthrough": recorded.get("passthrough"),
    })
    return published


def _playable(record: Callable[..., dict[str, Any]], source: Upload, percent: float, until: float) -> None:
    """A progressive asset plays from now on (its master playlist is published): its record says
    so (``playable``), and so does a ``pixelflow.asset.playable`` event."""
    recorded = record("preparing", progress=round(percent, 1), playable=True)
    get_run_logger().info("asset %s is playable (%.1f s of it so far)", source.asset_id, until)
    _emit("pixelflow.asset.playable", source, {"status": "preparing", "playable": True, "seconds": round(until, 3),
                                              "passthrough": recorded.get("passthrough")})


def _late_folder(flow_run_id: str, attempt: int) -> str:
    """Where this attempt writes caption files attached after its manifest: a folder of its own,
    as its captions may replace a language published in the attempt's folder."""
    return f"{attempt_folder(flow_run_id, attempt)}-captions"


def _deleted(asset: str):
    message = f"Asset {asset} was deleted (DELETE /v1/assets); it is not published again."
    get_run_logger().info(message)
    return Completed(message=message, data={"status": "deleted", "asset_id": asset})


class _Run:
    """The encode and publish steps of one run, over one downloaded and validated source."""

    def __init__(self, settings: PixelFlowSettings, layout: AssetLayout, local: Path, info: SourceInfo, scratch: Path,
                 listed: dict[str, int], started: float, folder: str, source: Upload | None = None):
        self.settings, self.layout, self.local, self.info = settings, layout, local, info
        self.source = source  # the upload as inspected (a chunk's own flow run downloads it again)
        # This attempt writes into a folder of the asset that is its alone (write-once assets:
        # pixelflow.core.layout); its files are made under the same path in ``out_root``.
        self.folder = folder
        self.config = settings.ladder_config()
        # An audio-only source has no ladder: its asset is the audio rendition alone.
        self.plan = plan_ladder(*info.video.display_size, info.video.frame_rate, self.config) if info.video else []
        self.limits = ProcessLimits.for_source(
            info.duration, base=settings.ffmpeg_timeout_base, factor=settings.ffmpeg_timeout_factor, started=started,
            max_run_seconds=settings.max_run_seconds, memory_bytes=settings.ffmpeg_memory_bytes,
            sandbox=settings.ffmpeg_sandbox, max_pixels=settings.max_pixels)
        self.fingerprint = publish_fingerprint(settings.output_bucket, s3_endpoint(), layout.prefix, self.config)
        self.scratch, self.out_root, self.listed = scratch, scratch / "out", listed
        self.work = self.out_root / folder
        self.encode = _retried(transcode_rendition, settings)
        self.encode_audio = _retried(transcode_audio, settings)
        self.storyboard = None
        self.manifest_extra: dict[str, Any] = {}  # what the manifest records besides (a chunked encode's chunks)
        # Called once a progressive asset plays (percent encoded, seconds playable): flows/chunked.py.
        self.on_playable: Callable[[float, float], None] | None = None
        if settings.storyboard_interval and self.plan:
            smallest = min(self.plan, key=lambda r: r.width * r.height)
            self.storyboard = Storyboard.plan(info.duration, smallest.width, smallest.height,
                                              interval=settings.storyboard_interval,
                                              tile_width=settings.storyboard_tile_width,
                                              max_tiles=settings.storyboard_max_tiles)
        get_run_logger().info("asset %s: ladder %s", layout.asset_id,
                              ", ".join(f"{r.name} {r.width}x{r.height}@{float(r.fps):.3g}" for r in self.plan)
                              or "none (audio only)")

    def upload(self, name: str, encoded):
        """Upload a rendition encoded in this run (whatever a result store remembers of it), or
        take one an earlier attempt published, and that is whole in the bucket, from its result."""
        task = _retried(publish_rendition, self.settings)
        if encoded is not None:
            task = task.with_options(refresh_cache=True)
        return task.submit(name, encoded, self.work, self.settings.output_bucket, self.layout.prefix,
                           self.layout.asset_id, self.fingerprint, self.folder)

    def encode_and_upload(self):
        """Encode what is not published yet in one FFmpeg process (each rung, the audio, the
        poster and the storyboard taken over by its own task) and upload each rendition as it is
        done.

        Returns:
            The video renditions, the audio rendition (or ``None``) and the images to publish
            with the master playlist (``poster.jpg``, ``storyboard.jpg``), by name, as local paths.
        """
        logger = get_run_logger()
        info, plan = self.info, self.plan
        names = [r.name for r in plan] + (["audio"] if info.audio is not None else [])
        done, stale = _published_renditions(self.layout.asset_id, names, self.fingerprint, self.listed)
        pending = [r for r in plan if r.name not in done]
        if done:
            logger.info("renditions already published by an earlier attempt: %s", ", ".join(sorted(done)))
        if stale:
            logger.warning("renditions remembered as published but missing from the bucket, redone: %s",
                           ", ".join(sorted(stale)))
        # One process encodes every pending rung; it also encodes the audio (one read of the
        # source, the bare command) and the poster, from its rung's pictures, when that rung is
        # encoded; and the storyboard, from the smallest pending rung's pictures.
        shared_audio = bool(pending) and info.audio is not None and "audio" not in done
        poster_rung = poster_rendition(plan) if plan else None
        poster_path = self.scratch / POSTER
        shared_poster = poster_rung is not None and any(r.name == poster_rung.name for r in pending)
        board_path = self.scratch / STORYBOARD_IMAGE
        shared_board = bool(pending) and self.storyboard is not None
        ladder = decoded = None
        if pending:
            ladder = LadderProcess([r.name for r in pending] + (["audio"] if shared_audio else [])
                                   + (["poster"] if shared_poster else []) + (["storyboard"] if shared_board else []))
            decoded = encode_ladder.submit(self.local, info, pending, self.config, self.work, ladder, self.limits,
                                           audio=shared_audio, poster=(poster_rung, poster_path) if shared_poster else None,
                                           storyboard=(self.storyboard, board_path) if shared_board else None)
        # Nothing is uploaded before one full decode has vouched for the source: a file found
        # damaged half-way must leave nothing behind in the production bucket. Each rung's task
        # carries the verdict (the ladder process's, or its own decode's when it retried alone),
        # and a failed ladder process is each rung's to retry, not the run's failure.
        uploads, encodes = [], []
        for r in plan:
            encoded = None
            if r.name not in done:
                encoded = self.encode.submit(r, self.config, self.local, info, self.work / r.name, self.limits,
                                             ladder)
                encodes.append(encoded)
            uploads.append(self.upload(r.name, encoded))
        audio_encoded = audio_upload = None
        if info.audio is not None and "audio" not in done:
            audio_encoded = self.encode_audio.submit(self.local, info, self.config, self.work / "audio",
                                                     self.limits, ladder if shared_audio else None)
        images = {}
        if poster_rung is not None:
            images[POSTER] = _retried(make_poster, self.settings).submit(self.local, info, poster_rung, poster_path,
                                                                         self.limits, ladder if shared_poster else None)
        if self.storyboard is not None:
            images[STORYBOARD_IMAGE] = _retried(make_storyboard, self.settings).submit(
                self.local, info, self.storyboard, board_path, self.limits, ladder if shared_board else None)
        # The asset's record follows the encode (throttled) while the run waits on it.
        with report_progress(encode_percent(ladder, info.duration),
                             progress_recorder(self.settings.records_table, self.layout.asset_id)):
            # The audio decodes no video: it is uploaded once any rung has vouched for the source,
            # so that a run failed by one rung keeps its audio for a manual retry.
            if info.audio is not None and (not encodes or _any_completes(encodes)):
                audio_upload = self.upload("audio", audio_encoded)
            all_futures = (encodes + uploads + list(images.values()) + ([audio_encoded] if audio_encoded else [])
                           + ([audio_upload] if audio_upload else []))
            wait(all_futures + ([decoded] if decoded is not None else []))
        _raise_first_failure(all_futures)
        return ([u.result() for u in uploads], audio_upload.result() if audio_upload else None,
                {name: image.result() for name, image in images.items()})

    def publish(self, source: Upload, videos: list[RenditionOutput], audio: RenditionOutput | None,
                images: dict[str, Path], flow_run_id: str, captions: list[Captions] = ()) -> dict[str, Any]:
        """Write the master playlist, the poster, the storyboard and the captions (one subtitles
        rendition per language), then the manifest once a
        listing shows every object it names. Objects found missing then (deleted meanwhile) are
        encoded and uploaded again, each rendition alone from the downloaded source, before
        publishing once more."""
        settings, layout, folder = self.settings, self.layout, self.folder
        files: dict[str, bytes | Path] = {in_folder(folder, name): path for name, path in images.items()}
        extra: dict[str, Any] = {"location": f"s3://{settings.output_bucket}/{layout.master_key}",
                                 "key_prefix": layout.prefix, "folder": folder}
        if self.storyboard is not None:
            files[in_folder(folder, STORYBOARD_VTT)] = self.storyboard.vtt(self.info.duration).encode()
            extra["storyboard"] = {**self.storyboard.to_dict(), "image": in_folder(folder, STORYBOARD_IMAGE),
                                   "vtt": in_folder(folder, STORYBOARD_VTT)}
        extra["poster"] = in_folder(folder, POSTER) if POSTER in images else None  # None: an audio-only asset
        extra["downloads"] = self.downloads(source, videos, audio)
        extra.update(self.manifest_extra)
        subtitles = subtitle_entries(list(captions))
        for entry, caption in zip(subtitles, captions):
            files.update({in_folder(folder, path): body for path, body in caption.files(self.info.duration).items()})
            placed = caption.entry(self.info.duration, entry.default)
            placed.update(file=in_folder(folder, placed["file"]), playlist=in_folder(folder, placed["playlist"]),
                          group_id=entry.group_id)
            extra.setdefault("subtitles", []).append(placed)
        redone_once = False
        while True:
            manifest = build_manifest(
                layout.asset_id, source, self.info.summary(), videos, audio, self.config.fingerprint(), flow_run_id,
                extra=extra)
            publishing = _retried(publish_asset, settings).submit(files, manifest, settings.output_bucket,
                                                                  layout.prefix, folder)
            publishing.wait()
            incomplete = _incomplete(publishing, manifest)
            if not incomplete or redone_once:
                return publishing.result()
            redone_once = True
            get_run_logger().warning("objects missing before the manifest was written, redoing: %s",
                                     ", ".join(sorted(incomplete)))
            redone = {r.name: self.upload(r.name, self.encode.submit(r, self.config, self.local, self.info,
                                                                     self.work / r.name, self.limits))
                      for r in self.plan if r.name in incomplete}
            if audio is not None and "audio" in incomplete:
                redone["audio"] = self.upload("audio", self.encode_audio.submit(
                    self.local, self.info, self.config, self.work / "audio", self.limits))
            wait(list(redone.values()))
            _raise_first_failure(list(redone.values()))
            videos = [redone[v.name].result() if v.name in redone else v for v in videos]
            audio = redone["audio"].result() if "audio" in redone else audio
            if redone or "downloads" in incomplete:
                extra["downloads"] = self.downloads(source, videos, audio)

    def downloads(self, source: Upload, videos: list[RenditionOutput], audio: RenditionOutput | None) -> list[dict]:
        """Make and upload the MP4 downloads (``PIXELFLOW_MP4``): each remuxed from its rendition's
        segments and the audio's, fetched back from the bucket first when an earlier attempt
        published them. Returns the manifest's ``downloads`` entries."""
        settings, layout = self.settings, self.layout
        by_name = {v.name: v for v in videos}
        # (name, extension, video rendition, width, height): an MP4 per chosen rung, or the M4A
        # of an audio-only asset
        wanted = [(r.name, "mp4", by_name[r.name], r.width, r.height)
                  for r in download_renditions(self.plan, settings.mp4, settings.mp4_max_rung)]
        if not self.plan and audio is not None and settings.mp4 != "none":
            wanted = [("audio", "m4a", None, None, None)]
        made = []
        for name, ext, video, width, height in wanted:
            outputs = [o for o in (video, audio) if o is not None]
            fetched = [_retried(fetch_rendition, settings).submit(o, self.out_root, settings.output_bucket, layout.prefix)
                       for o in outputs if not all((self.out_root / f).exists() for f in o.files)]
            local = _retried(make_download, settings).submit(name, video, audio, self.out_root,
                                                            self.scratch / "downloads" / f"{name}.{ext}", self.limits,
                                                            wait_for=fetched)
            uploaded = _retried(publish_download, settings).submit(
                name, local, settings.output_bucket, layout.key(in_folder(self.folder, download_path(name, ext))),
                content_disposition(source.key, name, ext))
            made.append(({"name": name, "file": in_folder(self.folder, download_path(name, ext)), "width": width,
                          "height": height}, uploaded))
        wait([future for _, future in made])
        _raise_first_failure([future for _, future in made])
        return [{**entry, "size": future.result()} for entry, future in made]


def _incomplete(future, manifest: dict[str, Any]) -> set[str]:
    """What owns the objects of ``manifest`` that ``publish-asset`` found missing (renditions by
    name, ``downloads``, ``poster``...: :func:`pixelflow.core.layout.owners`), or nothing when it
    did not fail for that reason."""
    if not future.state.is_failed():
        return set()
    try:
        future.result()
    except PixelFlowError as error:
        if error.code == ErrorCode.ASSET_INCOMPLETE:
            return owners(manifest, error.details.get("missing", []))
    except Exception:  # noqa: BLE001 - raised again by the caller's ``result()``
        pass
    return set()


def _any_completes(futures) -> bool:
    """Wait until one of ``futures`` completes (``True``) or all have ended otherwise (``False``).

    Each future is waited on before its state is read: that takes the task's final state from
    the run itself, where the API's record may still lag behind it.
    """
    for future in as_completed(futures):
        future.wait()
        if future.state.is_completed():
            return True
    return False


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


def _reject(error: PixelFlowError, upload: Upload, probe: dict[str, Any] | None, flow_run_id: str,
            settings: PixelFlowSettings, keep: bool = True):
    """Record why the upload was not published, tell listeners, and fail the run with the code."""
    logger = get_run_logger()
    _tag_run([f"asset:{upload.asset_id}"])
    logger.error("%s: %s", error.code.value, error.message)
    record = error_record(upload, error, probe, flow_run_id)
    if keep:
        try:
            record = _retried(quarantine_source, settings)(upload, settings.layout(upload.asset_id), record,
                                                           settings.output_bucket)
        except Exception:
            logger.exception("could not record the rejection")
    _rejection_artifact(error, upload)
    recorded = record_asset(settings.records_table, settings.upload_key_prefix, upload, "errored", error=error,
                            flow_run_id=flow_run_id)
    _emit("pixelflow.asset.errored", upload, {"status": record["status"], "code": error.code.value,
                                              "message": error.message, "passthrough": recorded.get("passthrough")})
    return Failed(message=str(error), data=error)
