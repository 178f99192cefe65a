"""The flow starter (:mod:`pixelflow.local.flow_starter`) as real processes: a starter, launchers
started as the process worker starts them, and the engine they run against a real Prefect server.

What a run started through it must keep from a cold start: its standard streams, its exit status,
its environment and working directory, SIGTERM reaching the engine; and what it must never do:
run a flow with Prefect settings or PixelFlow sources other than the run's own, or outlive its
launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pixelflow.local.flow_starter import SOCKET_ENV
from tests.events_helpers import wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]


def _env(prefect_server: str, socket_name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__")}
    env.update({"PREFECT_API_URL": prefect_server, SOCKET_ENV: socket_name, "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def _start_starter(env: dict[str, str], log: Path, script: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", script] if script else [sys.executable, "-m", "pixelflow.local.flow_starter", "serve"]
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "flow starter ready" in log.read_text() or process.poll() is not None, timeout=120,
             what="the flow starter")
    assert process.poll() is None, log.read_text()
    return process


def _launch(env: dict[str, str], cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelflow.local.flow_starter", "launch"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _gone(pid: int) -> bool:
    """The process has ended (gone, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


@pytest.fixture
def starter(prefect_server, tmp_path):
    name = f"@pixelflow-test-starter-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "starter.log"
    process = _start_starter(_env(prefect_server, name), log)
    yield name, log
    _stop(process)


def test_a_forked_run_keeps_its_streams_status_and_environment(prefect_server, starter, tmp_path):
    """An unknown flow run: the engine forked from the starter says so on the launcher's own
    stderr and exits 1, exactly as ``python -m prefect.engine`` does."""
    name, log = starter
    run_id = str(uuid.uuid4())
    cwd = tmp_path / "workdir"
    cwd.mkdir()
    warm = _launch(_env(prefect_server, name, PREFECT__FLOW_RUN_ID=run_id), cwd)
    warm_out, warm_err = warm.communicate(timeout=120)
    cold = subprocess.run([sys.executable, "-m", "prefect.engine"], env=_env(prefect_server, "", PREFECT__FLOW_RUN_ID=run_id),
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert warm.returncode == cold.returncode == 1
    assert run_id in warm_err and "ObjectNotFound" in warm_err, warm_err
    assert "ObjectNotFound" in cold.stderr
    assert f"flow run {run_id}: pid" in log.read_text() and "warm start" in log.read_text()


def test_other_prefect_settings_get_a_cold_start(prefect_server, starter, tmp_path):
    name, log = starter
    run_id = str(uuid.uuid4())
    launched = _launch(_env(prefect_server, name, PREFECT__FLOW_RUN_ID=run_id, PREFECT_LOGGING_LEVEL="DEBUG"), tmp_path)
    _, err = launched.communicate(timeout=120)
    assert launched.returncode == 1 and "ObjectNotFound" in err, err
    assert f"flow run {run_id}: pid" in log.read_text()
    assert "cold start (the run's Prefect settings differ from the starter's)" in log.read_text()


def test_without_a_starter_the_launcher_starts_the_engine_cold(prefect_server, tmp_path):
    run_id = str(uuid.uuid4())
    launched = _launch(_env(prefect_server, f"@pixelflow-nobody-{uuid.uuid4().hex}", PREFECT__FLOW_RUN_ID=run_id),
                       tmp_path)
    _, err = launched.communicate(timeout=120)
    assert launched.returncode == 1 and "ObjectNotFound" in err, err


# A starter whose "flow" is a module of the test's own: it sleeps (so that it can be signalled
# and killed) after writing what it saw; ``prefect.engine`` is replaced by it in the child.
_SLEEPER = textwrap.dedent("""
    import os, sys, time, pathlib
    marker = pathlib.Path(os.environ["SLEEPER_MARKER"])
    marker.write_text(f"{os.getpid()} {os.getcwd()} {os.environ.get('SLEEPER_VALUE')} {os.getsid(0)}")
    try:
        time.sleep(300)
    except KeyboardInterrupt:
        sys.exit(7)
""")
_STARTER_SCRIPT = textwrap.dedent("""
    import runpy, signal, sys
    from pixelflow.local import flow_starter

    def sleeper(name, run_name=None, alter_sys=False):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        exec(compile(open({sleeper!r}).read(), "sleeper", "exec"), {{"__name__": "__main__"}})

    runpy.run_module = sleeper
    starter = flow_starter.Starter({name!r}, preload=({module!r},))
    request = starter.serve()
    flow_starter.run_child(request, starter.settings)
""")


@pytest.fixture
def sleeper_starter(prefect_server, tmp_path):
    name = f"@pixelflow-test-sleeper-{uuid.uuid4().hex[:12]}"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(_SLEEPER)
    module = tmp_path / "pixelflow_test_preload.py"
    module.write_text("VALUE = 1\n")
    env = _env(prefect_server, name, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    log = tmp_path / "starter.log"
    process = _start_starter(env, log, _STARTER_SCRIPT.format(sleeper=str(sleeper), name=name,
                                                               module="pixelflow_test_preload"))
    yield env, log, process
    if process.poll() is None:
        _stop(process)


def test_sigterm_reaches_the_run_and_its_status_comes_back(sleeper_starter, tmp_path):
    env, _, _ = sleeper_starter
    marker = tmp_path / "marker"
    cwd = tmp_path / "run-dir"
    cwd.mkdir()
    launched = _launch({**env, "SLEEPER_MARKER": str(marker), "SLEEPER_VALUE": "per-run"}, cwd)
    wait_for(marker.exists, timeout=30, what="the run to start")
    pid, seen_cwd, value, session = marker.read_text().split()
    assert seen_cwd == str(cwd) and value == "per-run"
    assert int(session) == int(pid) != launched.pid  # its own session, so that its FFmpeg dies with it
    launched.send_signal(signal.SIGTERM)
    assert launched.wait(30) == 7
    wait_for(lambda: _gone(int(pid)), timeout=10, what="the run's process to end")


def _start_sleeper(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Launch a run of the sleeper starter; return its launcher and, once it runs, its pid."""
    marker = tmp_path / "marker"
    launched = _launch({**env, "SLEEPER_MARKER": str(marker)}, tmp_path)
    wait_for(marker.exists, timeout=30, what="the run to start")
    return launched, int(marker.read_text().split()[0])


def test_a_killed_launcher_takes_its_run_with_it(sleeper_starter, tmp_path):
    env, _, _ = sleeper_starter
    launched, pid = _start_sleeper(env, tmp_path)
    launched.kill()
    launched.wait(10)
    wait_for(lambda: _gone(pid), timeout=10, what="the run's process to be killed")


def test_a_killed_starter_takes_its_runs_with_it(sleeper_starter, tmp_path):
    env, _, process = sleeper_starter
    launched, pid = _start_sleeper(env, tmp_path)
    process.kill()
    process.wait(10)
    assert launched.wait(30) != 0  # the worker sees a crash, never a success
    wait_for(lambda: _gone(pid), timeout=10, what="the run's process to be killed")


def test_changed_sources_get_a_cold_start_and_the_starter_starts_again(sleeper_starter, tmp_path):
    """A source file imported by the starter changed: that run execs a cold engine (here: the
    real ``prefect.engine``, which fails on the unknown run), and the idle starter starts itself
    again with the new sources."""
    env, log, process = sleeper_starter
    module = tmp_path / "pixelflow_test_preload.py"
    time.sleep(0.05)
    module.write_text("VALUE = 2\n")
    run_id = str(uuid.uuid4())
    launched = _launch({**env, "PREFECT__FLOW_RUN_ID": run_id}, tmp_path)
    _, err = launched.communicate(timeout=120)
    assert launched.returncode == 1 and "ObjectNotFound" in err, err
    assert f"flow run {run_id}: pid" in log.read_text()
    assert "cold start (PixelFlow's sources changed since the starter started)" in log.read_text()
    wait_for(lambda: log.read_text().count("flow starter ready") == 2, timeout=60, what="the starter to start again")
    assert process.poll() is None  # the same process, its program executed again
