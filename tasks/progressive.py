"""Tasks of a progressive asset (``PIXELFLOW_PROGRESSIVE``, docs/chunks.md): the master playlist
and ``EVENT`` media playlists published while the chunks of a long source are encoded, so that
players start before the asset is done, and the audio's playlist closed at the end.

Every playlist is written where the finished asset has it (``<attempt>/<rung>/index.m3u8``,
``master.m3u8`` at the asset's top), so a viewer who started early goes on reloading the very
playlists the manifest names; the manifest and the final master playlist are still written
last, by ``publish-asset``, once the asset is whole.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pixelflow.aws import s3_client
from pixelflow.core.chunks import ChunkOutput, stitch_rendition
from pixelflow.core.ffmpeg_args import PLAYLIST
from pixelflow.core.hls import VariantEntry, event_playlist, master_playlist
from pixelflow.core.ladder import Rendition
from pixelflow.core.layout import in_folder
from pixelflow.core.manifest import RenditionOutput, audio_entry, object_headers
from pixelflow.errors import ErrorCode, PixelFlowError
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient
from tasks.chunks import init_codecs
from tasks.publish import put_master


def _put(s3, bucket: str, key: str, body: bytes, growing: bool = True) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **object_headers(key, growing))


def _audio_text(audio: RenditionOutput, out_root: Path, bucket: str, prefix: str, s3) -> str:
    """The audio rendition's own (VOD) media playlist: the local one this run encoded, else the
    one an earlier attempt published."""
    local = out_root / audio.playlist
    if local.exists():
        return local.read_text()
    return s3.get_object(Bucket=bucket, Key=f"{prefix}{audio.playlist}")["Body"].read().decode()


def _progress_run_name() -> str:
    from prefect.runtime import task_run

    return f"publish-progress-{len(task_run.parameters['chunks'])}"


@task(name="publish-progress", task_run_name=_progress_run_name, retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def publish_progress(renditions: list[Rendition], chunks: list[ChunkOutput], audio: RenditionOutput | None,
                     out_root: Path, bucket: str, prefix: str, folder: str, target: int) -> float:
    """Publish the first chunks (``chunks``, in order from chunk 0) as the asset's
    ``EVENT`` media playlists (each rung's, and the audio's up to the same time), then its master
    playlist: the asset plays that far, and the playlists grow as later chunks are published.

    Returns:
        Up to which time (seconds) the asset plays.
    """
    s3 = s3_client()
    variants = []
    end = 0.0
    try:
        for rendition in renditions:
            path = in_folder(folder, f"{rendition.name}/{PLAYLIST}")
            text, measured = stitch_rendition(rendition.name, [c.part(rendition.name) for c in chunks], path)
            _put(s3, bucket, f"{prefix}{path}", event_playlist(text, ended=False, target=target).encode())
            end = measured["duration"]
            codecs = init_codecs(out_root, bucket, prefix, chunks[0].part(rendition.name).init)
            variants.append(VariantEntry(path, measured["bandwidth"], measured["average_bandwidth"], rendition.width,
                                         rendition.height, codecs, round(rendition.fps_float, 3)))
        entry = None
        if audio is not None:
            text = event_playlist(_audio_text(audio, out_root, bucket, prefix, s3), until=end, ended=False)
            _put(s3, bucket, f"{prefix}{audio.playlist}", text.encode())
            entry = audio_entry(audio)
        put_master(s3, bucket, prefix, master_playlist(variants, entry).encode(), growing=True)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Publishing the playlists of chunks 0 to {len(chunks) - 1} "
                             f"failed: {exc}") from None
    except ValueError as exc:
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"The chunks do not make one rendition: {exc}") from None
    get_run_logger().info("playable up to %.1f s: %d chunks published as EVENT playlists", end, len(chunks))
    return end


@task(name="close-audio-playlist", task_run_name="close-audio-playlist", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def close_audio_playlist(audio: RenditionOutput, out_root: Path, bucket: str, prefix: str) -> RenditionOutput:
    """Write the audio's ``EVENT`` playlist whole and closed (``#EXT-X-ENDLIST``), as its
    viewers have seen it grow; the rendition as the manifest then names it (its playlist's size)."""
    s3 = s3_client()
    try:
        body = event_playlist(_audio_text(audio, out_root, bucket, prefix, s3)).encode()
        _put(s3, bucket, f"{prefix}{audio.playlist}", body, growing=False)
    except ClientError as exc:
        raise PixelFlowError(ErrorCode.STORAGE_ERROR, f"Closing the audio playlist failed: {exc}") from None
    sizes = tuple(len(body) if f == audio.playlist else size for f, size in zip(audio.files, audio.file_sizes))
    return replace(audio, file_sizes=sizes)
