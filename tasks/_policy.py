"""Retry policy shared by PixelFlow's tasks: transient failures are retried with backoff,
rejections of the source never are (they cannot succeed)."""

from __future__ import annotations

from pixelflow.errors import ErrorCode, PixelFlowError

RETRIES = 2
RETRY_DELAYS = [2, 10]


def retry_transient(task, task_run, state) -> bool:
    """``retry_condition_fn`` for Prefect tasks."""
    try:
        state.result()
    except PixelFlowError as error:
        # A missing object is the flow's to redo: repeating the same check cannot help.
        return error.retryable and error.code != ErrorCode.ASSET_INCOMPLETE
    except Exception:
        return True
    return False
