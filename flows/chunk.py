"""The ``transcode-chunk`` flow: one chunk of a long source encoded in a flow run of its own
(docs/chunks.md, "Chunks as flow runs"), so that on the ECS pool each chunk runs in its own
container and on the local process pool in its own process.

A chunked ``transcode`` run started from a deployment dispatches each chunk to the
``transcode-chunk`` deployment of the same name on the same pool (``dispatch-chunk-<n>``,
:mod:`tasks.dispatch`) when ``PIXELFLOW_CHUNK_DISPATCH`` allows (:func:`chunk_deployment`). The
child downloads the upload itself (pinned to its ETag or version), probes it, and runs the very
``encode-chunk`` task the run's own task runner would (same cache key, persisted result), so the
parent reads the chunk from the result store, and a manual retry of the run reuses it as any
chunk an earlier attempt published. A source found damaged ends the child Failed with the
rejection's ``<code>: <message>``, which the parent raises as that rejection.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Failed

from pixelflow.aws import s3_endpoint
from pixelflow.core.chunk_jobs import CHUNK_FLOW, chunk_from_params, config_from_params
from pixelflow.core.ladder import plan_ladder
from pixelflow.core.layout import publish_fingerprint
from pixelflow.core.upload import Upload
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.pipeline.ffmpeg import ProcessLimits
from pixelflow.settings import PixelFlowSettings
from flows.transcode import _retried
from tasks.chunks import encode_chunk
from tasks.dispatch import BoundDispatch, dispatch_chunk
from tasks.source import download_source, validate


def chunk_deployment(settings: PixelFlowSettings) -> str | None:
    """The ``transcode-chunk`` deployment this run dispatches its chunks to (``flow/deployment``),
    or ``None`` to encode them on its own task runner.

    ``PIXELFLOW_CHUNK_DISPATCH``: ``tasks``, never; ``auto``, when this run was started from a
    deployment and a ``transcode-chunk`` deployment of the same name exists; ``runs``, always
    (a run without that deployment fails with ``internal``).
    """
    if settings.chunk_dispatch == "tasks":
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    run = get_run_context().flow_run
    name = None
    if run.deployment_id is not None:
        with get_client(sync_client=True) as client:
            name = f"{CHUNK_FLOW}/{client.read_deployment(run.deployment_id).name}"
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                name = None
    if name is None and settings.chunk_dispatch == "runs":
        raise PixelFlowError(ErrorCode.INTERNAL, "PIXELFLOW_CHUNK_DISPATCH=runs needs a run started from a deployment "
                                                 f"with a {CHUNK_FLOW} deployment of the same name (prefect.yaml).")
    return name


def chunk_task(settings: PixelFlowSettings, upload: Upload | None):
    """What each chunk of a chunked run is submitted to, with :func:`tasks.chunks.encode_chunk`'s
    positional arguments: that task on the run's task runner, or ``dispatch-chunk`` to a flow
    run of its own (:func:`chunk_deployment`)."""
    deployment = chunk_deployment(settings) if upload is not None else None
    if deployment is None:
        return _retried(encode_chunk, settings).with_options(refresh_cache=True)
    get_run_logger().info("each chunk in its own flow run of %s", deployment)
    return BoundDispatch(_retried(dispatch_chunk, settings), upload, deployment)


def _run_name() -> str:
    params = get_run_context().flow_run.parameters
    return f"chunk {params.get('chunk', {}).get('index', '?')}: {params.get('upload', {}).get('key', '?')}"


@flow(name=CHUNK_FLOW, flow_run_name=_run_name, validate_parameters=True)
def transcode_chunk(upload: dict[str, Any], chunk: dict[str, int], rungs: list[str], config: dict[str, Any],
                    limits: dict[str, Any], bucket: str, prefix: str, asset_id: str, fingerprint: str, folder: str,
                    attempt: int) -> dict[str, Any]:
    """Encode one chunk of an upload for every rung and put it in the attempt's folder of the asset.

    Args:
        upload: The upload as the parent run inspected it (bucket, key, ETag, version, size):
            every read is pinned to that revision.
        chunk: The chunk (:func:`pixelflow.core.chunk_jobs.chunk_params`).
        rungs: The parent's ladder, by name: the plan made here from the probe must be it.
        config: The ladder's knobs (:func:`pixelflow.core.chunk_jobs.config_params`).
        limits: The parent's :class:`ProcessLimits` (its run-time cap's deadline included).
        bucket, prefix, asset_id, fingerprint, folder, attempt: Where the chunk is published,
            as :func:`tasks.chunks.encode_chunk` takes them.

    Returns:
        The chunk's range and how many objects it published (the parent reads the chunk itself
        from the result store).
    """
    settings = PixelFlowSettings()
    source, part, ladder = Upload.from_dict(upload), chunk_from_params(chunk), config_from_params(config)
    flow_run_id = str(get_run_context().flow_run.id)
    scratch = Path(settings.scratch_dir) / f"{asset_id}-chunk{part.index}-{flow_run_id[:8]}"
    try:
        if publish_fingerprint(bucket, s3_endpoint(), prefix, ladder) != fingerprint:
            raise PixelFlowError(ErrorCode.INTERNAL, "This chunk's run publishes elsewhere than its parent run "
                                                     "(another bucket, endpoint, prefix or ladder).")
        local = _retried(download_source, settings)(source, scratch / "source", settings.scratch_headroom,
                                                    settings.multipart_chunk_mb, settings.transfer_concurrency)
        info = validate(local, source.size, settings.limits(), settings.ffmpeg_memory_bytes, settings.ffmpeg_sandbox)
        plan = plan_ladder(*info.video.display_size, info.video.frame_rate, ladder) if info.video else []
        if [r.name for r in plan] != rungs:
            raise PixelFlowError(ErrorCode.INTERNAL, f"The ladder planned here ({[r.name for r in plan]}) is not the "
                                                     f"parent run's ({rungs}).")
        output = _retried(encode_chunk, settings).with_options(refresh_cache=True)(
            part, local, info, plan, ladder, scratch / "out", ProcessLimits(**limits), bucket, prefix, asset_id,
            fingerprint, folder, attempt)
    except PixelFlowError as error:  # the parent reads the code back from the state's message
        get_run_logger().error("%s", error)
        return Failed(message=str(error))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"index": part.index, "start": part.start, "end": part.end, "folder": folder, "attempt": attempt,
            "objects": len(output.objects())}
