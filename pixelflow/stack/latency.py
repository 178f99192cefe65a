"""Measure the event chain's latency on a running local stack.

For each upload (one at a time, so that every measurement starts from an idle stack) this
records, relative to the moment S3 answered the PUT:

* ``event``: the Prefect server received the ``pixelflow.upload.created`` event (bridge);
* ``flow_run_created``: the automation created the flow run (trigger);
* ``running``: the flow run entered Running (worker poll, process start, flow import);
* ``first_ffmpeg``: the first ``ffmpeg`` process started (Linux ``/proc``; ffprobe excluded);
* ``manifest``: ``manifest.json`` was published (the whole transcode).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pixelflow.stack.services import Stack
from pixelflow.stack.state import read_state

STAGES = ("event", "flow_run_created", "running", "first_ffmpeg", "manifest")


class FfmpegWatcher:
    """Watch ``/proc`` for ``ffmpeg`` processes and remember their start times (epoch seconds).

    Args:
        ancestors: When given, only count ``ffmpeg`` processes descending from one of these pids
            (the stack's worker), so that unrelated FFmpeg runs on the machine are ignored.
        interval: Seconds between two scans of ``/proc``.
    """

    def __init__(self, ancestors: set[int] | None = None, interval: float = 0.02) -> None:
        self.ancestors = ancestors
        self.interval = interval
        self.starts: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._boot = _boot_time()
        self._ticks = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "FfmpegWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def first_after(self, since: float) -> float | None:
        later = [t for t in self.starts.values() if t >= since - 0.05]
        return min(later) if later else None

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) in self.starts:
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat") as stat:
                        fields = stat.read()
                except OSError:
                    continue
                comm = fields[fields.index("(") + 1:fields.rindex(")")]
                if comm != "ffmpeg":
                    continue
                if self.ancestors is not None and not self._descends(int(entry.name)):
                    continue
                start_ticks = int(fields.rsplit(")", 1)[1].split()[19])
                self.starts[int(entry.name)] = self._boot + start_ticks / self._ticks
            self._stop.wait(self.interval)


    def _descends(self, pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            if pid in self.ancestors:
                return True
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    pid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return False
            seen += 1
        return False


def _boot_time() -> float:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def measure(stack: Stack, sample: Path, uploads: int = 5, timeout: float = 900.0,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Upload ``sample`` ``uploads`` times, one after the other, and time every stage.

    Returns:
        One dict per upload: the key, the flow run id and seconds from the PUT to each stage.
    """
    from pixelflow.core.s3events import resource_id

    results = []
    tag = time.strftime("%Y%m%dT%H%M%S")
    workers = {c.process.pid for c in stack.supervisor.children if c.name == "worker"} or {
        p["pid"] for p in (read_state(stack.config.state_file) or {}).get("processes", []) if p.get("name") == "worker"}
    with FfmpegWatcher(ancestors=workers or None) as watcher:
        for index in range(uploads):
            upload = stack.uploads.upload_file(sample, key=f"latency/{tag}-{index}{sample.suffix}")
            put = upload["uploaded_at"]
            stack.uploads.wait_for_manifest(upload["asset_id"], timeout=timeout)
            manifest_seen = time.time()
            run = stack.prefect.flow_run_for(upload["key"], upload["etag"])
            events = stack.prefect.api("POST", "/events/filter", json={"filter": {
                "event": {"name": ["pixelflow.upload.created"]},
                "resource": {"id": [resource_id(upload["bucket"], upload["key"])]},
            }})["events"]
            first_ffmpeg = watcher.first_after(put)
            row = {
                "key": upload["key"],
                "flow_run_id": run["id"] if run else None,
                "event": _delta(_epoch(events[0]["received"]) if events else None, put),
                "flow_run_created": _delta(_epoch(run.get("created")) if run else None, put),
                "running": _delta(_epoch(run.get("start_time")) if run else None, put),
                "first_ffmpeg": _delta(first_ffmpeg, put),
                "manifest": _delta(manifest_seen, put),
            }
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            results.append(row)
    return results


def _delta(value: float | None, origin: float) -> float | None:
    return None if value is None else round(value - origin, 2)


def summarize(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median seconds from the PUT to each stage."""
    summary: dict[str, float | None] = {}
    for stage in STAGES:
        values = [r[stage] for r in results if r.get(stage) is not None]
        summary[stage] = round(statistics.median(values), 2) if values else None
    return summary
