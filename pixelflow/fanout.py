"""Pipes from one decoder process to one encoder process per rung, inside one flow run.

The flow opens a :class:`Fanout` for the rungs that need encoding; the decode task and each
rung's encode task (threads of the same flow-run process) take their ends of the pipes by the
fanout's id. Every end is closed by the task that owns it, whatever happens, so a failed decoder
gives the encoders end-of-file and a failed encoder gives the decoder a broken pipe: nobody
waits forever.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from dataclasses import dataclass, field

from pixelflow.errors import PixelFlowError

PIPE_SIZE = 1 << 20  # 1 MiB pipe buffers: fewer context switches per raw frame

_registry: dict[str, "Fanout"] = {}
_lock = threading.Lock()


@dataclass
class Fanout:
    id: str
    rungs: list[str]
    read_fds: dict[str, int] = field(default_factory=dict)
    write_fds: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    decoded_seconds: float = 0.0

    def take_reader(self, rung: str) -> int:
        with _lock:
            return self.read_fds.pop(rung)

    def take_writers(self) -> dict[str, int]:
        with _lock:
            fds, self.write_fds = self.write_fds, {}
            return fds

    def finish(self, error: BaseException | None = None, decoded_seconds: float = 0.0) -> None:
        self.error = error
        self.decoded_seconds = decoded_seconds
        self.done.set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the decoder; re-raise its failure for the encoders."""
        if not self.done.wait(timeout):
            raise PixelFlowError("transcode_failed", "The decoder did not finish in time.")
        if isinstance(self.error, PixelFlowError):
            raise PixelFlowError(self.error.code, self.error.message, self.error.details)
        if self.error is not None:
            raise PixelFlowError("transcode_failed", f"The decoder failed: {self.error}")

    def close(self) -> None:
        """Close every end nobody took (a task that never started)."""
        with _lock:
            fds = list(self.read_fds.values()) + list(self.write_fds.values())
            self.read_fds.clear()
            self.write_fds.clear()
            _registry.pop(self.id, None)
        for fd in fds:
            close_quietly(fd)


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def open_fanout(rungs: list[str]) -> Fanout:
    fanout = Fanout(id=uuid.uuid4().hex, rungs=list(rungs))
    for rung in rungs:
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        fanout.read_fds[rung] = read_fd
        fanout.write_fds[rung] = write_fd
    with _lock:
        _registry[fanout.id] = fanout
    return fanout


def get_fanout(fanout_id: str | None) -> Fanout | None:
    if not fanout_id:
        return None
    with _lock:
        return _registry.get(fanout_id)
