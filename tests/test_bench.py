"""The benchmark keeps working: ``python -m bench`` once on a tiny source, against the session's
moto and Prefect servers, with real FFmpeg and the real flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ["original", "bare-360-720", "pixelflow-360-720"]


@pytest.fixture(scope="module")
def bench_result(moto_server, prefect_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = work / "result.json"
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--sources", "tiny", "--repeats", "1", "--contenders", ",".join(CONTENDERS),
         "--alternatives", "fanout,per-rung-decode", "--alt-source", "tiny", "--memory-sources", "none",
         "--s3-endpoint-url", moto_server, "--prefect-api-url", prefect_server,
         "--work", str(work / "run"), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text()), completed.stdout, work / "run"


def test_every_contender_runs_and_is_measured(bench_result):
    data, stdout, _ = bench_result
    assert [r["contender"] for r in data["runs"]] == CONTENDERS
    for run in data["runs"]:
        m = run["measure"]
        assert run["ok"] and m["wall"] > 0 and m["cpu"] > 0 and m["max_rss"] > 10 * 2**20
        assert m["tree_peak_rss"] >= m["max_rss"] * 0.5
    original = next(r for r in data["runs"] if r["contender"] == "original")
    assert sum(1 for p in original["measure"]["processes"] if Path(p["argv"][0]).name == "ffmpeg") == 3
    assert "| original |" in stdout and "| Target | Measured | Met |" in stdout


def test_pixelflow_run_is_end_to_end(bench_result):
    data, _, _ = bench_result
    run = next(r for r in data["runs"] if r["contender"] == "pixelflow-360-720")
    assert run["flow_state"] == "COMPLETED" and run["renditions"] == ["360p", "480p", "720p"]
    tasks = run["timeline"]["tasks"]
    published = next(t for name, t in tasks.items() if name.startswith("publish-asset"))
    assert 0 < tasks["upload-360p"]["end"] <= published["end"] <= run["measure"]["wall"] + 1
    assert 0 < run["flow_process_maxrss"] < 1.5 * 2**30
    row = next(s for s in data["summary"] if s["contender"] == "pixelflow-360-720")
    assert row["full_decodes"] == 1  # validation never decodes the source a second time


def test_quality_pass_compares_every_rendition(bench_result):
    data, _, _ = bench_result
    rows = {(q["contender"], q["rendition"]): q for q in data["quality"]}
    assert set(rows) == {(c, r) for c in CONTENDERS for r in ("360p", "480p", "720p")}
    assert rows[("original", "360p")]["width"] == 480  # the original distorted the picture
    assert rows[("pixelflow-360-720", "360p")]["width"] == 640
    for row in rows.values():
        assert 0.8 < row["ssim"] <= 1.0 and row["ssim_frames"] == 30 and row["avg_kbps"] > 0
    assert rows[("pixelflow-360-720", "720p")]["cap_kbps"] == 3000


def test_design_alternatives_are_compared(bench_result):
    data, _, work = bench_result
    alt = data["alternatives"]
    assert [r["variant"] for r in alt["runs"]] == ["fanout", "per-rung-decode"] and all(r["ok"] for r in alt["runs"])
    fanout = next(r for r in alt["runs"] if r["variant"] == "fanout")
    roles = [Path(p["argv"][0]).name for p in fanout["measure"]["processes"]]
    assert roles.count("ffmpeg") == 4  # one decoder, three encoders
    assert {q["variant"] for q in alt["quality"]} == {"fanout", "per-rung-decode"}
    assert (work / "report.md").read_text().startswith("Machine:")


def test_latency_benchmark_times_every_stage_of_the_chain(tmp_path):
    """``python -m bench.latency`` on a tiny clip, every mode, one upload each: every stage of the
    chain is measured, in order, and the report holds the breakdown, the targets and the ECS
    chain up to the task the ECS worker starts."""
    out = tmp_path / "latency.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.latency", "--modes", "cold,warm,ecs", "--uploads", "1", "--seconds", "1", "--size", "320x240",
         "--ladder", "240", "--bare-repeats", "1", "--work", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, env=dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false"), capture_output=True, text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["uploads"]) == {"cold", "warm", "ecs"}
    [ecs] = data["uploads"].pop("ecs")
    times = [ecs[stage] for stage in ("event", "flow_run_created", "picked_up", "submitted")]
    assert all(t is not None for t in times) and times == sorted(times), ecs
    assert "| RunTask returned (task definition, ECS API) |" in completed.stdout
    for mode, [row] in data["uploads"].items():
        order = ["flow_run_created", "picked_up", "running", "first_task", "first_ffmpeg", "encoded", "published"]
        times = [row[stage] for stage in order]
        assert all(t is not None for t in times) and times == sorted(times), (mode, row)
    assert "| **S3 PUT -> ladder FFmpeg running** (target <= 3 s) |" in completed.stdout
    assert "| bare FFmpeg command, same ladder and clip |" in completed.stdout
    assert "flow run" in (tmp_path / "work" / "stack-warm" / "logs" / "flow-starter.log").read_text()
    assert not (tmp_path / "work" / "stack-cold" / "logs" / "flow-starter.log").exists()
