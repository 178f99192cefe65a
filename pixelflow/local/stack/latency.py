"""Measure the event chain's latency on a running local stack.

For each upload (one at a time, so that every measurement starts from an idle stack) this
records, relative to the moment S3 answered the PUT:

* ``event``: the Prefect server received the ``pixelflow.upload.created`` event (bridge);
* ``flow_run_created``: the automation created the flow run (trigger);
* ``picked_up``: the worker took the run (its first Pending state: the worker's poll);
* ``running``: the flow run entered Running (the run's process started, Prefect and the flow
  loaded);
* ``first_task``: the run's first task run started (``inspect-upload``);
* ``first_ffmpeg``: the first ``ffmpeg`` process started (Linux ``/proc``; ffprobe excluded);
* ``encoded``: the ladder's FFmpeg process ended (the ``encode-ladder`` task run);
* ``published``: ``publish-asset`` ended (``manifest.json`` and the master playlist written);
* ``manifest``: this tool saw ``manifest.json`` (it polls S3).

Times read from the Prefect API are the server's and the run's clock, ``/proc`` times the
kernel's: one clock on one machine.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pixelflow.local.stack.services import Stack
from pixelflow.local.stack.state import read_state

STAGES = ("event", "flow_run_created", "picked_up", "running", "first_task", "first_ffmpeg", "encoded", "published",
          "manifest")


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
    """The epoch time of boot, to the clock tick (``/proc/stat``'s ``btime`` is rounded to the
    second, which would move every ``/proc`` time by up to 1 s)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def measure(stack: Stack, sample: Path, uploads: int = 5, timeout: float = 900.0,
            log: Callable[[str], None] = print, settle: float = 3.0) -> list[dict[str, Any]]:
    """Upload ``sample`` ``uploads`` times, one after the other, and time every stage.

    Each upload waits until the previous run has ended and ``settle`` seconds more: a run's
    last moments (its final state, the task runs' and logs' events) keep the Prefect server
    busy for a second or two, which would otherwise be counted against the next upload.

    Returns:
        One dict per upload: the key, the flow run id and seconds from the PUT to each stage.
    """

    results = []
    tag = time.strftime("%Y%m%dT%H%M%S")
    # runs are the worker's children, or the flow starter's
    starters = ("worker", "flow-starter")
    workers = {c.process.pid for c in stack.supervisor.children if c.name in starters} or {
        p["pid"] for p in (read_state(stack.config.state_file) or {}).get("processes", []) if p.get("name") in starters}
    with FfmpegWatcher(ancestors=workers or None) as watcher:
        for index in range(uploads):
            upload = stack.uploads.upload_file(sample, key=f"latency/{tag}-{index}{sample.suffix}")
            put = upload["uploaded_at"]
            stack.uploads.wait_for_manifest(upload["asset_id"], timeout=timeout)
            manifest_seen = time.time()
            run = stack.prefect.flow_run_for(upload["key"], upload["etag"])
            received = event_received(stack, upload)
            first_ffmpeg = watcher.first_after(put)
            states, tasks = run_history(stack, run["id"]) if run else ([], {})
            pending = [epoch(s["timestamp"]) for s in states if s["type"] == "PENDING"]
            row = {
                "key": upload["key"],
                "flow_run_id": run["id"] if run else None,
                "event": seconds_after(received, put),
                "flow_run_created": seconds_after(epoch(run.get("created")) if run else None, put),
                "picked_up": seconds_after(min(pending) if pending else None, put),
                "running": seconds_after(epoch(run.get("start_time")) if run else None, put),
                "first_task": seconds_after(min((t[0] for t in tasks.values() if t[0]), default=None), put),
                "first_ffmpeg": seconds_after(first_ffmpeg, put),
                "encoded": seconds_after(tasks.get("encode-ladder", (None, None))[1], put),
                "published": seconds_after(tasks.get("publish-asset", (None, None))[1], put),
                "manifest": seconds_after(manifest_seen, put),
            }
            log(" ".join(f"{k}={v}" for k, v in row.items()))
            results.append(row)
            if run and index + 1 < uploads:  # the next upload starts from an idle stack
                _wait_final(stack, run["id"], timeout)
                time.sleep(settle)
    return results


def _wait_final(stack: Stack, flow_run_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (stack.prefect.api("GET", f"/flow_runs/{flow_run_id}").get("state") or {}).get("type")
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return
        time.sleep(0.2)


def event_received(stack: Stack, upload: dict[str, Any], wait: float = 10.0) -> float | None:
    """When the Prefect server received the upload's ``pixelflow.upload.created`` event. The
    server stores events in batches, after its triggers act on them: a run can exist before its
    event is readable, so the event is looked for up to ``wait`` seconds."""
    from pixelflow.core.s3events import resource_id

    deadline = time.monotonic() + wait
    while True:
        events = stack.prefect.api("POST", "/events/filter", json={"filter": {
            "event": {"name": ["pixelflow.upload.created"]},
            "resource": {"id": [resource_id(upload["bucket"], upload["key"])]},
        }})["events"]
        if events or time.monotonic() > deadline:
            return epoch(events[0]["received"]) if events else None
        time.sleep(0.25)


def run_history(stack: Stack, flow_run_id: str) -> tuple[list[dict[str, Any]], dict[str, tuple]]:
    """A flow run's states, and its task runs' (start, end) epoch times by name."""
    states = stack.prefect.api("GET", "/flow_run_states/", params={"flow_run_id": flow_run_id})
    runs = stack.prefect.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}},
                                                                "limit": 200})
    return states, {t["name"]: (epoch(t.get("start_time")), epoch(t.get("end_time"))) for t in runs}


def seconds_after(value: float | None, origin: float) -> float | None:
    return None if value is None else round(value - origin, 2)


def summarize(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median seconds from the PUT to each stage."""
    summary: dict[str, float | None] = {}
    for stage in STAGES:
        values = [r[stage] for r in results if r.get(stage) is not None]
        summary[stage] = round(statistics.median(values), 2) if values else None
    return summary
