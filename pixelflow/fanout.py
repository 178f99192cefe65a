"""How one decode of the source reaches every rung's task, inside one flow run.

Two engines (``PIXELFLOW_ENGINE``):

* ``single`` (:func:`open_shared`): one FFmpeg process decodes the source once and encodes
  every pending rung (and the audio and the poster). Each rung's task claims its rung, follows
  the shared process's progress, and takes over the rung's output once it ends; if the process
  fails for any reason but a damaged source, each rung's task retries alone, straight from the
  downloaded source.
* ``fanout`` (:func:`open_fanout`): the decode task's FFmpeg writes each rung's raw frames into
  its own pipe, and that rung's encoder reads the other end: one pipe hop, nothing copied
  through Python. The flow process keeps a spare read end of every pipe, so the decoder never
  sees a broken pipe: when an encoder dies, its task releases the rung and a thread drains that
  pipe and drops the frames. The decoder and the other rungs carry on: one failed rung costs a
  retry of that rung, not of the whole ladder.

Every end is closed by the task that owns it, whatever happens, so a failed decoder gives the
encoders end-of-file and nobody waits forever.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from pixelflow.errors import PixelFlowError

PIPE_SIZE = 1 << 20  # 1 MiB pipe buffers: fewer wake-ups per raw frame
CHUNK = 1 << 20

_registry: dict[str, "Fanout"] = {}
_lock = threading.Lock()


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    return read_fd, write_fd


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _drain(source: int) -> None:
    """Read a pipe until its writer closes it, dropping the bytes."""
    try:
        while os.read(source, CHUNK):
            pass
    except OSError:
        pass
    finally:
        close_quietly(source)


@dataclass
class Fanout:
    id: str
    rungs: list[str]
    mode: str = "fanout"  # "fanout": pipes to one encoder per rung; "single": one process encodes every rung
    read_fds: dict[str, int] = field(default_factory=dict)
    write_fds: dict[str, int] = field(default_factory=dict)
    spare_fds: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    claimed: set[str] = field(default_factory=set)
    out_time: float = 0.0

    def claim(self, rung: str) -> bool:
        """A ``single`` engine's rung, taken by its task's first attempt (``False`` afterwards, so a
        retry encodes the rung alone)."""
        with _lock:
            if self.mode != "single" or rung not in self.rungs or rung in self.claimed:
                return False
            self.claimed.add(rung)
            return True

    def take_reader(self, rung: str) -> int | None:
        """The encoder's end of its pipe (once; ``None`` afterwards, e.g. for a task retry)."""
        with _lock:
            return self.read_fds.pop(rung, None)

    def release(self, rung: str) -> None:
        """The rung's encoder is gone (finished or failed): drain what the decoder still writes
        for it. Idempotent."""
        with _lock:
            spare = self.spare_fds.pop(rung, None)
        if spare is not None:
            threading.Thread(target=_drain, args=(spare,), name=f"pixelflow-drain-{rung}", daemon=True).start()

    def take_writers(self) -> dict[str, int]:
        with _lock:
            fds, self.write_fds = self.write_fds, {}
            return fds

    @contextmanager
    def producing(self) -> Iterator[None]:
        """Around the decoder's (or the ladder process's) work: whatever happens, the rungs'
        tasks waiting in :meth:`wait` are released, with its failure if it failed."""
        try:
            yield
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None, on_tick=None, tick: float = 1.0) -> None:
        """Wait for the decoder; re-raise its failure for the encoders.

        Args:
            timeout: Seconds to wait at most.
            on_tick: Called with the media time the decoder reached, every ``tick`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self.done.wait(tick if left is None else min(tick, left))
            if on_tick is not None and not self.done.is_set():
                on_tick(self.out_time)
        if not self.done.is_set():
            raise PixelFlowError("transcode_failed", "The decoder did not finish in time.")
        if isinstance(self.error, PixelFlowError):
            raise PixelFlowError(self.error.code, self.error.message, self.error.details)
        if self.error is not None:
            raise PixelFlowError("transcode_failed", f"The decoder failed: {self.error}")

    def close(self) -> None:
        """Close every end nobody took (a task that never started) and the spare read ends."""
        with _lock:
            fds = list(self.read_fds.values()) + list(self.write_fds.values()) + list(self.spare_fds.values())
            self.read_fds.clear()
            self.write_fds.clear()
            self.spare_fds.clear()
            _registry.pop(self.id, None)
        for fd in fds:
            close_quietly(fd)


def open_fanout(rungs: list[str]) -> Fanout:
    fanout = Fanout(id=uuid.uuid4().hex, rungs=list(rungs))
    for rung in rungs:
        read_fd, write_fd = _pipe()
        fanout.write_fds[rung] = write_fd
        fanout.read_fds[rung] = read_fd
        fanout.spare_fds[rung] = os.dup(read_fd)
    with _lock:
        _registry[fanout.id] = fanout
    return fanout


def open_shared(rungs: list[str]) -> Fanout:
    """The ``single`` engine: one process encodes ``rungs``; their tasks claim and follow it."""
    fanout = Fanout(id=uuid.uuid4().hex, rungs=list(rungs), mode="single")
    with _lock:
        _registry[fanout.id] = fanout
    return fanout


def get_fanout(fanout_id: str | None) -> Fanout | None:
    if not fanout_id:
        return None
    with _lock:
        return _registry.get(fanout_id)
