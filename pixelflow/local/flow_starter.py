"""A warm start for process-pool flow runs: a process that has already imported Prefect and the
``transcode`` flow forks each run's engine, instead of a new Python process importing them
(1 to 2 s of CPU per run, most of an idle stack's wait before the first FFmpeg).

It stays inside Prefect's model: the process worker still takes the run from the work pool and
starts its command, only the command is this module's small *launcher* (the pool's ``command``
job variable, set by ``pixelflow stack up``). The launcher hands its standard streams, its
environment (the run's, as the worker built it) and its working directory to the *starter*
over a Unix socket; the starter forks a child that takes them over, starts a session of its
own and runs ``python -m prefect.engine`` as that process would have. The launcher stays the
process the worker knows: it forwards SIGTERM and SIGINT to the child, exits with the child's
status (or dies of the same signal), and a launcher that dies (SIGKILL, a killed worker's process
group) takes the child's whole session with it.

Nothing is trusted to be warm: when the starter is not running, or the run's Prefect settings
differ from those the starter imported Prefect with, or a source file of PixelFlow changed since
it started, the run gets the cold start it would have had (``python -m prefect.engine``,
``exec``'d), and a starter with stale sources starts itself again once it is idle.

Example:
    The stack runs both ends; by hand, with a worker of a pool whose ``command`` is the
    launcher::

        PIXELFLOW_FLOW_STARTER_SOCKET=/tmp/starter.sock python -m pixelflow.local.flow_starter serve &
        PIXELFLOW_FLOW_STARTER_SOCKET=/tmp/starter.sock prefect worker start --pool pixelflow-local
"""

from __future__ import annotations

import array
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

#: Environment variable naming the starter's socket (the launcher's and the starter's).
SOCKET_ENV = "PIXELFLOW_FLOW_STARTER_SOCKET"
#: The modules a starter imports before it takes runs.
PRELOAD = ("prefect.engine", "prefect.flow_engine", "flows.transcode", "flows.captions", "flows.chunk")
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 4 << 20


def launch_command() -> str:
    """The process pool's ``command`` job variable that starts runs through the starter."""
    import shlex

    return shlex.join([sys.executable, "-m", "pixelflow.local.flow_starter", "launch"])


def _cold_start(env: dict[str, str] | None = None) -> None:
    """Become ``python -m prefect.engine`` (what the worker starts without a starter)."""
    args = [sys.executable, "-m", "prefect.engine"]
    if env is None:
        os.execv(sys.executable, args)
    os.execve(sys.executable, args, env)


# --- the launcher: the process the worker starts --------------------------------------------
def launch() -> int:
    """Run this flow run (``PREFECT__FLOW_RUN_ID``) through the starter, or start it cold.

    Returns:
        The engine's exit status (a child killed by a signal kills the launcher with it).
    """
    path = os.environ.get(SOCKET_ENV)
    conn = None
    if path:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(_address(path))
            body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode()
            conn.sendmsg([_HEADER.pack(len(body)) + body],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
            reader = conn.makefile("rb")
            started = json.loads(reader.readline() or b"{}")
        except (OSError, ValueError):
            started = {}
        if not started.get("pid"):
            conn.close()
            conn = None
    if conn is None:
        _cold_start()
    pid = started["pid"]

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    line = reader.readline()  # a forwarded signal interrupts it; Python resumes the read (PEP 475)
    ended = json.loads(line) if line else {}
    if "signal" in ended:
        signal.signal(ended["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), ended["signal"])
        time.sleep(1)
    return int(ended.get("status", 1))


# --- the starter: imports once, forks each run ----------------------------------------------
class Starter:
    """The warm process: listens on ``path`` and forks a child per launcher.

    Args:
        path: The Unix socket to listen on, or ``@name`` for Linux's abstract namespace (a file
            socket is created owner-only; either way only this user's launchers are served).
        preload: Modules to import before taking runs.
    """

    def __init__(self, path: str, preload: tuple[str, ...] = PRELOAD) -> None:
        self.path = path
        self.preload = preload
        self.children: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
        self.stopping = False
        self.sources: dict[str, float] = {}
        self.settings = None

    def prepare(self) -> None:
        """Import Prefect and the flow, and note the sources they came from."""
        import importlib

        for name in self.preload:
            importlib.import_module(name)
        from prefect.settings import get_current_settings

        from pixelflow.aws import load_models

        load_models()
        self.settings = get_current_settings()
        installed = tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
        for module in list(sys.modules.values()):  # the project's own sources, not installed packages
            file = getattr(module, "__file__", None)
            if file and not any(Path(file).resolve().is_relative_to(p) for p in installed):
                try:
                    self.sources[file] = os.stat(file).st_mtime_ns
                except OSError:
                    pass

    def stale(self) -> bool:
        """Whether a source file imported at start changed (the warm copy would run old code)."""
        for file, mtime in self.sources.items():
            try:
                if os.stat(file).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def serve(self) -> dict | None:
        """Take runs until SIGTERM (then wait for the running children).

        Returns:
            In a forked child only: the run's request (environment, working directory, streams).
            The starter itself never returns: it exits, or starts itself again when stale.
        """
        self.prepare()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.path.startswith("@"):
            listener.bind(_address(self.path))
        else:
            if os.path.exists(self.path):
                os.unlink(self.path)
            old_umask = os.umask(0o177)
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "listen")
        print(f"flow starter ready on {self.path} (pid {os.getpid()}, {len(self.sources)} sources)", flush=True)
        restart = False
        while True:
            if self.stopping and not self.children:
                selector.close()
                listener.close()
                if not self.path.startswith("@") and os.path.exists(self.path):
                    os.unlink(self.path)
                sys.exit(0)
            if restart and not self.children:
                selector.close()
                listener.close()
                print("sources changed: the flow starter starts again", flush=True)
                os.execv(sys.executable, [sys.executable, "-m", "pixelflow.local.flow_starter", "serve",
                                          "--socket", self.path])
            for key, _ in selector.select(timeout=0.2):
                if key.data == "listen":
                    if self.stopping:
                        continue
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    request = self._read_request(conn)
                    if request is None:
                        conn.close()
                        continue
                    cold = self.stale()
                    restart = restart or cold
                    pid = os.fork()
                    if pid == 0:
                        selector.close()
                        listener.close()
                        for other in self.children.values():
                            other.close()
                        conn.close()
                        request["cold"] = cold
                        return request
                    for fd in request["fds"]:
                        os.close(fd)
                    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                    self.children[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
                else:  # a launcher hung up (or wrote): one that is gone takes its run with it
                    conn, pid = key.fileobj, key.data
                    try:
                        gone = conn.recv(1) == b""
                    except OSError:
                        gone = True
                    if gone:
                        selector.unregister(conn)
                        _kill_session(pid)
            self._reap(selector)

    def _stop(self, _signum, _frame) -> None:
        self.stopping = True

    def _read_request(self, conn: socket.socket) -> dict | None:
        conn.setblocking(True)
        conn.settimeout(5)
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
            if uid != os.getuid():
                return None
            fds = array.array("i")
            data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_LEN(3 * fds.itemsize))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if len(fds) != 3 or len(data) < _HEADER.size:
                for fd in fds:
                    os.close(fd)
                return None
            (size,) = _HEADER.unpack_from(data)
            if size > _MAX_REQUEST:
                raise ValueError("request too large")
            body = data[_HEADER.size:]
            while len(body) < size:
                chunk = conn.recv(size - len(body))
                if not chunk:
                    raise ValueError("request cut short")
                body += chunk
            request = json.loads(body)
            request["fds"] = list(fds)
            conn.settimeout(None)
            return request
        except (OSError, ValueError):
            return None

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            _kill_session(pid)  # what the run left behind in its session (an FFmpeg it did not stop)
            ended = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                     else {"status": os.waitstatus_to_exitcode(status)})
            try:
                selector.unregister(conn)
            except (KeyError, ValueError):
                pass
            try:
                conn.sendall(json.dumps(ended).encode() + b"\n")
            except OSError:
                pass
            conn.close()


def _address(path: str) -> str:
    """A socket path, or (``@name``) a name in Linux's abstract namespace: no file, no length
    limit of the directory it would live in."""
    return "\0" + path[1:] if path.startswith("@") else path


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(request: dict, settings) -> None:
    """In the forked child: take the launcher's environment, directory and streams over, and run
    the engine (``exec`` a cold one when this process's imports do not fit the run)."""
    os.setsid()
    _die_with_parent()
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env = {str(k): str(v) for k, v in request["env"].items()}
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    cold = "PixelFlow's sources changed since the starter started" if request.get("cold") else None
    if not cold:
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        refresh_global_settings_context()
        if get_current_settings() != settings:
            cold = "the run's Prefect settings differ from the starter's"
    run = env.get("PREFECT__FLOW_RUN_ID", "?")
    print(f"flow run {run}: pid {os.getpid()}, " + (f"cold start ({cold})" if cold else "warm start"), flush=True)
    for target, fd in enumerate(request["fds"]):  # from here on, the run's own streams
        os.dup2(fd, target)
        os.close(fd)
    if cold:
        _cold_start(env)
    import runpy

    sys.argv = ["prefect.engine"]
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the starter dies (``PR_SET_PDEATHSIG``)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pixelflow.local.flow_starter", description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="import Prefect and the flow once, fork each run")
    serve.add_argument("--socket", default=os.environ.get(SOCKET_ENV), help=f"socket path (default: ${SOCKET_ENV})")
    actions.add_parser("launch", help="start this flow run through the starter (the pool's command)")
    args = parser.parse_args(argv)
    if args.action == "launch":
        return launch()
    if not args.socket:
        parser.error(f"--socket or {SOCKET_ENV} is required")
    starter = Starter(args.socket)
    request = starter.serve()
    run_child(request, starter.settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
