"""The local stack's choice of Prefect database (``pixelflow stack up --database``,
``PIXELFLOW_STACK_DATABASE``) and the backup commands' refusals, without starting a stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pixelflow.cli import build_parser
from pixelflow.local.stack import StackConfig

ROOT = Path(__file__).resolve().parents[1]


def pixelflow(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelflow.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_sqlite_is_the_default_and_postgres_is_chosen_by_flag_or_setting(monkeypatch):
    assert StackConfig().database == "sqlite"
    args = build_parser().parse_args(["stack", "up"])
    assert args.database is None  # then PIXELFLOW_STACK_DATABASE, else sqlite
    assert build_parser().parse_args(["stack", "up", "--database", "postgres"]).database == "postgres"
    from pixelflow.settings import PixelFlowSettings

    assert PixelFlowSettings().stack_database == "sqlite"
    monkeypatch.setenv("PIXELFLOW_STACK_DATABASE", "postgres")
    assert PixelFlowSettings().stack_database == "postgres"


def test_an_unknown_database_is_refused_with_usage_errors(tmp_path):
    done = pixelflow("stack", "up", "--database", "mysql", "--home", str(tmp_path))
    assert done.returncode == 2 and "invalid choice: 'mysql'" in done.stderr, done.stderr
    done = pixelflow("stack", "up", "--home", str(tmp_path), PIXELFLOW_STACK_DATABASE="mysql")
    assert done.returncode == 2 and "PIXELFLOW_STACK_DATABASE" in done.stderr, done.stderr
    assert not (tmp_path / "stack.json").exists() and not (tmp_path / "postgres").exists()


def test_backup_and_restore_refuse_a_home_without_a_database(tmp_path):
    done = pixelflow("stack", "backup", "--home", str(tmp_path), "-o", str(tmp_path / "x.dump"))
    assert done.returncode == 1 and "no PostgreSQL database in" in done.stderr, done.stderr
    assert not (tmp_path / "x.dump").exists()
    done = pixelflow("stack", "restore", str(tmp_path / "missing.dump"), "--home", str(tmp_path))
    assert done.returncode == 1 and "no backup at" in done.stderr, done.stderr
    done = pixelflow("stack", "backup", "--home", str(tmp_path))
    assert done.returncode == 2 and "--output" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user only stands in for root")
def test_as_root_a_home_the_postgres_user_cannot_reach_is_refused_with_the_fix():
    """PostgreSQL runs as the ``postgres`` user when the stack is root: a home below a folder that
    user cannot enter is refused before anything is created, naming the folder."""
    from pixelflow.local.postgres import LocalPostgres, PostgresError, bin_dir

    try:
        bin_dir()
    except PostgresError:
        pytest.skip("PostgreSQL is not installed")
    private = Path(tempfile.mkdtemp(prefix="pixelflow-private-"))  # 0700, owned by root
    try:
        with pytest.raises(PostgresError, match=f"cannot reach {private}: allow it"):
            LocalPostgres(private / "home").init(private / "postgres.log")
        assert list(private.iterdir()) == []
    finally:
        shutil.rmtree(private)
