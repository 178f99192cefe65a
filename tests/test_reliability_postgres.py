"""The reliability tests that depend on deployment triggers, on a stack whose Prefect server runs
on PostgreSQL (``StackConfig(database="postgres")``, a real server from Debian's ``postgresql``
package) with the reconciler switched off: on SQLite a busy server can drop a trigger's
run-deployment action (HTTP 503, never retried) and the reconciler repairs it; on PostgreSQL
nothing is dropped, so a burst gets every run from its trigger alone. Then the stack's Prefect
database is backed up and restored into a fresh PostgreSQL and Prefect server, which serves
every run.

The burst and outage tests are :mod:`tests.test_reliability`'s own, run here against this
module's ``stack``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from pixelflow.local.postgres import LocalPostgres
from pixelflow.local.processes import free_port, start_prefect_server
from pixelflow.local.stack import PrefectApi
from tests.test_reliability import (  # noqa: F401  (the fixture and the tests run here too)
    cli,
    proxy,
    reliability_stack,
    test_burst_of_uploads_and_duplicates_gives_one_asset_per_upload,
    test_prefect_server_outage_loses_no_upload,
)

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]


def searchable_home(prefix: str) -> Path:
    """A fresh home outside pytest's private (0700) temporary tree: when the tests run as root,
    PostgreSQL runs as the ``postgres`` user, which must reach the home."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="module")
def stack(moto_server, proxy):  # noqa: F811
    home = searchable_home("pixelflow-reliability-pg-")
    try:
        yield from reliability_stack(moto_server, proxy, home, database="postgres", reconcile_after_seconds=None)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_backup_restores_into_a_fresh_server_with_every_run(stack, tmp_path):
    """``pixelflow stack backup`` (pg_dump of the running stack's Prefect database), then
    ``pixelflow stack restore`` into a new home: a fresh PostgreSQL and Prefect server on it
    serve every flow run with its name, state and parameters."""
    before = {r["id"]: (r["name"], r["state_type"], r["parameters"]) for r in stack.prefect.flow_runs()}
    assert before, "no flow runs to back up"
    dump = tmp_path / "prefect.dump"
    done = cli(stack, sys.executable, "-m", "pixelflow.cli", "stack", "backup", "--home", str(stack.config.home),
               "--output", str(dump))
    assert done.returncode == 0 and dump.stat().st_size > 0, done.stdout + done.stderr
    assert "password" not in (done.stdout + done.stderr).lower()

    fresh = searchable_home("pixelflow-restore-")
    try:
        done = cli(stack, sys.executable, "-m", "pixelflow.cli", "stack", "restore", str(dump), "--home", str(fresh))
        assert done.returncode == 0, done.stdout + done.stderr
        cluster, port = LocalPostgres(fresh), free_port()
        postgres = cluster.start(port, log_dir=fresh / "logs")
        try:
            server = start_prefect_server(home=fresh / "prefect", log_dir=fresh / "logs", timeout=300,
                                          database_url=cluster.url(port))
            try:
                restored = PrefectApi(server.url, server.url.removesuffix("/api")).flow_runs()
            finally:
                server.stop()
        finally:
            postgres.stop()
        assert {r["id"]: (r["name"], r["state_type"], r["parameters"]) for r in restored} == before
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def test_restore_refuses_a_running_stack_and_a_missing_backup(stack, tmp_path):
    """Restoring over the database of a running stack, or from a file that is not there, fails
    with a message and exit code 1, and the running stack keeps its runs."""
    runs = len(stack.prefect.flow_runs())
    done = cli(stack, sys.executable, "-m", "pixelflow.cli", "stack", "restore", str(tmp_path / "missing.dump"),
               "--home", str(stack.config.home))
    assert done.returncode == 1 and "no backup at" in done.stderr, done.stderr
    (tmp_path / "some.dump").write_bytes(b"PGDMP")
    done = cli(stack, sys.executable, "-m", "pixelflow.cli", "stack", "restore", str(tmp_path / "some.dump"),
               "--home", str(stack.config.home))
    assert done.returncode == 1 and "a stack is running" in done.stderr, done.stderr
    assert len(stack.prefect.flow_runs()) == runs
