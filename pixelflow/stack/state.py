"""The state file of a running local stack, and stopping a stack from another process.

``pixelflow stack up`` records its child processes (pid and kernel start time, so that a reused
pid is never signalled) in ``<home>/stack.json``; ``pixelflow stack down`` reads it back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable

Log = Callable[[str], None]


def read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None


def running_state(state_file: Path) -> dict[str, Any] | None:
    """The recorded state of a stack of which at least one process is still alive, if any."""
    state = read_state(state_file)
    if state and any(process_alive(proc) for proc in state.get("processes", [])):
        return state
    return None


def stop_from_state(state_file: Path, log: Log = print, timeout: float = 20.0) -> int:
    """Stop the processes recorded in a stack state file; returns how many were stopped."""
    state = read_state(state_file)
    if not state:
        return 0
    processes = state.get("processes", [])
    alive_before = sum(1 for proc in processes if process_alive(proc))
    controller = state.get("controller")
    if controller and controller != os.getpid() and process_alive({"pid": controller, "start": state.get("controller_start")}):
        # A foreground `stack up` owns the children: ask it to stop them itself.
        log(f"stopping the stack controlled by pid {controller}")
        os.kill(controller, signal.SIGTERM)
        deadline = time.monotonic() + timeout * 3
        while _pid_exists(controller) and time.monotonic() < deadline:
            time.sleep(0.2)
    stopped = alive_before - sum(1 for proc in processes if process_alive(proc))
    for proc in reversed(processes):
        if not process_alive(proc):
            continue
        log(f"stopping {proc['name']} (pid {proc['pid']})")
        _terminate_group(proc["pid"], timeout)
        stopped += 1
    try:
        state_file.unlink()
    except OSError:
        pass
    return stopped


def _terminate_group(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_exists(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def proc_start(pid: int) -> str | None:
    """The kernel's start time of a process (guards against reused pids), where /proc exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(proc: dict[str, Any]) -> bool:
    pid = proc.get("pid")
    if not pid or not _pid_exists(pid):
        return False
    recorded = proc.get("start")
    return recorded is None or proc_start(pid) in (None, recorded)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
