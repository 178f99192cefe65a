"""The local stack as real child processes: moto server, Prefect server, worker, bridge and
reconciler.

Start order: moto server (S3/SQS) and Prefect server (SQLite, UI), then :func:`provision` of the
buckets, queue, dead-letter queue and notification, the crash-recovery automations
(:mod:`pixelflow.automations`), the ``pixelflow-local`` process work pool, then a process worker,
``pixelflow bridge`` and ``pixelflow reconcile`` (:mod:`pixelflow.reconcile`) while
``prefect deploy --name local`` creates the deployment and its upload trigger. Every child runs
in its own session (process group) with its output in ``<home>/logs/<name>.log``.

The worker, the bridge and the reconciler are supervised: when one exits (e.g. the worker gives
up after a long Prefect server outage) it is started again. Single services can also be stopped,
killed and started again on purpose (:meth:`Stack.stop_worker`, :meth:`Stack.start_bridge`,
:meth:`Stack.stop_prefect_server`, ...), which is how the reliability tests inject faults.
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

#: How often a supervised service (worker, bridge, reconciler) is restarted before the stack gives up.
MAX_RESTARTS = 20

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
        worker_env: Extra environment for the worker (and so every flow run) only, applied
            after ``env``: e.g. ``{"PIXELFLOW_TASK_RETRIES": "0"}``.
        heartbeat_seconds: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` of flow runs (at least 30,
            Prefect's minimum); a run without a heartbeat for 2.5 times this is marked Crashed
            and scheduled again by the crash-recovery automations.
        automations: Install the crash-recovery automations on the stack's Prefect server.
        concurrency_slot_wait_seconds: How long a run waiting for a slot of the deployment's
            concurrency limit waits before it asks again (Prefect's default is 30 s; shorter
            keeps a burst of uploads moving).
        supervise: Start the worker, the bridge or the reconciler again when it exits.
        reconcile_after_seconds: Run ``pixelflow reconcile`` alongside: an upload that has no
            run this long after it was made (its event was lost) gets one. ``None`` disables it.
    """

    home: Path = field(default_factory=lambda: Path(".pixelflow").resolve())
    project_dir: Path = PROJECT_DIR
    moto_port: int = DEFAULT_MOTO_PORT
    prefect_port: int = DEFAULT_PREFECT_PORT
    aws_endpoint: str | None = None
    worker_query_seconds: float = 1.0
    env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    heartbeat_seconds: int = 30
    automations: bool = True
    concurrency_slot_wait_seconds: float = 10.0
    supervise: bool = True
    reconcile_after_seconds: float | None = 120.0

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
        #: How often each supervised service was started again after it exited by itself.
        self.restarts: dict[str, int] = {}
        self._worker_serial = 0
        self._worker_name: str | None = None
        self._worker_env_overrides: dict[str, str] = {}
        self._bridge_env_overrides: dict[str, str] = {}

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
        return PixelFlowSettings.from_env(self.config.env)

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
        if not self.config.aws_endpoint:  # the stack's own moto server
            from pixelflow.local import with_moto_settings

            with_moto_settings(env)
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
        """Start every service, provision, install the automations, deploy, and start the worker
        and the bridge.

        Raises:
            StackError: When a port is taken or a service does not come up; everything already
                started is stopped again.
        """
        from pixelflow import local

        config = self.config
        if config.heartbeat_seconds < 30:
            raise StackError("heartbeat_seconds must be at least 30 (PREFECT_FLOWS_HEARTBEAT_FREQUENCY's minimum)")
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
            self.start_prefect_server()

            settings = self.settings()
            s3, sqs = self.clients()
            self.provisioned = provision(settings, s3=s3, sqs=sqs)
            self.log(
                f"provisioned s3://{settings.upload_bucket} -> SQS {settings.queue_name} (DLQ {settings.dlq_name} "
                f"after {settings.max_receive_count} receives); output bucket s3://{settings.output_bucket}"
            )
            if config.automations:
                names = self.install_automations()
                self.log(f"installed automations {', '.join(names)} (heartbeat every {config.heartbeat_seconds} s)")
            self.ensure_work_pool()
            self.settle_previous_runs(sources_lost=not config.aws_endpoint)
            self.start_worker(wait=False)
            self.start_bridge()
            if config.reconcile_after_seconds:
                self.start_reconciler()
            self.log(f"deploying {FLOW_NAME}/{DEPLOYMENT_NAME} and its upload trigger (prefect deploy --name {DEPLOYMENT_NAME})")
            self._prefect_cli(["deploy", "--no-prompt", "--name", DEPLOYMENT_NAME], "deploy")
            self._wait_worker_online(name=self._worker_name)
            self.log("worker and bridge are running")
        except BaseException:
            self.down()
            raise

    # --- single services (supervision and fault injection) ---------------------------------
    def child(self, name: str) -> subprocess.Popen | None:
        """The running process of a service (``moto``, ``prefect-server``, ``worker``, ``bridge``)."""
        for child in self.children:
            if child.name == name:
                return child.process
        return None

    def worker_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of the worker, which its flow runs inherit."""
        worker_env = self.env()
        worker_env.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(self.config.worker_query_seconds))
        # Runs created by the upload trigger are due at once: prefetching only matters for
        # runs waiting for a concurrency slot, which must not be picked up again right away.
        worker_env.setdefault("PREFECT_WORKER_PREFETCH_SECONDS", "1")
        worker_env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(self.config.heartbeat_seconds)
        worker_env.update(self.config.worker_env)
        worker_env.update(env or {})
        return worker_env

    def start_worker(self, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen:
        """Start a process worker for the ``pixelflow-local`` pool.

        Args:
            env: Environment overrides for this worker (and its flow runs) only.
            wait: Wait until the worker is online in the Prefect API.
        """
        from pixelflow.local import _bin

        if self.child("worker") is not None:
            raise StackError("a worker is already running; stop it first")
        self._worker_serial += 1
        name = self._worker_name = f"pixelflow-local-{os.getpid()}-{self._worker_serial}"
        self._worker_env_overrides = dict(env or {})
        process = self._spawn(
            "worker",
            [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", name],
            self.worker_env(env),
        )
        if wait:
            self._wait_worker_online(name=name)
        return process

    def stop_worker(self, kill: bool = False) -> None:
        """Stop the worker: SIGTERM (it lets its flow runs finish) or, with ``kill``, SIGKILL of
        its process group, as when its machine is lost.

        Flow runs are started in their own sessions, so a killed worker leaves them running;
        kill them separately to simulate a lost machine.
        """
        self._stop_child("worker", kill=kill, timeout=30)

    def restart_worker(self, env: dict[str, str] | None = None, kill: bool = False) -> subprocess.Popen:
        """Stop the worker and start a new one (optionally with other environment overrides)."""
        self.stop_worker(kill=kill)
        return self.start_worker(env)

    def start_bridge(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``pixelflow bridge`` (``env``: overrides, e.g. another ``PREFECT_API_URL``)."""
        if self.child("bridge") is not None:
            raise StackError("a bridge is already running; stop it first")
        self._bridge_env_overrides = dict(env or {})
        return self._spawn("bridge", [sys.executable, "-m", "pixelflow.cli", "bridge"], {**self.env(), **(env or {})})

    def start_reconciler(self) -> subprocess.Popen:
        """Start ``pixelflow reconcile --every ...``: uploads left without a run get one."""
        if self.child("reconciler") is not None:
            raise StackError("a reconciler is already running; stop it first")
        after = self.config.reconcile_after_seconds or 120.0
        every = max(5.0, min(30.0, after / 4))
        return self._spawn("reconciler", [sys.executable, "-m", "pixelflow.cli", "reconcile", "--deployment",
                                          DEPLOYMENT_NAME, "--older-than", f"{after:g}", "--every", f"{every:g}"],
                           self.env())

    def stop_bridge(self, kill: bool = False) -> None:
        """Stop the bridge: SIGTERM (it releases what it has not delivered) or SIGKILL."""
        self._stop_child("bridge", kill=kill, timeout=15)

    def start_prefect_server(self) -> None:
        """Start the stack's Prefect server (its SQLite database survives a stop)."""
        from pixelflow.local import _bin, prefect_env, wait_http

        if self.child("prefect-server") is not None:
            raise StackError("the Prefect server is already running")
        home = (self.config.home / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)
        port = self.config.prefect_port
        env = prefect_env(home=home)
        env.pop("PREFECT_API_URL", None)
        env.update(
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS=str(self.config.concurrency_slot_wait_seconds),
        )
        process = self._spawn(
            "prefect-server", [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env
        )
        self.api_url = f"http://127.0.0.1:{port}/api"
        try:
            wait_http(f"{self.api_url}/health", timeout=180, process=process)
        except (RuntimeError, TimeoutError) as exc:
            raise StackError(f"the Prefect server did not start: {exc}; see {self.config.log_dir / 'prefect-server.log'}") from None

    def stop_prefect_server(self, kill: bool = False) -> None:
        """Stop the Prefect server (an outage: the bridge holds messages until it is back)."""
        self._stop_child("prefect-server", kill=kill, timeout=30)

    def install_automations(self) -> list[str]:
        """Install (or replace) the crash-recovery automations on the stack's Prefect server."""
        from prefect.client.orchestration import SyncPrefectClient

        from pixelflow.automations import install

        with SyncPrefectClient(self.api_url) as client:
            return install(client, self.config.heartbeat_seconds)

    def _stop_child(self, name: str, kill: bool, timeout: float) -> None:
        from pixelflow.local import stop_process

        for child in [c for c in self.children if c.name == name]:
            if kill:
                try:
                    os.killpg(child.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.process.wait(10)
            else:
                stop_process(child.process, timeout=timeout)
            self.children.remove(child)
        self._write_state()

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
        which also frees their deployment concurrency slots (and lets the re-run automation
        schedule them again). When the S3 endpoint is a fresh moto server, every unfinished run
        refers to an object that no longer exists: they are all cancelled instead.

        Returns:
            How many runs were closed.
        """
        try:
            deployment = self.deployment_id()
        except Exception:
            return 0  # first start: nothing deployed yet
        states = {"PENDING": "CRASHED", "RUNNING": "CRASHED", "CANCELLING": "CANCELLED"}
        if sources_lost:
            states = dict.fromkeys(["PENDING", "RUNNING", "CANCELLING", "SCHEDULED", "PAUSED"], "CANCELLED")
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

    def _wait_worker_online(self, timeout: float = 120.0, name: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                workers = self.api("POST", f"/work_pools/{WORK_POOL}/workers/filter", json={})
            except Exception:
                workers = []
            if any(w.get("status") == "ONLINE" and name in (None, w.get("name")) for w in workers):
                return
            time.sleep(0.5)
        raise StackError(f"the worker did not come online within {timeout:.0f} s; see {self.config.log_dir / 'worker.log'}")

    def check_children(self) -> None:
        """Start an exited worker or bridge again (when supervised); raise :class:`StackError`
        when another service has exited."""
        for child in list(self.children):
            code = child.process.poll()
            if code is None:
                continue
            if self.config.supervise and child.name in ("worker", "bridge", "reconciler") \
                    and self.restarts.get(child.name, 0) < MAX_RESTARTS:
                self.children.remove(child)
                self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
                self.log(f"{child.name} exited with {code}; starting it again (see {child.log_path})")
                if child.name == "worker":
                    self.start_worker(self._worker_env_overrides, wait=False)
                elif child.name == "bridge":
                    self.start_bridge(self._bridge_env_overrides)
                else:
                    self.start_reconciler()
                continue
            raise StackError(f"{child.name} exited with {code}; see {child.log_path}:\n{tail(child.log_path)}")

    def down(self) -> None:
        """Stop every process this stack started: bridge and reconciler, worker, Prefect server, moto."""
        from pixelflow.local import stop_process

        order = {"reconciler": 0, "bridge": 0, "worker": 1, "prefect-server": 2, "moto": 3}
        for child in sorted(reversed(self.children), key=lambda c: order.get(c.name, -1)):
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
        """Block until SIGINT/SIGTERM or until a service that is not supervised (moto, the Prefect
        server) exits; then stop everything."""
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
        """Shell lines to upload more files to the running stack with what ``./dev.sh`` installed.

        The ``pixelflow`` command of this environment (``.venv/bin/pixelflow``), not the AWS CLI,
        which nothing installs.
        """
        settings = self.settings()
        pixelflow = pixelflow_command()
        return "\n".join([
            f"export AWS_ENDPOINT_URL={self.aws_endpoint} AWS_ACCESS_KEY_ID=testing "
            "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1",
            f"export PIXELFLOW_UPLOAD_BUCKET={settings.upload_bucket} PIXELFLOW_OUTPUT_BUCKET={settings.output_bucket} "
            f"PIXELFLOW_ASSET_PREFIX={settings.asset_prefix}",
            f"{pixelflow} upload my-video.mp4 --wait   # prints the asset id, then waits until it is published",
            f"{pixelflow} ls                           # every asset and its state",
            f"export PREFECT_API_URL={self.api_url}   # for the prefect CLI, e.g. `prefect flow-run ls`",
        ])


def pixelflow_command(cwd: Path | None = None) -> str:
    """How to run this environment's ``pixelflow`` from ``cwd``: ``.venv/bin/pixelflow`` in a clone.

    The script next to the running interpreter, relative to ``cwd`` when it is below it;
    plain ``pixelflow`` when there is none (an installation that put it on ``PATH``).
    """
    script = Path(sys.executable).with_name("pixelflow")
    if not script.exists():
        return "pixelflow"
    cwd = (cwd or Path.cwd()).resolve()
    try:
        return str(script.relative_to(cwd))
    except ValueError:
        return str(script)


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
