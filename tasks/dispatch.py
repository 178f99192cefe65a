"""The parent's side of a chunk encoded in its own flow run (docs/chunks.md, "Chunks as flow
runs"): ``dispatch-chunk-<n>`` starts a run of the ``transcode-chunk`` deployment on the run's
own work pool, waits for it, and returns the chunk as its ``encode-chunk`` task recorded it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.results import get_result_store

from pixelflow.core.chunk_jobs import CHUNK_FLOW, chunk_params, config_params
from pixelflow.core.chunks import Chunk, ChunkOutput
from pixelflow.core.ladder import LadderConfig, Rendition
from pixelflow.core.probe import SourceInfo
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline import ffmpeg
from tasks._policy import RETRIES, RETRY_DELAYS, retry_transient
from tasks.chunks import ChunkProgress, chunk_cache_key, encode_chunk

#: Seconds between two reads of a chunk's flow run while the parent waits for it.
POLL_SECONDS = 1.0


def chunk_run_parameters(upload: Upload, chunk: Chunk, renditions: list[Rendition], config: LadderConfig,
                         limits: ffmpeg.ProcessLimits, bucket: str, prefix: str, asset_id: str, fingerprint: str,
                         folder: str, attempt: int) -> dict:
    """The ``transcode-chunk`` flow's parameters: JSON values only (flows/chunk.py)."""
    return {"upload": upload.to_dict(), "chunk": chunk_params(chunk), "rungs": [r.name for r in renditions],
            "config": config_params(config), "limits": asdict(limits), "bucket": bucket, "prefix": prefix,
            "asset_id": asset_id, "fingerprint": fingerprint, "folder": folder, "attempt": attempt}


def dispatch_key(flow_run_id: str, attempt: int, index: int, tries: int) -> str:
    """The child's idempotency key: one per run attempt, chunk and try of its dispatch task. The
    same try asking twice (a request retried after a lost answer) gets the same child; the
    task's retry after a failed or crashed child starts a new one.

    >>> dispatch_key("0f1e", 1, 3, 2)
    'pixelflow-chunk:0f1e:1:3:2'
    """
    return f"pixelflow-chunk:{flow_run_id}:{attempt}:{index}:{tries}"


@task(name="dispatch-chunk", task_run_name="dispatch-chunk-{chunk.index}", retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def dispatch_chunk(chunk: Chunk, source_path: Path, info: SourceInfo, renditions: list[Rendition], config: LadderConfig,
                   out_root: Path, limits: ffmpeg.ProcessLimits, bucket: str, prefix: str, asset_id: str,
                   fingerprint: str, folder: str, attempt: int, progress: ChunkProgress | None = None, *,
                   upload: Upload, deployment: str) -> ChunkOutput:
    """Encode one chunk in a flow run of its own (``deployment``, a ``transcode-chunk`` one, as a
    subflow of this run) and return its :class:`ChunkOutput`: what :func:`tasks.chunks.encode_chunk`
    persisted under :func:`tasks.chunks.chunk_cache_key` in that run.

    Takes :func:`tasks.chunks.encode_chunk`'s arguments, so the chunked run submits either; the
    child downloads ``upload`` itself (pinned to its ETag or version), so ``source_path``,
    ``info`` and ``out_root`` are this process's and unused. A child that finds the source
    damaged fails with the rejection's code (its state's message, ``<code>: <message>``), raised
    here as that :class:`PixelFlowError`, never retried; a child that failed otherwise, crashed
    (its process or container killed) or was cancelled fails this task, whose retry starts a
    new child for this chunk alone.
    """
    logger = get_run_logger()
    context = TaskRunContext.get()
    key = dispatch_key(str(context.task_run.flow_run_id), attempt, chunk.index, context.task_run.run_count)
    parameters = chunk_run_parameters(upload, chunk, renditions, config, limits, bucket, prefix, asset_id,
                                      fingerprint, folder, attempt)
    child = run_deployment(name=deployment, parameters=parameters, as_subflow=True, idempotency_key=key,
                           flow_run_name=f"chunk {chunk.index}: {upload.key}", poll_interval=POLL_SECONDS,
                           tags=[f"asset:{asset_id}", f"chunk:{chunk.index}"])
    state = child.state
    logger.info("chunk %d: flow run %s (%s) ended %s", chunk.index, child.name, child.id, state.type.value)
    if not state.is_completed():
        error = PixelFlowError.from_message(state.message or "") if state.is_failed() else None
        if error is None:
            raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"Chunk {chunk.index}'s flow run {child.name} ended "
                                 f"{state.type.value}: {state.message or 'no message'}.", {"flow_run_id": str(child.id)})
        raise error
    store = get_result_store().update_for_task(encode_chunk)
    cache_key = chunk_cache_key(None, {"chunk": chunk, "asset_id": asset_id, "fingerprint": fingerprint})
    try:
        output: ChunkOutput = store.read(cache_key).result
    except Exception as exc:  # noqa: BLE001 - the child's record is not where this run reads results
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED,
                             f"Chunk {chunk.index}'s flow run {child.name} completed but its result is not in this "
                             f"run's result storage ({type(exc).__name__}): both need the same storage "
                             "(PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, or one machine's local storage).") from None
    if (output.chunk, output.folder, output.attempt) != (chunk, folder, attempt):
        raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"Chunk {chunk.index}'s recorded result is not this "
                             f"attempt's (folder {output.folder}, attempt {output.attempt}).")
    if progress is not None:
        progress.update(chunk.index, chunk.duration)
    return output


class BoundDispatch:
    """:func:`dispatch_chunk` with the upload and the deployment bound, submitted with
    :func:`tasks.chunks.encode_chunk`'s positional arguments."""

    def __init__(self, task, upload: Upload, deployment: str):
        self.task, self.upload, self.deployment = task, upload, deployment

    def submit(self, *args, **kwargs):
        return self.task.submit(*args, upload=self.upload, deployment=self.deployment, **kwargs)
