"""Start and stop the local services PixelFlow runs against: a moto server (S3 and SQS) and a
Prefect server with its embedded SQLite database. Used by the local stack and by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers with a status below 500."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last})")


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment")
    return found


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: str | None = None,
          **popen) -> subprocess.Popen:
    """Start ``args`` in its own session with its output appended to ``log_path``.

    Args:
        popen: More :class:`subprocess.Popen` arguments (e.g. ``user``/``group`` to run it as
            another user).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True, **popen,
        )


#: Settings for runs against a local moto server. moto answers every ranged GET by reading the
#: whole object, so a multipart download costs it one full read per part: against moto one GET
#: stream is about three times faster (0.4 s against 1.35 s for 160 MB in 16 MiB parts). Against
#: S3, keep the default parts, which S3 serves in parallel.
MOTO_SETTINGS = {"PIXELFLOW_MULTIPART_CHUNK_MB": "1024"}


def with_moto_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`MOTO_SETTINGS` added where it does not set them itself."""
    for name, value in MOTO_SETTINGS.items():
        env.setdefault(name, value)
    return env


def start_moto(port: int | None = None, log_dir: Path = Path(".pixelflow/logs")) -> Service:
    """A moto server on loopback: the local S3 and SQS (and ECS, CloudFormation) endpoint."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    log_path = log_dir / "moto.log"
    process = spawn([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log_path, env)
    wait_http(f"{url}/moto-api/", timeout=60, process=process)
    return Service("moto", url, process, log_path)


def prefect_env(api_url: str | None = None, home: Path | None = None) -> dict[str, str]:
    """Environment for Prefect processes run locally: no analytics (no network), a private home."""
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT"] = "false"
    env.setdefault("PREFECT_LOGGING_COLORS", "false")
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def sqlite_url(home: Path) -> str:
    """The URL of the SQLite database a local Prefect server keeps under its ``home``."""
    return f"sqlite+aiosqlite:///{(home / 'prefect.db').resolve()}"


def start_prefect_server(port: int | None = None, home: Path = Path(".pixelflow/prefect"),
                         log_dir: Path = Path(".pixelflow/logs"), timeout: float = 120.0,
                         database_url: str | None = None) -> Service:
    """``prefect server start`` with its embedded SQLite database under ``home`` (or ``database_url``).

    Args:
        port: Port on loopback; a free one when not given.
        home: ``PREFECT_HOME`` of the server, where its SQLite database is.
        database_url: Its database instead (e.g. :meth:`pixelflow.local.postgres.LocalPostgres.url`).
        log_dir: Where ``prefect-server.log`` is written.
        timeout: Seconds to wait for ``/api/health`` to answer.

    Returns:
        The running server; its ``url`` ends in ``/api``.
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(home=home.resolve())
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url or sqlite_url(home)
    log_path = log_dir / "prefect-server.log"
    process = spawn([_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], log_path, env)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", timeout=timeout, process=process)
    except BaseException:
        stop_process(process)
        raise
    return Service("prefect", url, process, log_path)


#: How long a command waits for the Prefect server it starts itself. A fresh environment whose
#: bytecode is not compiled yet takes far longer than Prefect's 20 s limit for its temporary
#: server on a loaded 2-core machine; the wait ends early if the server exits.
LOCAL_SERVER_TIMEOUT = 600.0


class LocalServerError(RuntimeError):
    """A Prefect server started for a command did not come up."""


def drain_prefect_queues(timeout: float = 10.0) -> None:
    """Send buffered logs and events while the Prefect server is still there."""
    try:
        from prefect._internal.concurrency.services import QueueService

        QueueService.drain_all(timeout=timeout)
    except Exception:
        pass


@contextmanager
def prefect_api(home: Path | None = None, log_dir: Path | None = None,
                say: Callable[[str], None] | None = None) -> Iterator[str]:
    """The Prefect API for flows run in this process, started here when ``PREFECT_API_URL`` is unset.

    With ``PREFECT_API_URL`` set, yields it and does nothing else. Otherwise starts
    ``prefect server start`` (SQLite) the way the local stack does, waits for it (up to
    :data:`LOCAL_SERVER_TIMEOUT`), points ``PREFECT_API_URL`` at it for the block, then sends the
    buffered logs and events and stops it. This replaces Prefect's temporary server, whose 20 s
    start-up limit a fresh environment misses.

    Args:
        home: ``PREFECT_HOME`` of the server; a temporary directory (removed afterwards) when
            not given.
        log_dir: Where the server's log goes; ``home`` when not given.
        say: Called with a line for the user before the server starts.

    Yields:
        The API URL, ending in ``/api``.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    import tempfile

    scratch = None if home is not None else Path(tempfile.mkdtemp(prefix="pixelflow-prefect-"))
    home = home if home is not None else scratch
    if say is not None:
        say(f"starting a Prefect server (SQLite in {home}); set PREFECT_API_URL to use one that is running...")
    log_dir = log_dir or home
    try:
        server = start_prefect_server(home=home, log_dir=log_dir, timeout=LOCAL_SERVER_TIMEOUT)
    except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
        raise LocalServerError(f"the Prefect server did not start: {exc}; its log is "
                               f"{log_dir / 'prefect-server.log'}") from exc
    os.environ["PREFECT_API_URL"] = server.url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: server.url}):  # also when Prefect was imported before
            yield server.url
            drain_prefect_queues()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
