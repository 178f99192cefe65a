"""The test tiers: a plain ``pytest`` is the fast tier, ``--all`` (``./dev.sh test``) is everything,
and nothing falls between them."""

from __future__ import annotations

import functools
import subprocess
import sys

from tests.conftest import ROOT, SLOW_MARKERS


@functools.cache
def collected(*args: str) -> frozenset[str]:
    """Test ids a ``pytest --collect-only`` with ``args`` selects."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return frozenset(line for line in done.stdout.splitlines() if "::" in line)


def test_a_plain_pytest_is_the_fast_tier_and_dev_sh_runs_every_tier():
    fast, every = collected(), collected("--all")
    slow = collected("-m", " or ".join(SLOW_MARKERS))
    assert fast and slow and fast | slow == every and not fast & slow
    assert any(test.startswith("tests/core/") for test in fast)
    # Tests starting a Prefect server are slow whichever file they are in.
    assert "tests/test_flow_e2e.py::test_upload_becomes_playable_hls_ladder" in slow
    assert "tests/test_stack.py::test_upload_starts_exactly_one_run_that_publishes_the_asset" in slow
    assert "--all" in (ROOT / "dev.sh").read_text()


def test_naming_a_file_runs_it_whatever_its_tier():
    assert collected("tests/test_stack.py") == {test for test in collected("--all") if test.startswith("tests/test_stack.py")}
