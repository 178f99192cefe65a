"""The outputs benchmark keeps working: ``bench.outputs`` once on the 1 s source with one rung,
with real FFmpeg."""

from __future__ import annotations

import json

import pytest

from bench.outputs import main

pytestmark = [pytest.mark.bench, pytest.mark.integration]


def test_the_outputs_benchmark_measures_every_output_of_the_one_decode(tmp_path):
    assert main(["--source", "tiny", "--ladder", "360", "--repeats", "1", "--audio-seconds", "5",
                 "--work", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    ladder = data["ladder_process"]
    assert set(ladder) == {"ladder", "poster", "storyboard", "both", "loudness", "storyboard_alone", "poster_alone"}
    assert all(row["wall"] > 0 and row["cpu"] > 0 and row["max_rss"] > 0 for row in ladder.values())
    assert all("added" in row for name, row in ladder.items() if name != "ladder")
    download = data["download"]
    assert download["rung"] == "360p" and download["wall"] > 0 and download["bytes"] > 0
    assert download["rung_alone"]["wall"] > 0 and download["against_rung_alone"]["wall"] > 0
    assert [t["format"] for t in data["thumbnails"]] == ["jpg", "webp", "jpg"]
    assert all(t["cold_wall"] > 0 and t["hit_wall"] > 0 and t["bytes"] > 0 for t in data["thumbnails"])
    for key in ("video", "audio_only"):
        assert all(data["loudness"][key][name]["wall"] > 0 and data["loudness"][key][name]["wall_per_minute"] > 0
                   for name in ("plain", "measure", "normalised"))
    assert data["audio_only"]["rendition"]["wall"] > 0 and data["audio_only"]["m4a"]["bytes"] > 0
    report = (tmp_path / "report.md").read_text()
    for header in ("| Ladder process |", "| MP4 download |", "| Thumbnail request |", "| Audio (loudness target"):
        assert header in report
