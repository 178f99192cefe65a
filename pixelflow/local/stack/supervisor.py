"""The local stack's child processes and its state file.

:class:`Supervisor` starts each service in its own session (process group) with its output in
``<home>/logs/<name>.log``, records them all in ``<home>/stack.json`` (read back by
``pixelflow stack down``), starts a supervised service again when it exits by itself, and stops
services one by one (fault injection) or all in order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pixelflow.local.stack.config import Log, StackConfig, StackError
from pixelflow.local.stack.state import proc_start, read_state, tail

#: How often a supervised service (worker, bridge, reconciler) is restarted before the stack gives up.
MAX_RESTARTS = 20

#: Order of :meth:`Supervisor.stop_all`: the services that talk to the others go first.
STOP_ORDER = {"reconciler": 0, "bridge": 0, "webhooks": 0, "worker": 1, "flow-starter": 2, "prefect-server": 2, "postgres": 3, "moto": 3}


@dataclass
class Child:
    """A running service.

    Attributes:
        name: The service (``moto``, ``postgres``, ``prefect-server``, ``worker``, ``bridge``, ``reconciler``).
        process: Its process, leader of its own process group.
        log_path: Where its output goes.
        restart: Starts it again when it exits by itself; ``None`` for a service that is not
            supervised (its exit stops the stack).
    """

    name: str
    process: subprocess.Popen
    log_path: Path
    restart: Callable[[], object] | None = None


class Supervisor:
    """The child processes of one local stack.

    Args:
        config: The stack's configuration (log directory, state file, project directory,
            ``supervise``).
        log: Where progress messages go.
        describe: What the state file records besides the processes (the stack's URLs).
    """

    def __init__(self, config: StackConfig, log: Log, describe: Callable[[], dict[str, Any]]) -> None:
        self.config = config
        self.log = log
        self.describe = describe
        self.children: list[Child] = []
        #: How often each supervised service was started again after it exited by itself.
        self.restarts: dict[str, int] = {}

    def child(self, name: str) -> subprocess.Popen | None:
        """The running process of a service, if any."""
        for child in self.children:
            if child.name == name:
                return child.process
        return None

    def adopt(self, name: str, process: subprocess.Popen, log_path: Path,
              restart: Callable[[], object] | None = None) -> None:
        """Supervise a process started elsewhere (and record it in the state file)."""
        self.children.append(Child(name, process, log_path, restart))
        self._write_state()

    def spawn(self, name: str, args: list[str], env: dict[str, str],
              restart: Callable[[], object] | None = None) -> subprocess.Popen:
        """Start a service in the project directory, logging to ``<log_dir>/<name>.log``.

        Raises:
            StackError: When the service is already running.
        """
        from pixelflow.local.processes import spawn

        if self.child(name) is not None:
            raise StackError(f"{name} is already running; stop it first")
        log_path = self.config.log_dir / f"{name}.log"
        process = spawn(args, log_path, env=env, cwd=str(self.config.project_dir))
        self.adopt(name, process, log_path, restart)
        return process

    def stop(self, name: str, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop a service: SIGTERM (then SIGKILL after ``timeout``) or, with ``kill``, SIGKILL of
        its process group at once."""
        from pixelflow.local.processes import stop_process

        for child in [c for c in self.children if c.name == name]:
            if kill:
                try:
                    os.killpg(child.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.process.wait(10)
            else:
                stop_process(child.process, timeout=timeout)
            self.children.remove(child)
        self._write_state()

    def check(self) -> None:
        """Start an exited supervised service again (at most :data:`MAX_RESTARTS` times each).

        Raises:
            StackError: When another service has exited.
        """
        for child in list(self.children):
            code = child.process.poll()
            if code is None:
                continue
            if self.config.supervise and child.restart and self.restarts.get(child.name, 0) < MAX_RESTARTS:
                self.children.remove(child)
                self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
                self.log(f"{child.name} exited with {code}; starting it again (see {child.log_path})")
                child.restart()
                continue
            raise StackError(f"{child.name} exited with {code}; see {child.log_path}:\n{tail(child.log_path)}")

    def stop_all(self) -> None:
        """Stop every service in :data:`STOP_ORDER`; remove the state file if this process owns it."""
        from pixelflow.local.processes import stop_process

        for child in sorted(reversed(self.children), key=lambda c: STOP_ORDER.get(c.name, -1)):
            if child.process.poll() is None:
                self.log(f"stopping {child.name} (pid {child.process.pid})")
            stop_process(child.process, timeout=30 if child.name in ("worker", "webhooks") else 15)
        self.children.clear()
        state = read_state(self.config.state_file)
        if state and state.get("controller") == os.getpid():
            self.config.state_file.unlink(missing_ok=True)

    def detach(self) -> None:
        """Leave the services running after this process exits (``pixelflow stack down`` stops them)."""
        self._write_state(detached=True)
        self.children.clear()

    def wait(self, poll: float = 1.0) -> None:
        """Block until SIGINT/SIGTERM or until a service that is not supervised exits; then stop
        everything."""
        stop: dict[str, int | None] = {"signal": None}

        def handler(signum, _frame):
            stop["signal"] = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while stop["signal"] is None:
                self.check()
                time.sleep(poll)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.stop_all()

    def _write_state(self, detached: bool = False) -> None:
        state = {
            "controller": None if detached else os.getpid(),
            "controller_start": None if detached else proc_start(os.getpid()),
            "started": datetime.now(timezone.utc).isoformat(),
            **self.describe(),
            "processes": [
                {"name": c.name, "pid": c.process.pid, "start": proc_start(c.process.pid), "log": str(c.log_path)}
                for c in self.children
            ],
        }
        self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.config.state_file)
