"""Tasks of chunked encoding (:mod:`pixelflow.core.chunks`): one chunk of a long source encoded
for every rung and put in the run attempt's folder of the asset, each rung's chunks stitched
into one media playlist, and what a rejected source's chunks left removed."""

from __future__ import annotations

import threading
from pathlib import Path

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pixelflow.aws import s3_client
from pixelflow.core.chunks import (Chunk, ChunkOutput, ChunkRendition, sample_description, segment_number,
                                   stitch_rendition)
from pixelflow.core.ffmpeg_args import INIT_SEGMENT, PLAYLIST, chunk_encode_args, storyboard_from_rendition_args
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.layout import in_folder
from pixelflow.core.manifest import RenditionOutput
from pixelflow.core.hls import avc1_from_init
from pixelflow.core.probe import SourceInfo
from pixelflow.core.storyboard import Storyboard
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline import ffmpeg
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient
from tasks.encode import _Progress, _check_source, _fresh_dir, _image, _joined
from tasks.publish import _list_prefix, _remove_unnamed, _transfer_config, _upload


class ChunkProgress:
    """How much of the source the chunks of one run have encoded, for the asset's record
    (:func:`tasks.records.encode_percent` reads :attr:`out_time`).

    >>> progress = ChunkProgress()
    >>> progress.update(0, 8.0); progress.update(1, 2.5); progress.update(0, 7.0)
    >>> progress.out_time
    10.5
    """

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}
        self._lock = threading.Lock()

    def update(self, index: int, seconds: float) -> None:
        with self._lock:
            self._seconds[index] = max(seconds, self._seconds.get(index, 0.0))

    @property
    def out_time(self) -> float:
        with self._lock:
            return sum(self._seconds.values())


def chunk_cache_key(context, parameters) -> str:
    """A published chunk is identified by asset, range and ``fingerprint`` (where it is published
    and how it is encoded), never by a local path; a record under this key is only a claim,
    trusted when one listing of the asset shows every object it names with its size."""
    chunk: Chunk = parameters["chunk"]
    return (f"pixelflow-chunk-{parameters['asset_id']}-{chunk.index}-{chunk.start_us}-{chunk.end_us}-"
            f"{parameters['fingerprint']}")


@task(name="encode-chunk", task_run_name="encode-chunk-{chunk.index}", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient, cache_key_fn=chunk_cache_key,
      persist_result=True)
def encode_chunk(chunk: Chunk, source_path: Path, info: SourceInfo, renditions: list[Rendition], config: LadderConfig,
                 out_root: Path, limits: ffmpeg.ProcessLimits, bucket: str, prefix: str, asset_id: str,
                 fingerprint: str, folder: str, attempt: int, progress: ChunkProgress | None = None) -> ChunkOutput:
    """Decode the chunk's range of the source once, encode every rung's part of it, and put its
    segments (and, for chunk 0, each rung's init segment) in ``folder`` of the asset.

    The decode vouches for its range as the single-pass ladder process does for the whole file:
    decoder errors reject the source (``corrupt_stream``), a range that ends early
    (``truncated``). A killed process fails this chunk alone, which is retried alone. Persisted
    under :func:`chunk_cache_key`, so a manual retry of the run redoes only the chunks it lacks.
    """
    logger = get_run_logger()
    artifact = _Progress(f"chunk {chunk.index} ({chunk.start:.1f} to {chunk.end:.1f} s)", chunk.duration)

    def advance(seconds: float) -> None:
        artifact(seconds)
        if progress is not None:
            progress.update(chunk.index, seconds)

    scratch = out_root / "chunks" / str(chunk.index)
    dirs = [_fresh_dir(scratch / r.name) for r in renditions]
    result = limits.run(chunk_encode_args(str(source_path), info, renditions, config, [str(d) for d in dirs], chunk),
                        on_progress=advance, log=logger, output_dir=str(scratch))
    _check_source(result, info, f"video stream from {chunk.start:.1f} s", expected=chunk.duration)
    parts = []
    for rendition, out_dir in zip(renditions, dirs):
        parts.append(_take_part(rendition, out_dir, chunk, out_root, folder))
    output = ChunkOutput(chunk, attempt, folder, tuple(parts), round(result.out_time, 3))
    s3, transfer = s3_client(), _transfer_config()
    try:
        for path in output.objects():
            _upload(s3, out_root / path, bucket, f"{prefix}{path}", transfer)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Uploading chunk {chunk.index} failed: {exc}") from None
    advance(chunk.duration)
    logger.info("chunk %d (%.3f to %.3f s): %d rungs, %d segments each, encoded in %.1f s", chunk.index, chunk.start,
                chunk.end, len(parts), len(parts[0].segments), result.elapsed)
    return output


def _take_part(rendition: Rendition, out_dir: Path, chunk: Chunk, out_root: Path, folder: str) -> ChunkRendition:
    """A rung's part of the chunk, checked, its files moved to where the asset has them."""
    files = {p.name: p for p in out_dir.iterdir() if p.is_file()}
    if PLAYLIST not in files or INIT_SEGMENT not in files:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"FFmpeg wrote no {rendition.name} part of chunk {chunk.index}.")
    part = ChunkRendition.from_playlist(rendition.name, files[PLAYLIST].read_text(), in_folder(folder, rendition.name),
                                        {name: p.stat().st_size for name, p in files.items()},
                                        sample_description(files[INIT_SEGMENT].read_bytes()), with_init=chunk.index == 0)
    numbers = list(range(chunk.first_segment, chunk.first_segment + len(part.segments)))
    if not part.segments or len(part.segments) > chunk.segments or [
            segment_number(path) for path, _, _ in part.segments] != numbers:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED,
                             f"The {rendition.name} part of chunk {chunk.index} has {len(part.segments)} segments, "
                             f"not {chunk.segments} numbered from {chunk.first_segment}.")
    ffmpeg.check_duration(f"{rendition.name} part of chunk {chunk.index}", sum(d for _, d, _ in part.segments),
                          chunk.duration)
    for path in part.objects():
        target = out_root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (out_dir / Path(path).name).replace(target)
    return part


@task(name="stitch-rendition", task_run_name="stitch-{rendition.name}", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def stitch_chunks(rendition: Rendition, chunks: list[ChunkOutput], out_root: Path, bucket: str, prefix: str,
                  folder: str, event_target: int | None = None) -> RenditionOutput:
    """One rung's rendition from its part of every chunk: the media playlist over all of them
    (:func:`pixelflow.core.chunks.stitch_rendition`; a progressive asset's closed EVENT
    playlist with ``event_target``), put in ``folder`` of the asset; the segments stay where
    their chunks put them."""
    playlist_path = in_folder(folder, f"{rendition.name}/{PLAYLIST}")
    parts = [c.part(rendition.name) for c in sorted(chunks, key=lambda c: c.chunk.index)]
    try:
        text, measured = stitch_rendition(rendition.name, parts, playlist_path, event_target)
    except ValueError as exc:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"The chunks do not make one rendition: {exc}") from None
    codecs = init_codecs(out_root, bucket, prefix, parts[0].init)
    local = out_root / playlist_path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(text)
    try:
        _upload(s3_client(), local, bucket, f"{prefix}{playlist_path}", _transfer_config())
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Uploading the {rendition.name} playlist failed: {exc}") from None
    get_run_logger().info("%s: %d segments from %d chunks, %.3f s", rendition.name, measured["segments"], len(parts),
                          measured["duration"])
    return RenditionOutput(name=rendition.name, kind="video", playlist=playlist_path, files=tuple(measured["files"]),
                           file_sizes=tuple(measured["file_sizes"]), size=measured["size"],
                           segments=measured["segments"], duration=measured["duration"],
                           bandwidth=measured["bandwidth"], average_bandwidth=measured["average_bandwidth"],
                           codecs=codecs, width=rendition.width, height=rendition.height,
                           frame_rate=round(rendition.fps_float, 3))


def init_codecs(out_root: Path, bucket: str, prefix: str, path: str) -> str:
    """The codec string of a chunked rendition's init segment (``path`` inside the asset): the
    local one this run encoded, else the one an earlier attempt published (a reused chunk 0)."""
    local = out_root / path
    try:
        body = local.read_bytes() if local.exists() else s3_client().get_object(
            Bucket=bucket, Key=f"{prefix}{path}")["Body"].read()
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Reading the published {path} failed: {exc}") from None
    codecs = avc1_from_init(body)
    if codecs is None:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"The init segment {path} has no H.264 configuration.")
    return codecs


@task(name="storyboard", task_run_name="storyboard", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def storyboard_from_rendition(rendition: RenditionOutput, out_root: Path, bucket: str, prefix: str, board: Storyboard,
                              out_path: Path, limits: ffmpeg.ProcessLimits) -> Path:
    """The storyboard sheet from the smallest rung's stitched rendition (its files under
    ``out_root``, those of chunks an earlier attempt made fetched from the bucket first): no
    decode of the source besides the chunks'."""
    s3 = s3_client()
    try:
        for path in rendition.files:
            if not (out_root / path).exists():
                (out_root / path).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, f"{prefix}{path}", str(out_root / path), Config=_transfer_config())
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Fetching the {rendition.name} rendition failed: {exc}") from None
    joined = _joined(rendition, out_root, out_path.with_suffix(".rendition.mp4"))
    try:
        return _image(None, "storyboard", limits, out_path,
                      lambda: storyboard_from_rendition_args(str(joined), board, str(out_path)))
    finally:
        joined.unlink(missing_ok=True)


@task(name="discard-chunks", task_run_name="discard-chunks", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def discard_chunks(bucket: str, prefix: str, folders: list[str], also: list[str] = ()) -> int:
    """Remove what the chunks of a rejected source put in the asset's ``folders``, and the paths
    ``also`` named (a progressive asset's master playlist): a source found damaged in one chunk
    publishes nothing, whatever its other chunks made. Returns how many."""
    s3 = s3_client()
    try:  # a manifest naming nothing: every object listed is removed
        removed = _remove_unnamed(s3, bucket, prefix, {}, [f"{folder}/{path}" for folder in folders
                                                           for path in _list_prefix(s3, bucket, f"{prefix}{folder}/")])
        if also:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}{p}"} for p in also],
                                                                "Quiet": True})
            if response.get("Errors"):
                raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Removing {', '.join(also)} failed: "
                                     f"{response['Errors'][:3]}")
            removed += len(also)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Removing the rejected source's chunks failed: {exc}") from None
    get_run_logger().info("removed the %d objects of the withdrawn encode", removed)
    return removed
