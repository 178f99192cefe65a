"""A local PostgreSQL server for the Prefect database of the local stack, and its backups.

The server is Debian's ``postgresql`` package (any PostgreSQL 13 or newer whose binaries are
found by :func:`bin_dir`), run as a child process like the moto server: its cluster lives in
``<home>/postgres/data`` (``initdb`` on first use), it listens on loopback only (no Unix
socket), and it accepts the one role ``pixelflow`` with a password generated on first use and
kept in ``<home>/postgres/password`` (readable by its owner only). Prefect's database is
``prefect``.

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and ``postgres`` run
as the unprivileged ``postgres`` system user that the Debian package creates (through
:class:`subprocess.Popen`'s ``user``/``group``, no shell), which owns the data directory; the
stack's home then only needs to be searchable by that user (the stack adds search permission,
``o+x``, to its own home; its files keep their modes). As any other user, PostgreSQL runs as
that user. The client tools (``pg_dump``, ``pg_restore``) connect over TCP with the password
and run as the calling user.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

from pixelflow.local.processes import Service, free_port, spawn, stop_process

#: The role Prefect (and the backups) connect as, the database Prefect uses.
ROLE = "pixelflow"
DATABASE = "prefect"
#: The system user PostgreSQL runs as when this process is root.
SYSTEM_USER = "postgres"


class PostgresError(RuntimeError):
    """PostgreSQL is not installed, cannot run, or a backup or restore failed."""


def bin_dir() -> Path:
    """The directory holding ``initdb``, ``postgres``, ``pg_dump`` and ``pg_restore``.

    Looked for in ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/<version>/bin``
    (Debian's layout, which keeps them off ``PATH``), then ``PATH``.

    Raises:
        PostgresError: When no PostgreSQL server is installed.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if found.returncode == 0 and found.stdout.strip():
                candidates.append(Path(found.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: _version(p), reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "postgres", "pg_dump", "pg_restore")):
            return candidate
    raise PostgresError("PostgreSQL is not installed (no initdb/postgres found in `pg_config --bindir`, "
                        "/usr/lib/postgresql/*/bin or PATH); install Debian's `postgresql` package "
                        "(`./dev.sh setup --test` does) or use the SQLite database")


def _version(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/", path)
    return tuple(int(p) for p in match[1].split(".")) if match else (0,)


def _system_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: ``postgres`` when this process is root, else ``None`` (this user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError("PostgreSQL refuses to run as root and there is no `postgres` system user; "
                            "install Debian's `postgresql` package (it creates one) or run as another user") from None


def _popen_user(user: pwd.struct_passwd | None) -> dict:
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _searchable(path: Path, user: pwd.struct_passwd) -> bool:
    mode = path.stat()
    if mode.st_uid == user.pw_uid:
        return bool(mode.st_mode & stat.S_IXUSR)
    if mode.st_gid == user.pw_gid:
        return bool(mode.st_mode & stat.S_IXGRP)
    return bool(mode.st_mode & stat.S_IXOTH)


class LocalPostgres:
    """The PostgreSQL cluster kept under a stack's home.

    Args:
        home: The stack's home; the cluster is in ``<home>/postgres``.
    """

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.root = self.home / "postgres"
        self.data_dir = self.root / "data"
        self.password_file = self.root / "password"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def password(self) -> str:
        """The role's password (generated on first use, kept readable by its owner only)."""
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        return self.password_file.read_text().strip()

    def url(self, port: int, driver: str = "postgresql+asyncpg") -> str:
        """The SQLAlchemy URL of Prefect's database (holds the password: never log it)."""
        return f"{driver}://{ROLE}:{self.password()}@127.0.0.1:{port}/{DATABASE}"

    def client_env(self) -> dict[str, str]:
        """Environment for ``pg_dump``/``pg_restore``: the password in ``PGPASSWORD``, never in argv."""
        return {**os.environ, "PGPASSWORD": self.password(), "PGUSER": ROLE, "PGHOST": "127.0.0.1"}

    def init(self, log_path: Path) -> None:
        """``initdb`` the cluster if it does not exist yet (as the ``postgres`` user when root)."""
        if self.initialized:
            return
        binaries, user = bin_dir(), _system_user()
        if user is not None:
            self._check_reachable(user)
        self.root.mkdir(parents=True, exist_ok=True)
        password = self.password()
        if user is not None:
            self._make_reachable(user)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        try:
            if user is not None:
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:
                done = subprocess.run(
                    [str(binaries / "initdb"), "-D", str(self.data_dir), "-U", ROLE, f"--pwfile={pwfile}",
                     "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_server_env(),
                    cwd=str(self.root), timeout=300, **_popen_user(user),
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise PostgresError(f"initdb failed with {done.returncode}; see {log_path}")

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        """Raise unless ``user`` may enter every existing folder above the home."""
        for folder in reversed(self.home.parents):
            if folder.exists() and not _searchable(folder, user):
                raise PostgresError(
                    f"PostgreSQL runs as the `{SYSTEM_USER}` user (it refuses to run as root), which cannot "
                    f"reach {folder}: allow it (chmod o+x {folder}) or choose a --home it can reach")

    def _make_reachable(self, user: pwd.struct_passwd) -> None:
        """Let ``user`` reach ``<home>/postgres/data``: search permission (``o+x``, not read) on
        the stack's own home and ``<home>/postgres``, created here."""
        for folder in (self.home, self.root):
            if not _searchable(folder, user):
                os.chmod(folder, os.stat(folder).st_mode | stat.S_IXOTH)

    def start(self, port: int | None = None, log_dir: Path | None = None, timeout: float = 120.0) -> Service:
        """Start ``postgres`` on ``127.0.0.1:port`` (``initdb`` first if needed) and create the
        ``prefect`` database if it is missing.

        Args:
            port: Loopback port; a free one when not given.
            log_dir: Where ``postgres.log`` goes (default ``<home>/logs``).
            timeout: Seconds to wait until it accepts connections.

        Returns:
            The running server; its ``url`` is the database URL (holds the password).

        Raises:
            PostgresError: When PostgreSQL is missing or does not start.
        """
        log_dir = log_dir or self.home / "logs"
        log_path = log_dir / "postgres.log"
        self.init(log_path)
        port = port or free_port()
        binaries, user = bin_dir(), _system_user()
        args = [str(binaries / "postgres"), "-D", str(self.data_dir), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "max_connections=200"]
        process = spawn(args, log_path, env=_server_env(), cwd=str(self.root), **_popen_user(user))
        try:
            self._wait_ready(port, process, timeout)
            asyncio.run(_ensure_database(port, self.password()))
        except BaseException:
            stop_process(process)
            raise
        return Service("postgres", self.url(port), process, log_path)

    def _wait_ready(self, port: int, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PostgresError(f"postgres exited with {process.returncode}; see {self.home / 'logs' / 'postgres.log'}")
            try:
                asyncio.run(_ping(port, self.password()))
                return
            except Exception as exc:  # not accepting connections yet
                last = exc
                time.sleep(0.3)
        raise PostgresError(f"postgres did not accept connections within {timeout:.0f} s ({type(last).__name__})")

    # --- backups ----------------------------------------------------------------------------
    def dump(self, port: int, output: Path) -> Path:
        """``pg_dump`` (custom format) of the ``prefect`` database of the server on ``port``.

        Raises:
            PostgresError: When ``pg_dump`` fails.
        """
        output.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(bin_dir() / "pg_dump"), "-p", str(port), "-d", DATABASE, "-Fc", "--no-owner", "-f", str(output)],
            env=self.client_env(), capture_output=True, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise PostgresError(f"pg_dump failed: {done.stderr.strip()}")
        return output

    def restore(self, port: int, backup: Path) -> None:
        """Replace the ``prefect`` database of the server on ``port`` with a ``pg_dump`` backup.

        Raises:
            PostgresError: When the backup is missing or ``pg_restore`` fails.
        """
        if not backup.is_file():
            raise PostgresError(f"no backup at {backup}")
        asyncio.run(_recreate_database(port, self.password()))
        done = subprocess.run(
            [str(bin_dir() / "pg_restore"), "-p", str(port), "-d", DATABASE, "--no-owner", "--exit-on-error",
             str(backup)],
            env=self.client_env(), capture_output=True, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise PostgresError(f"pg_restore failed: {done.stderr.strip()}")


def _server_env() -> dict[str, str]:
    """A small environment for the server: no credentials of the caller, C locale messages."""
    keep = ("PATH", "TZ", "LANG")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    return env


async def _connect(port: int, password: str, database: str):
    import asyncpg

    return await asyncpg.connect(host="127.0.0.1", port=port, user=ROLE, password=password,
                                 database=database, timeout=5)


async def _ping(port: int, password: str) -> None:
    connection = await _connect(port, password, "postgres")
    await connection.close()


async def _ensure_database(port: int, password: str) -> None:
    connection = await _connect(port, password, "postgres")
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


async def _recreate_database(port: int, password: str) -> None:
    connection = await _connect(port, password, "postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
