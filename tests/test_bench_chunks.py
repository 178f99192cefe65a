"""The chunked-encoding benchmark keeps working: ``python -m bench.chunks`` once on a 10 s source
in chunks of 4 s, with real FFmpeg."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]


def test_the_chunks_benchmark_measures_one_pass_and_the_chunks_and_models_fargate_tasks(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bench.chunks", "--source", "720p10", "--ladder", "360", "--chunk-seconds", "4",
         "--memory-sources", "720p10", "--work", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    run = data["run"]
    assert run["one_pass"]["wall"] > 0 and run["one_pass"]["cpu"] > 0
    for workers in (1, 2):
        chunks = run[f"chunks_{workers}"]
        assert len(chunks["chunks"]) == 3 and all(c["seconds"] > 0 and c["peak_rss"] > 0 for c in chunks["chunks"])
        assert chunks["audio_wall"] > 0
    assert list(run["model"]) == ["1", "2", "4", "3"]
    assert [m["chunk"] for m in data["memory"]] == [0, 1]
    assert "| Fargate tasks (model) |" in (tmp_path / "report.md").read_text()
