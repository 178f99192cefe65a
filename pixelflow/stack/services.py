"""The local stack as real child processes: moto server, Prefect server, worker and bridge.

Start order: moto server (S3/SQS) and Prefect server (SQLite, UI), then :func:`provision` of the
buckets, queue, dead-letter queue and notification, then the ``pixelflow-local`` process work
pool, then a process worker and ``pixelflow bridge`` while ``prefect deploy --name local``
creates the deployment and its upload trigger. Every child runs in its own session (process
group) with its output in ``<home>/logs/<name>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pixelflow.settings import PixelFlowSettings
from pixelflow.stack.provision import Provisioned, provision
from pixelflow.stack.state import port_in_use, proc_start, process_alive, read_state, tail

#: Work pool, flow and deployment of the ``local`` block of prefect.yaml.
WORK_POOL = "pixelflow-local"
FLOW_NAME = "transcode"
DEPLOYMENT_NAME = "local"

DEFAULT_MOTO_PORT = 5000
DEFAULT_PREFECT_PORT = 4200
PROJECT_DIR = Path(__file__).resolve().parents[2]

Log = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not start (port in use, a service failed, ...)."""


@dataclass
class StackConfig:
    """Where and how the local stack runs.

    Attributes:
        home: State directory: logs, Prefect's SQLite home, the state file, samples.
        project_dir: The PixelFlow checkout flows run from (holds prefect.yaml and flows/).
        moto_port: Port of the moto server (S3/SQS).
        prefect_port: Port of the Prefect server and UI.
        aws_endpoint: Use this S3/SQS endpoint instead of starting a moto server.
        worker_query_seconds: How often the process worker polls for scheduled runs.
        env: Extra environment for every child process (e.g. ``PIXELFLOW_*`` overrides).
    """

    home: Path = field(default_factory=lambda: Path(".pixelflow").resolve())
    project_dir: Path = PROJECT_DIR
    moto_port: int = DEFAULT_MOTO_PORT
    prefect_port: int = DEFAULT_PREFECT_PORT
    aws_endpoint: str | None = None
    worker_query_seconds: float = 1.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"


@dataclass
class _Child:
    name: str
    process: subprocess.Popen
    log_path: Path


class Stack:
    """The local event-driven stack as real child processes.

    Example:
        >>> stack = Stack(StackConfig(prefect_port=4300, moto_port=5300))  # doctest: +SKIP
        >>> stack.up()                                                      # doctest: +SKIP
        >>> upload = stack.upload_file(Path("clip.mp4"))                    # doctest: +SKIP
        >>> stack.wait_for_manifest(upload["asset_id"])                     # doctest: +SKIP
        >>> stack.down()                                                    # doctest: +SKIP
    """

    def __init__(self, config: StackConfig | None = None, log: Log = print) -> None:
        self.config = config or StackConfig()
        self.log = log
        self.children: list[_Child] = []
        self.aws_endpoint: str | None = None
        self.api_url: str | None = None
        self.provisioned: Provisioned | None = None

    @classmethod
    def attach(cls, config: StackConfig, log: Log = print) -> "Stack":
        """A handle on a stack already running (from its state file) to upload and query.

        Raises:
            StackError: When no running stack is recorded under ``config.home``.
        """
        state = read_state(config.state_file)
        if not state or not any(process_alive(p) for p in state.get("processes", [])):
            raise StackError(f"no running stack recorded in {config.state_file}; start one with `pixelflow stack up`")
        stack = cls(config, log)
        stack.aws_endpoint = state.get("aws_endpoint")
        stack.api_url = state.get("api_url")
        stack._ui_url = state.get("ui_url")
        return stack

    # --- derived ----------------------------------------------------------------------------
    @property
    def ui_url(self) -> str:
        return getattr(self, "_ui_url", None) or f"http://127.0.0.1:{self.config.prefect_port}"

    def settings(self) -> PixelFlowSettings:
        """Settings as the stack's children see them (environment plus ``config.env``)."""
        overrides = {k: v for k, v in self.config.env.items() if k.startswith("PIXELFLOW_")}
        saved = {k: os.environ.get(k) for k in overrides}
        try:
            os.environ.update(overrides)
            return PixelFlowSettings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def env(self) -> dict[str, str]:
        """Environment of every child process."""
        from pixelflow.local import prefect_env

        env = prefect_env(api_url=self.api_url, home=self.config.home / "prefect")
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(var, None)
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            PIXELFLOW_PROJECT_DIR=str(self.config.project_dir),
            PYTHONUNBUFFERED="1",
            PREFECT_CLI_PROMPT="false",
        )
        if self.aws_endpoint:
            env["AWS_ENDPOINT_URL"] = self.aws_endpoint
        env.update(self.config.env)
        return env

    def clients(self) -> tuple[Any, Any]:
        """boto3 S3 and SQS clients for the stack's endpoint."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
        return (
            session.client("s3", endpoint_url=self.aws_endpoint, config=config),
            session.client("sqs", endpoint_url=self.aws_endpoint, config=config),
        )

    # --- start / stop -----------------------------------------------------------------------
    def up(self) -> None:
        """Start every service, provision, deploy, and start the worker and the bridge.

        Raises:
            StackError: When a port is taken or a service does not come up; everything already
                started is stopped again.
        """
        from pixelflow import local

        config = self.config
        config.log_dir.mkdir(parents=True, exist_ok=True)
        running = read_state(config.state_file)
        if running and any(process_alive(p) for p in running.get("processes", [])):
            raise StackError(
                f"a stack is already running (state in {config.state_file}); stop it with `pixelflow stack down`"
            )
        for port in [config.prefect_port] + ([] if config.aws_endpoint else [config.moto_port]):
            if port_in_use(port):
                raise StackError(f"port {port} on 127.0.0.1 is in use; choose another (--prefect-port/--moto-port)")
        try:
            if config.aws_endpoint:
                self.aws_endpoint = config.aws_endpoint
            else:
                self.log(f"starting moto server (S3/SQS) on port {config.moto_port}")
                moto = local.start_moto(config.moto_port, log_dir=config.log_dir)
                self._adopt("moto", moto.process, moto.log_path)
                self.aws_endpoint = moto.url
            self.log(f"starting Prefect server on port {config.prefect_port} (SQLite in {config.home / 'prefect'})")
            server = local.start_prefect_server(config.prefect_port, home=config.home / "prefect", log_dir=config.log_dir)
            self._adopt("prefect-server", server.process, server.log_path)
            self.api_url = server.url

            settings = self.settings()
            s3, sqs = self.clients()
            self.provisioned = provision(settings, s3=s3, sqs=sqs)
            self.log(
                f"provisioned s3://{settings.upload_bucket} -> SQS {settings.queue_name} (DLQ {settings.dlq_name} "
                f"after {settings.max_receive_count} receives); output bucket s3://{settings.output_bucket}"
            )
            self.ensure_work_pool()
            self.settle_previous_runs(sources_lost=not config.aws_endpoint)
            worker_env = self.env()
            worker_env.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(config.worker_query_seconds))
            worker_env.setdefault("PREFECT_WORKER_PREFETCH_SECONDS", "10")
            self._spawn(
                "worker",
                [local._bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                 "--name", f"pixelflow-local-{os.getpid()}"],
                worker_env,
            )
            self._spawn("bridge", [sys.executable, "-m", "pixelflow.cli", "bridge"], self.env())
            self.log(f"deploying {FLOW_NAME}/{DEPLOYMENT_NAME} and its upload trigger (prefect deploy --name {DEPLOYMENT_NAME})")
            self._prefect_cli(["deploy", "--no-prompt", "--name", DEPLOYMENT_NAME], "deploy")
            self._wait_worker_online()
            self.log("worker and bridge are running")
        except BaseException:
            self.down()
            raise

    def ensure_work_pool(self) -> None:
        """Create (or keep) the ``pixelflow-local`` process work pool."""
        import httpx
        from prefect.workers.process import ProcessWorker

        response = httpx.post(
            f"{self.api_url}/work_pools/",
            json={"name": WORK_POOL, "type": "process", "base_job_template": ProcessWorker.get_default_base_job_template(),
                  "description": "PixelFlow's local transcodes (pixelflow stack up)."},
            timeout=30,
        )
        if response.status_code not in (201, 409):
            raise StackError(f"cannot create work pool {WORK_POOL}: HTTP {response.status_code} {response.text[:300]}")

    def settle_previous_runs(self, sources_lost: bool) -> int:
        """Close the runs a previous stack left behind in the (persistent) Prefect database.

        Runs that were Pending or Running died with the previous worker: they are marked Crashed,
        which also frees their deployment concurrency slots. When the S3 endpoint is a fresh
        moto server, runs still waiting to start refer to objects that no longer exist: they are
        cancelled.

        Returns:
            How many runs were closed.
        """
        try:
            deployment = self.deployment_id()
        except Exception:
            return 0  # first start: nothing deployed yet
        states = {"PENDING": "CRASHED", "RUNNING": "CRASHED", "CANCELLING": "CANCELLED"}
        if sources_lost:
            states.update(SCHEDULED="CANCELLED", PAUSED="CANCELLED")
        runs = self.api("POST", "/flow_runs/filter", json={
            "deployments": {"id": {"any_": [deployment]}},
            "flow_runs": {"state": {"type": {"any_": sorted(states)}}},
            "limit": 200,
        })
        for run in runs:
            self.api("POST", f"/flow_runs/{run['id']}/set_state", json={
                "state": {"type": states[run["state_type"]], "message": "Closed when the local stack restarted."},
                "force": True,
            })
        if runs:
            self.log(f"closed {len(runs)} run(s) left over from a previous stack")
        return len(runs)

    def _adopt(self, name: str, process: subprocess.Popen, log_path: Path) -> None:
        self.children.append(_Child(name, process, log_path))
        self._write_state()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        from pixelflow.local import spawn

        log_path = self.config.log_dir / f"{name}.log"
        process = spawn(args, log_path, env=env, cwd=str(self.config.project_dir))
        self._adopt(name, process, log_path)
        return process

    def _prefect_cli(self, args: list[str], log_name: str) -> None:
        from pixelflow.local import _bin

        log_path = self.config.log_dir / f"{log_name}.log"
        with open(log_path, "ab") as log:
            result = subprocess.run(
                [_bin("prefect"), *args], env=self.env(), cwd=str(self.config.project_dir),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300,
            )
        if result.returncode != 0:
            raise StackError(f"`prefect {' '.join(args)}` failed (exit {result.returncode}); see {log_path}:\n{tail(log_path)}")

    def _wait_worker_online(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                workers = self.api("POST", f"/work_pools/{WORK_POOL}/workers/filter", json={})
            except Exception:
                workers = []
            if any(w.get("status") == "ONLINE" for w in workers):
                return
            time.sleep(0.5)
        raise StackError(f"the worker did not come online within {timeout:.0f} s; see {self.config.log_dir / 'worker.log'}")

    def check_children(self) -> None:
        """Raise :class:`StackError` when a child process has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise StackError(f"{child.name} exited with {code}; see {child.log_path}:\n{tail(child.log_path)}")

    def down(self) -> None:
        """Stop every process this stack started, newest first (bridge before worker)."""
        from pixelflow.local import stop_process

        for child in reversed(self.children):
            if child.process.poll() is None:
                self.log(f"stopping {child.name} (pid {child.process.pid})")
            stop_process(child.process, timeout=30 if child.name == "worker" else 15)
        self.children.clear()
        state = read_state(self.config.state_file)
        if state and state.get("controller") == os.getpid():
            self.config.state_file.unlink(missing_ok=True)

    def _write_state(self, detached: bool = False) -> None:
        state = {
            "controller": None if detached else os.getpid(),
            "controller_start": None if detached else proc_start(os.getpid()),
            "started": datetime.now(timezone.utc).isoformat(),
            "aws_endpoint": self.aws_endpoint,
            "api_url": self.api_url,
            "ui_url": self.ui_url,
            "processes": [
                {"name": c.name, "pid": c.process.pid, "start": proc_start(c.process.pid), "log": str(c.log_path)}
                for c in self.children
            ],
        }
        self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.config.state_file)

    def detach(self) -> None:
        """Leave the children running after this process exits (``pixelflow stack down`` stops them)."""
        self._write_state(detached=True)
        self.children.clear()

    def wait(self, poll: float = 1.0) -> None:
        """Block until SIGINT/SIGTERM or until a child exits; then stop everything."""
        stop: dict[str, int | None] = {"signal": None}

        def handler(signum, _frame):
            stop["signal"] = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while stop["signal"] is None:
                self.check_children()
                time.sleep(poll)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.down()

    # --- Prefect API ----------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the stack's Prefect API and return the decoded JSON answer."""
        import httpx

        response = httpx.request(method, f"{self.api_url}{path}", timeout=15, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment_id(self) -> str:
        return self.api("GET", f"/deployments/name/{FLOW_NAME}/{DEPLOYMENT_NAME}")["id"]

    def flow_runs(self) -> list[dict[str, Any]]:
        """Flow runs of the local deployment, newest first."""
        body = {
            "deployments": {"id": {"any_": [self.deployment_id()]}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 200,
        }
        return self.api("POST", "/flow_runs/filter", json=body)

    def flow_run_for(self, key: str, etag: str | None = None) -> dict[str, Any] | None:
        """The newest flow run of the local deployment for an uploaded key (and ETag)."""
        from pixelflow.core.ids import normalize_etag

        for run in self.flow_runs():
            params = run.get("parameters") or {}
            if params.get("key") == key and (etag is None or normalize_etag(params.get("etag")) == normalize_etag(etag)):
                return run
        return None

    def flow_run_url(self, flow_run_id: str) -> str:
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    # --- uploads --------------------------------------------------------------------------
    def upload_file(self, path: Path, key: str | None = None) -> dict[str, Any]:
        """Upload a file to the upload bucket.

        Returns:
            bucket, key, etag, version_id, the resulting asset_id and ``uploaded_at`` (epoch
            seconds when S3 answered the PUT).
        """
        from pixelflow.core.ids import asset_id, normalize_etag

        settings = self.settings()
        s3, _ = self.clients()
        key = key or f"uploads/{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{path.name}"
        with open(path, "rb") as body:
            response = s3.put_object(Bucket=settings.upload_bucket, Key=key, Body=body)
        uploaded_at = time.time()
        etag = normalize_etag(response.get("ETag"))
        version_id = response.get("VersionId")
        return {
            "bucket": settings.upload_bucket,
            "key": key,
            "etag": etag,
            "version_id": version_id,
            "asset_id": asset_id(settings.upload_bucket, key, etag, version_id),
            "uploaded_at": uploaded_at,
        }

    def manifest_key(self, asset: str) -> str:
        return f"{self.settings().asset_prefix}{asset}/manifest.json"

    def wait_for_manifest(self, asset: str, timeout: float = 900.0,
                          on_wait: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Wait until ``<asset_prefix><asset>/manifest.json`` is in the output bucket; return it."""
        from botocore.exceptions import ClientError

        settings = self.settings()
        s3, _ = self.clients()
        key = self.manifest_key(asset)
        started = time.monotonic()
        last_note = started
        while time.monotonic() - started < timeout:
            self.check_children()
            try:
                return json.loads(s3.get_object(Bucket=settings.output_bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
            if on_wait and time.monotonic() - last_note >= 10:
                last_note = time.monotonic()
                on_wait(last_note - started)
            time.sleep(0.5)
        raise TimeoutError(f"s3://{settings.output_bucket}/{key} did not appear within {timeout:.0f} s")

    def object_url(self, bucket: str, key: str) -> str:
        """HTTP URL of an object on the local endpoint (path-style)."""
        return f"{self.aws_endpoint}/{bucket}/{key}"

    def how_to_upload(self) -> str:
        """Shell lines to upload more files to the running stack."""
        settings = self.settings()
        return "\n".join([
            f"export AWS_ENDPOINT_URL={self.aws_endpoint} AWS_ACCESS_KEY_ID=testing "
            "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1",
            f"aws s3 cp my-video.mp4 s3://{settings.upload_bucket}/my-video.mp4 --endpoint-url {self.aws_endpoint}",
            f"aws s3 ls --recursive s3://{settings.output_bucket}/{settings.asset_prefix} --endpoint-url {self.aws_endpoint}",
            f"export PREFECT_API_URL={self.api_url}   # for the prefect CLI, e.g. `prefect flow-run ls`",
        ])


def make_sample(path: Path, seconds: float = 4.0, size: str = "1920x1080", rate: int = 30) -> Path:
    """Generate a sample video (FFmpeg's testsrc2 pattern with a sine tone) unless it exists."""
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(tmp)],
        check=True,
    )
    tmp.replace(path)
    return path
