"""The time-to-ready benchmark keeps working: ``python -m bench.ready`` once on small sources,
through the real flow, Prefect server and moto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]


def test_the_ready_benchmark_times_playable_and_ready_in_one_pass_and_in_progressive_chunks(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bench.ready", "--short", "tiny", "--long", "720p10", "--ladder", "360",
         "--chunk-seconds", "4", "--workers", "1,2", "--work", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    runs = {r["label"]: r for r in data["runs"]}
    assert list(runs) == ["tiny-one-pass", "720p10-one-pass", "720p10-chunks-1", "720p10-chunks-2"]
    for label in ("tiny-one-pass", "720p10-one-pass"):  # one pass: playable once ready
        assert runs[label]["chunks"] == 0 and 0 < runs[label]["ready"] <= runs[label]["playable"] + 0.5
    for label in ("720p10-chunks-1", "720p10-chunks-2"):  # progressive: playable before ready
        run = runs[label]
        assert run["chunks"] == 3 and len(run["chunk_seconds"]) == 3
        assert 0 < run["playable"] < run["ready"]
    assert list(data["model"]) == ["1", "2", "3", "4", "8"]
    assert "| Fargate tasks (model" in (tmp_path / "report.md").read_text()
