"""Retry policy shared by PixelFlow's tasks: transient failures are retried with backoff,
rejections of the source never are (they cannot succeed)."""

from __future__ import annotations

from pixelflow.errors import PixelFlowError

RETRIES = 2
RETRY_DELAYS = [2, 10]


def retry_transient(task, task_run, state) -> bool:
    """``retry_condition_fn`` for Prefect tasks."""
    try:
        state.result()
    except PixelFlowError as error:
        return error.retryable
    except Exception:
        return True
    return False
