"""The shared ladder process, as the tasks of one flow run see it.

One FFmpeg process (the ``encode-ladder`` task) decodes the source once and encodes every
pending rung, and with them the audio rendition and the poster frame. Each of those outputs has
its own task (``transcode-<rung>``, ``transcode-audio``, ``poster``): the task's first attempt
claims its output from the :class:`LadderProcess`, follows the process's progress, and takes the
output over once the process ends. If the process fails for any reason but a damaged source,
each task's retry makes its output alone, straight from the downloaded source.

The flow creates one :class:`LadderProcess` per run and passes the object itself to those tasks
as a parameter: no registry, nothing to close. It holds a lock and an event, which Prefect
cannot hash for a cache key, so the tasks that take it use ``cache_policy=NO_CACHE``.

Example:
    >>> ladder = LadderProcess(["360p", "audio"])
    >>> ladder.claim("360p"), ladder.claim("360p"), ladder.claim("720p")
    (True, False, False)
    >>> with ladder.producing():
    ...     ladder.out_time = 2.0
    >>> ladder.wait(timeout=1)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from pixelflow.core.loudness import Loudnorm
from pixelflow.errors import ErrorCode, PixelFlowError


class LadderProcess:
    """The outputs one FFmpeg process makes for a flow run, and its outcome once it ends.

    Args:
        outputs: The names of what the process makes: rung names, ``"audio"``, ``"poster"``.
    """

    def __init__(self, outputs: Iterable[str]):
        self.outputs = tuple(outputs)
        #: Media time (seconds) the process has reached, for the waiting tasks' progress.
        self.out_time = 0.0
        #: The audio's loudness as the process measured it (loudness normalisation on), for the
        #: audio task's second pass; ``None`` when it did not measure it or printed nothing readable.
        self.loudness: Loudnorm | None = None
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"LadderProcess({list(self.outputs)!r})"

    def claim(self, name: str) -> bool:
        """Whether the process makes ``name`` for the caller: ``True`` once (a task's first
        attempt), ``False`` afterwards (a retry makes it alone) and for anything not in
        :attr:`outputs`."""
        with self._lock:
            if name not in self.outputs or name in self._claimed:
                return False
            self._claimed.add(name)
            return True

    @contextmanager
    def producing(self) -> Iterator[None]:
        """Around the process's run: whatever happens, the tasks waiting in :meth:`wait` are
        released, with its failure if it failed."""
        try:
            yield
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None, on_tick: Callable[[float], None] | None = None,
             tick: float = 1.0) -> None:
        """Wait for the process to end; re-raise its failure for the waiting task.

        Args:
            timeout: Seconds to wait at most.
            on_tick: Called with the media time the process reached, every ``tick`` seconds.
            tick: Seconds between calls of ``on_tick``.

        Raises:
            PixelFlowError: The process's own error (a rejection of the source keeps its code),
                or ``transcode_failed`` for any other failure or past ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._done.wait(tick if left is None else min(tick, left))
            if on_tick is not None and not self._done.is_set():
                on_tick(self.out_time)
        if not self._done.is_set():
            raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, "The ladder process did not finish in time.")
        if isinstance(self._error, PixelFlowError):
            raise PixelFlowError(self._error.code, self._error.message, self._error.details)
        if self._error is not None:
            raise PixelFlowError(ErrorCode.TRANSCODE_FAILED, f"The ladder process failed: {self._error}")
