"""Measure a group of processes: wall time, CPU time, peak memory.

CPU time and the largest single-process peak come from the kernel's accounting of each
top-level process as it is reaped (``os.wait4``): user + system time of the process and of every
descendant it waited for, and the largest max RSS among them. The peak memory of the whole
process tree at once (for example three FFmpeg processes running side by side) is sampled from
``/proc`` a few times a second, together with a per-process breakdown (command, CPU, peak RSS).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessSample:
    """What the sampler saw of one process of the tree."""

    pid: int
    argv: list[str]
    peak_rss: int = 0
    cpu: float = 0.0
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass
class Measurement:
    """Resources used by one run of a contender."""

    wall: float
    cpu_user: float
    cpu_sys: float
    max_rss: int  # bytes, largest single process (kernel accounting)
    tree_peak_rss: int  # bytes, largest sampled sum over the live process tree
    returncodes: list[int]
    processes: list[ProcessSample] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.returncodes)

    def to_dict(self) -> dict:
        return {
            "wall": round(self.wall, 3), "cpu": round(self.cpu, 3), "cpu_user": round(self.cpu_user, 3),
            "cpu_sys": round(self.cpu_sys, 3), "max_rss": self.max_rss, "tree_peak_rss": self.tree_peak_rss,
            "returncodes": self.returncodes,
            "processes": [
                {"pid": p.pid, "argv": p.argv, "peak_rss": p.peak_rss, "cpu": round(p.cpu, 2),
                 "seconds": round(p.last_seen - p.first_seen, 2)}
                for p in self.processes
            ],
        }


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _read_proc(pid: int) -> tuple[int, float, list[str]] | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            rss = int(handle.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except (OSError, IndexError, ValueError):
        return None
    return rss, cpu, argv


class TreeSampler:
    """Samples the process trees under ``roots`` in a background thread."""

    def __init__(self, roots: list[int], interval: float = 0.2):
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self.seen: dict[int, ProcessSample] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "TreeSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        children = _children_map()
        stack = list(self.roots)
        total = 0
        now = time.monotonic()
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            read = _read_proc(pid)
            if read is None:
                continue
            rss, cpu, argv = read
            if not argv:  # a zombie: already exited
                continue
            total += rss
            record = self.seen.get(pid)
            if record is None:
                record = self.seen[pid] = ProcessSample(pid, argv, first_seen=now)
            elif argv != record.argv:  # first seen between fork and exec: keep the program it became
                record.argv, record.peak_rss = argv, 0
            record.peak_rss = max(record.peak_rss, rss)
            record.cpu = max(record.cpu, cpu)
            record.last_seen = now
        self.peak = max(self.peak, total)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session, and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            process.kill()
        except OSError:
            pass


def wait_measured(processes: list[subprocess.Popen], started: float, sampler: TreeSampler | None = None,
                  timeout: float | None = None) -> Measurement:
    """Reap ``processes`` with ``os.wait4`` and return what they used.

    Args:
        processes: Processes started by the caller (just now, at ``started``).
        started: ``time.monotonic()`` just before the first was started.
        sampler: A running :class:`TreeSampler` over the same processes (stopped here).
        timeout: Kill every process still running after this many seconds from ``started``.
    """
    user = system = 0.0
    max_rss = 0
    codes: list[int] = []
    pending = {p.pid: p for p in processes}
    timer = None

    def kill_all():
        for process in list(pending.values()):
            kill_tree(process)

    if timeout is not None:
        timer = threading.Timer(max(0.0, timeout - (time.monotonic() - started)), kill_all)
        timer.daemon = True
        timer.start()
    try:
        for process in processes:  # a process that exits early waits as a zombie, usage intact
            _, status, usage = os.wait4(process.pid, 0)
            pending.pop(process.pid, None)
            code = os.waitstatus_to_exitcode(status)
            process.returncode = code
            codes.append(code)
            user += usage.ru_utime
            system += usage.ru_stime
            max_rss = max(max_rss, usage.ru_maxrss * 1024)
    except BaseException:
        kill_all()  # interrupted: leave nothing running
        if sampler is not None:
            sampler.stop()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    wall = time.monotonic() - started
    if sampler is not None:
        sampler.stop()
    return Measurement(
        wall=wall, cpu_user=user, cpu_sys=system, max_rss=max_rss,
        tree_peak_rss=sampler.peak if sampler else 0, returncodes=codes,
        processes=sorted(sampler.seen.values(), key=lambda p: p.first_seen) if sampler else [],
    )


def fresh_dir(folder: Path) -> Path:
    """An empty folder at ``folder`` (whatever was there removed)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run_group(commands: list[list[str]], log: Path, env: dict[str, str] | None = None, cwd: str | None = None,
              timeout: float | None = None, stdin: list[int | None] | None = None,
              pass_fds: list[tuple[int, ...]] | None = None, after_start=None, quiet_stdout: bool = False) -> Measurement:
    """Start ``commands`` all at once and measure them until the last one exits.

    Args:
        commands: Argument lists, started in order.
        log: File collecting their output.
        env: Environment of every process.
        cwd: Working directory of every process.
        timeout: Kill them all past this many seconds.
        stdin: Per command, a file descriptor to use as standard input (else ``/dev/null``).
        pass_fds: Per command, file descriptors it inherits.
        after_start: Called once every process is started (to close the parent's pipe ends).
        quiet_stdout: Send standard output to ``/dev/null`` (only standard error is logged).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        started = time.monotonic()
        processes = []
        try:
            for i, cmd in enumerate(commands):
                fd_in = stdin[i] if stdin and stdin[i] is not None else subprocess.DEVNULL
                processes.append(subprocess.Popen(
                    cmd, stdin=fd_in, stdout=subprocess.DEVNULL if quiet_stdout else out, stderr=out, env=env, cwd=cwd,
                    pass_fds=pass_fds[i] if pass_fds else (), start_new_session=True))
        except BaseException:
            for process in processes:
                kill_tree(process)
            raise
        finally:
            if after_start is not None:
                after_start()
        sampler = TreeSampler([p.pid for p in processes]).start()
        return wait_measured(processes, started, sampler, timeout)


def read_service_cpu(pid: int) -> float:
    """CPU seconds used so far by a long-running service process and its reaped children."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2:].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant."""
    children = _children_map()
    stack, total = [root], 0.0
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        total += read_service_cpu(pid)
    return total
