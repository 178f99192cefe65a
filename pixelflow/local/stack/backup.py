"""Backups of the local stack's Prefect database (PostgreSQL only): ``pixelflow stack backup``
and ``pixelflow stack restore``.

A backup is a ``pg_dump`` in PostgreSQL's custom format of the ``prefect`` database: every flow
run, its states, task runs, logs, events, deployments and automations. It is taken from the
running stack's server, or from a temporary one started on the stopped stack's cluster. A
restore replaces the database of a stopped stack (its cluster is created when the home has
none), so that the next ``pixelflow stack up --database postgres`` serves the restored runs.
The asset records and the buckets are not in it: they are moto's (or AWS's) to keep.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

from pixelflow.local.stack.config import Log, StackError
from pixelflow.local.stack.state import running_state


@contextmanager
def _server(home: Path, log: Log, allow_running: bool) -> Iterator[tuple[object, int]]:
    """The cluster of the stack at ``home`` and the port of a server running on it."""
    from pixelflow.local.postgres import LocalPostgres
    from pixelflow.local.processes import free_port

    cluster = LocalPostgres(home)
    state = running_state(home / "stack.json")
    if state:
        if state.get("database") != "postgres" or not state.get("postgres_port"):
            raise StackError(f"the stack running in {home} keeps its Prefect database in SQLite; "
                             "backups are of a PostgreSQL database (pixelflow stack up --database postgres)")
        if not allow_running:
            raise StackError(f"a stack is running in {home}; stop it (pixelflow stack down) before restoring")
        yield cluster, int(state["postgres_port"])
        return
    if allow_running and not cluster.initialized:
        raise StackError(f"no PostgreSQL database in {home / 'postgres'} (start the stack with --database postgres)")
    log(f"starting a temporary PostgreSQL server on the cluster in {cluster.root}")
    port = free_port()
    server = cluster.start(port, log_dir=home / "logs")
    try:
        yield cluster, port
    finally:
        server.stop()


def backup(home: Path, output: Path, log: Log = print) -> Path:
    """Write a ``pg_dump`` of the stack's Prefect database to ``output``.

    Raises:
        StackError: When the stack has no PostgreSQL database or ``pg_dump`` fails.
    """
    from pixelflow.local.postgres import PostgresError

    try:
        with _server(home.resolve(), log, allow_running=True) as (cluster, port):
            return cluster.dump(port, output)
    except PostgresError as exc:
        raise StackError(str(exc)) from None


def restore(home: Path, backup_file: Path, log: Log = print) -> None:
    """Replace the Prefect database of the stopped stack at ``home`` with ``backup_file``.

    Raises:
        StackError: When the stack is running, the backup is missing or ``pg_restore`` fails.
    """
    from pixelflow.local.postgres import PostgresError

    if not backup_file.is_file():
        raise StackError(f"no backup at {backup_file}")
    try:
        with _server(home.resolve(), log, allow_running=False) as (cluster, port):
            cluster.restore(port, backup_file)
    except PostgresError as exc:
        raise StackError(str(exc)) from None
