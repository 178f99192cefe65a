"""Fault injection on real processes: find an FFmpeg process by what it writes and kill it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


def find_processes(*fragments: str) -> list[int]:
    """PIDs of processes whose command line contains every fragment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if all(fragment in cmdline for fragment in fragments):
            found.append(int(entry.name))
    return found


class Killer(threading.Thread):
    """Kill (SIGKILL) the first process matching ``fragments`` once it has run ``after`` seconds."""

    def __init__(self, *fragments: str, after: float = 0.5, timeout: float = 300.0):
        super().__init__(daemon=True)
        self.fragments = fragments
        self.after = after
        self.timeout = timeout
        self.killed: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._halt.is_set() and time.monotonic() < deadline:
            pids = [pid for pid in find_processes(*self.fragments) if pid != os.getpid()]
            if pids:
                time.sleep(self.after)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
