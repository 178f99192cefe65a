"""Run PixelFlow end to end for the benchmark: a moto server (S3) and a Prefect server, started
once, and one flow-run process per measured run, from the object in the upload bucket to the
published asset."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.measure import Measurement, run_group, tree_cpu
from pixelflow.local.processes import Service, prefect_env, start_moto, start_prefect_server, with_moto_settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    """The local services a PixelFlow run talks to (started here, or already running)."""

    s3_url: str
    prefect_url: str
    work: Path
    upload_bucket: str
    moto: Service | None = None
    prefect: Service | None = None

    def stop(self) -> None:
        for service in (self.prefect, self.moto):
            if service is not None:
                service.stop()

    def services_cpu(self) -> float:
        """CPU seconds used so far by the services this benchmark started (0 for borrowed ones)."""
        return sum(tree_cpu(s.process.pid) for s in (self.moto, self.prefect) if s is not None)


def start_prefect(home: Path, log_dir: Path, timeout: float = 600) -> Service:
    """``prefect server start`` (SQLite under ``home``) with a longer start-up allowance: a busy
    two-core machine can take minutes."""
    return start_prefect_server(home=home, log_dir=log_dir, timeout=timeout)


def start_stack(work: Path, s3_url: str | None = None, prefect_url: str | None = None) -> Stack:
    """Start moto and a Prefect server (SQLite under ``work``), unless their URLs are given, and
    point this process's boto3 at the S3 endpoint."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    moto = prefect = None
    try:
        if s3_url is None:
            moto = start_moto(log_dir=work / "logs")
            s3_url = moto.url
        if prefect_url is None:
            prefect = start_prefect(work / "prefect", work / "logs")
            prefect_url = prefect.url
    except BaseException:
        if moto is not None:
            moto.stop()
        raise
    os.environ["AWS_ENDPOINT_URL"] = s3_url
    from pixelflow.aws import s3_client

    bucket = f"bench-uploads-{uuid.uuid4().hex[:8]}"
    s3_client().create_bucket(Bucket=bucket)
    return Stack(s3_url, prefect_url, work, bucket, moto, prefect)


def upload_source(stack: Stack, path: Path, key: str) -> None:
    """Put a source in the upload bucket once; each run gets its own server-side copy.

    One PUT, not a multipart upload: moto's copy of a multipart object keeps the parts' combined
    CRC32 as if it were the whole object's, and a download in one GET then fails its checksum."""
    from boto3.s3.transfer import TransferConfig

    from pixelflow.aws import s3_client

    s3_client().upload_file(str(path), stack.upload_bucket, key, Config=TransferConfig(multipart_threshold=4 * 1024**3))


def _api(stack: Stack, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{stack.prefect_url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def timeline(stack: Stack, flow_run_id: str, started: float, wait: float = 15.0) -> dict:
    """When each task run of the flow run ended, in seconds from ``started`` (process spawn),
    read from the Prefect API."""
    deadline = time.monotonic() + wait
    while True:
        runs = _api(stack, "POST", "/task_runs/filter",
                    {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
        if all(r.get("end_time") for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    flow_run = _api(stack, "GET", f"/flow_runs/{flow_run_id}")
    tasks = {}
    for r in runs:
        end = _epoch(r.get("end_time"))
        begin = _epoch(r.get("start_time"))
        tasks[r["name"]] = {"start": round(begin - started, 2) if begin else None,
                            "end": round(end - started, 2) if end else None,
                            "state": (r.get("state") or {}).get("type")}
    flow_start = _epoch(flow_run.get("start_time"))
    flow_end = _epoch(flow_run.get("end_time"))
    return {"flow_start": round(flow_start - started, 2) if flow_start else None,
            "flow_end": round(flow_end - started, 2) if flow_end else None, "tasks": tasks}


def _empty_bucket(bucket: str, delete: bool = True) -> None:
    from pixelflow.aws import s3_client

    s3 = s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    if delete:
        s3.delete_bucket(Bucket=bucket)


def download_prefix(bucket: str, prefix: str, dest: Path) -> None:
    from pixelflow.aws import s3_client

    s3 = s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))


class ObjectWatch(threading.Thread):
    """When objects whose keys end with one of ``suffixes`` first appear in ``bucket``, in
    seconds from ``started`` (one listing every ``interval`` seconds: that is the resolution)."""

    def __init__(self, bucket: str, suffixes: tuple[str, ...], started: float, interval: float = 0.1):
        super().__init__(daemon=True)
        self.bucket, self.suffixes, self.started, self.interval = bucket, suffixes, started, interval
        self.seen: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        from pixelflow.aws import s3_client

        s3 = s3_client()
        while not self._halt.is_set():
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    suffix = next((s for s in self.suffixes if obj["Key"].endswith(s)), None)
                    if suffix is not None and suffix not in self.seen:
                        self.seen[suffix] = round(time.time() - self.started, 2)
            self._halt.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join(10)
        return dict(self.seen)


@dataclass
class FlowRun:
    """One measured PixelFlow run."""

    measurement: Measurement
    result: dict
    timeline: dict
    services_cpu: float
    output_dir: Path | None
    seen: dict[str, float] = field(default_factory=dict)


def run_pixelflow(stack: Stack, source_key: str, ladder: str | None, work: Path, label: str,
                  keep_output: Path | None = None, timeout: float = 3600, settings: dict[str, str] | None = None,
                  watch: tuple[str, ...] = ()) -> FlowRun:
    """Transcode one fresh copy of ``source_key`` through the flow in its own process.

    Args:
        stack: The running services.
        source_key: The source's key in the upload bucket.
        ladder: ``PIXELFLOW_LADDER`` (``None``: PixelFlow's default ladder).
        work: Folder for logs and scratch space.
        label: Names the run's log and key.
        keep_output: Download the published asset here (else it is only measured, then deleted).
        timeout: Kill the run past this many seconds.
        settings: More ``PIXELFLOW_*`` settings of the run.
        watch: Key suffixes (``/master.m3u8``) whose first appearance in the output bucket is
            timed (:class:`ObjectWatch`; ``FlowRun.seen``).
    """
    from pixelflow.aws import s3_client

    s3 = s3_client()
    run_id = uuid.uuid4().hex[:8]
    key = f"bench/{label}-{run_id}.mp4"
    out_bucket = f"bench-out-{run_id}"
    s3.create_bucket(Bucket=out_bucket)
    s3.copy_object(Bucket=stack.upload_bucket, Key=key, CopySource={"Bucket": stack.upload_bucket, "Key": source_key})

    env = prefect_env(api_url=stack.prefect_url, home=(stack.work / "prefect").resolve())
    env.update({
        "AWS_ENDPOINT_URL": stack.s3_url,
        "PIXELFLOW_UPLOAD_BUCKET": stack.upload_bucket,
        "PIXELFLOW_OUTPUT_BUCKET": out_bucket,
        "PIXELFLOW_SCRATCH_DIR": str((work / "scratch").resolve()),
        "PYTHONPATH": str(ROOT),
    })
    if stack.moto is not None:  # as the local stack runs against its moto server
        with_moto_settings(env)
    if ladder:
        env["PIXELFLOW_LADDER"] = ladder
    else:
        env.pop("PIXELFLOW_LADDER", None)
    env.update(settings or {})
    result_path = work / f"{label}-{run_id}.json"
    cpu_before = stack.services_cpu()
    started = time.time()
    watcher = ObjectWatch(out_bucket, watch, started) if watch else None
    if watcher is not None:
        watcher.start()
    measurement = run_group([[sys.executable, "-m", "bench.flow_child", stack.upload_bucket, key, str(result_path)]],
                            work / f"{label}-{run_id}.log", env=env, cwd=str(ROOT), timeout=timeout)
    seen = watcher.stop() if watcher is not None else {}
    services_cpu = stack.services_cpu() - cpu_before
    result = json.loads(result_path.read_text()) if result_path.exists() else {"state": "CRASHED"}
    line = timeline(stack, result["flow_run_id"], started) if result.get("flow_run_id") else {}
    kept = None
    manifest = result.get("manifest") or {}
    if keep_output is not None and manifest.get("key_prefix"):
        # the renditions are in the folder of the attempt that made them
        download_prefix(out_bucket, manifest["key_prefix"] + (f"{manifest['folder']}/" if manifest.get("folder") else ""),
                        keep_output)
        kept = keep_output
    _empty_bucket(out_bucket)
    s3.delete_object(Bucket=stack.upload_bucket, Key=key)
    return FlowRun(measurement, result, line, services_cpu, kept, seen)
