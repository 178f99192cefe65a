"""The local stack as real child processes: moto server, Prefect server, worker, bridge and
reconciler.

Start order: moto server (S3/SQS), PostgreSQL when the stack's database is ``postgres``
(:mod:`pixelflow.local.postgres`) and Prefect server (SQLite or that PostgreSQL, UI), then
:func:`provision` of the buckets, queue, dead-letter queue and notification, the crash-recovery automations
(:mod:`pixelflow.ops.automations`), the ``pixelflow-local`` process work pool, then a process worker,
``pixelflow bridge``, ``pixelflow reconcile`` (:mod:`pixelflow.ops.reconcile`) and ``pixelflow api``
(:mod:`pixelflow.ops.api`, the HTTP API and its upload page) and ``pixelflow webhooks dispatch``
(:mod:`pixelflow.ops.webhook_dispatch`, signed webhook deliveries) while ``prefect deploy --name local``
creates the deployment and its upload trigger.

:class:`Stack` composes the parts, each in its own module: the child processes and the state
file (:class:`~pixelflow.local.stack.supervisor.Supervisor`, ``stack.supervisor``), the provisioning
(:mod:`pixelflow.local.stack.provision`), the Prefect queries
(:class:`~pixelflow.local.stack.prefect_api.PrefectApi`, ``stack.prefect``) and the uploads
(:class:`~pixelflow.local.stack.uploads.Uploads`, ``stack.uploads``). What it keeps is each service's
command line and environment.

The worker, the bridge and the reconciler are supervised: when one exits (e.g. the worker gives
up after a long Prefect server outage) it is started again. Single services can also be stopped,
killed and started again on purpose (:meth:`Stack.stop_worker`, :meth:`Stack.start_bridge`,
:meth:`Stack.stop_prefect_server`, ...), which is how the reliability tests inject faults.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from typing import Any

from pixelflow.settings import PixelFlowSettings
from pixelflow.local.stack.config import DEPLOYMENT_NAME, FLOW_NAME, WORK_POOL, Log, StackConfig, StackError
from pixelflow.local.stack.prefect_api import PrefectApi
from pixelflow.local.stack.provision import (
    Provisioned,
    deploy,
    ensure_work_pool,
    install_automations,
    provision,
    settle_previous_runs,
)
from pixelflow.local.stack.state import port_in_use, running_state
from pixelflow.local.stack.supervisor import Supervisor
from pixelflow.local.stack.uploads import Uploads


class Stack:
    """The local event-driven stack as real child processes.

    Example:
        >>> stack = Stack(StackConfig(prefect_port=4300, moto_port=5300))  # doctest: +SKIP
        >>> stack.up()                                                      # doctest: +SKIP
        >>> upload = stack.uploads.upload_file(Path("clip.mp4"))            # doctest: +SKIP
        >>> stack.uploads.wait_for_manifest(upload["asset_id"])             # doctest: +SKIP
        >>> stack.prefect.flow_runs()                                       # doctest: +SKIP
        >>> stack.down()                                                    # doctest: +SKIP
    """

    def __init__(self, config: StackConfig | None = None, log: Log = print) -> None:
        self.config = config or StackConfig()
        self.log = log
        self.aws_endpoint: str | None = None
        self.api_url: str | None = None
        self.provisioned: Provisioned | None = None
        self.supervisor = Supervisor(self.config, log, describe=self._urls)
        self._ui_url: str | None = None
        self._worker_serial = 0
        self._worker_name: str | None = None
        #: The HTTP API's base URL and bearer token, once started (``None``: no API).
        self.http_api_url: str | None = None
        self.api_token: str | None = None
        #: The port of the stack's PostgreSQL server, once started (``None``: SQLite).
        self.postgres_port: int | None = None

    @classmethod
    def attach(cls, config: StackConfig, log: Log = print) -> "Stack":
        """A handle on a stack already running (from its state file) to upload and query.

        Raises:
            StackError: When no running stack is recorded under ``config.home``.
        """
        state = running_state(config.state_file)
        if not state:
            raise StackError(f"no running stack recorded in {config.state_file}; start one with `pixelflow stack up`")
        stack = cls(config, log)
        stack.aws_endpoint = state.get("aws_endpoint")
        stack.api_url = state.get("api_url")
        stack._ui_url = state.get("ui_url")
        stack.http_api_url = state.get("http_api_url")
        stack.postgres_port = state.get("postgres_port")
        stack.api_token = stack._api_token() if stack.http_api_url else None
        return stack

    # --- derived ----------------------------------------------------------------------------
    @property
    def ui_url(self) -> str:
        return self._ui_url or f"http://127.0.0.1:{self.config.prefect_port}"

    @property
    def prefect(self) -> PrefectApi:
        """Queries to the stack's Prefect server."""
        return PrefectApi(self.api_url, self.ui_url)

    @property
    def uploads(self) -> Uploads:
        """Uploads to the stack's upload bucket and the manifests they become."""
        s3, _ = self.clients()
        return Uploads(self.settings(), s3, self.aws_endpoint, self.api_url, check=self.supervisor.check)

    def settings(self) -> PixelFlowSettings:
        """Settings as the stack's children see them (environment plus ``config.env``)."""
        return PixelFlowSettings.from_env(self.config.env)

    def env(self) -> dict[str, str]:
        """Environment of every child process."""
        from pixelflow.local.processes import prefect_env

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
        # Webhooks to receivers on this machine (docs/webhooks.md); public addresses are always allowed.
        env.setdefault("PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
        if not self.config.aws_endpoint:  # the stack's own moto server
            from pixelflow.local.processes import with_moto_settings

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

    def dynamodb_client(self) -> Any:
        """A boto3 DynamoDB client for the stack's endpoint (the records table)."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        return session.client("dynamodb", endpoint_url=self.aws_endpoint,
                              config=Config(retries={"max_attempts": 5, "mode": "standard"}))

    def _urls(self) -> dict[str, str | None]:
        return {"aws_endpoint": self.aws_endpoint, "api_url": self.api_url, "ui_url": self.ui_url,
                "http_api_url": self.http_api_url, "database": self.config.database,
                "postgres_port": self.postgres_port}

    # --- start / stop -----------------------------------------------------------------------
    def up(self) -> None:
        """Start every service, provision, install the automations, deploy, and start the worker
        and the bridge.

        Raises:
            StackError: When a port is taken or a service does not come up; everything already
                started is stopped again.
        """
        from pixelflow.local import processes as local

        config = self.config
        if config.heartbeat_seconds < 30:
            raise StackError("heartbeat_seconds must be at least 30 (PREFECT_FLOWS_HEARTBEAT_FREQUENCY's minimum)")
        config.log_dir.mkdir(parents=True, exist_ok=True)
        if running_state(config.state_file):
            raise StackError(
                f"a stack is already running (state in {config.state_file}); stop it with `pixelflow stack down`"
            )
        ports = [config.prefect_port] + ([] if config.aws_endpoint else [config.moto_port]) + \
            ([config.api_port] if config.api_port else []) + \
            ([config.postgres_port] if config.database == "postgres" and config.postgres_port else [])
        for port in ports:
            if port_in_use(port):
                raise StackError(f"port {port} on 127.0.0.1 is in use; choose another "
                                 "(--prefect-port/--moto-port/--api-port)")
        try:
            if config.aws_endpoint:
                self.aws_endpoint = config.aws_endpoint
            else:
                self.log(f"starting moto server (S3/SQS) on port {config.moto_port}")
                moto = local.start_moto(config.moto_port, log_dir=config.log_dir)
                self.supervisor.adopt("moto", moto.process, moto.log_path)
                self.aws_endpoint = moto.url
            if config.database == "postgres":
                self.start_postgres()
                where = f"PostgreSQL on port {self.postgres_port}, data in {config.home / 'postgres'}"
            else:
                where = f"SQLite in {config.home / 'prefect'}"
            self.log(f"starting Prefect server on port {config.prefect_port} ({where})")
            self.start_prefect_server()

            settings = self.settings()
            s3, sqs = self.clients()
            self.provisioned = provision(settings, s3=s3, sqs=sqs, dynamodb=self.dynamodb_client())
            self.log(
                f"provisioned s3://{settings.upload_bucket} -> SQS {settings.queue_name} (DLQ {settings.dlq_name} "
                f"after {settings.max_receive_count} receives); output bucket s3://{settings.output_bucket}"
            )
            if config.automations:
                names = install_automations(self.api_url, config.heartbeat_seconds)
                self.log(f"installed automations {', '.join(names)} (heartbeat every {config.heartbeat_seconds} s)")
            ensure_work_pool(self.api_url)
            closed = settle_previous_runs(self.prefect, sources_lost=not config.aws_endpoint)
            if closed:
                self.log(f"closed {closed} run(s) left over from a previous stack")
            if config.warm_start:
                self.start_flow_starter()
            self.start_worker(wait=False)
            self.start_bridge()
            self.start_dispatcher()
            if config.reconcile_after_seconds:
                self.start_reconciler()
            if config.api_port:
                self.start_api()
            self.log(f"deploying {FLOW_NAME}/{DEPLOYMENT_NAME} and its upload trigger (prefect deploy --name {DEPLOYMENT_NAME})")
            deploy(self.env(), config.project_dir, config.log_dir / "deploy.log")
            self._wait_worker_online(name=self._worker_name)
            self.log("worker and bridge are running")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop every process this stack started: bridge and reconciler, worker, Prefect server, moto."""
        self.supervisor.stop_all()

    def detach(self) -> None:
        """Leave the children running after this process exits (``pixelflow stack down`` stops them)."""
        self.supervisor.detach()

    def wait(self, poll: float = 1.0) -> None:
        """Block until SIGINT/SIGTERM or until a service that is not supervised (moto, the Prefect
        server) exits; then stop everything."""
        self.supervisor.wait(poll)

    # --- single services (supervision and fault injection) ---------------------------------
    def worker_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of the worker, which its flow runs inherit."""
        worker_env = self.env()
        worker_env.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(self.config.worker_query_seconds))
        # Runs created by the upload trigger are due at once: prefetching only matters for
        # runs waiting for a concurrency slot, which must not be picked up again right away.
        worker_env.setdefault("PREFECT_WORKER_PREFETCH_SECONDS", "1")
        worker_env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(self.config.heartbeat_seconds)
        if self.config.warm_start:  # the pool's command hands each run to the flow starter
            from pixelflow.local.flow_starter import SOCKET_ENV

            worker_env[SOCKET_ENV] = self.config.starter_socket
        worker_env.update(self.config.worker_env)
        worker_env.update(env or {})
        return worker_env

    def start_worker(self, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen:
        """Start a process worker for the ``pixelflow-local`` pool (supervised).

        Args:
            env: Environment overrides for this worker (and its flow runs) only; a supervised
                restart keeps them.
            wait: Wait until the worker is online in the Prefect API.
        """
        from pixelflow.local.processes import _bin

        serial = self._worker_serial + 1
        name = f"pixelflow-local-{os.getpid()}-{serial}"
        process = self.supervisor.spawn(
            "worker",
            [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", name],
            self.worker_env(env),
            restart=lambda: self.start_worker(env, wait=False),
        )
        self._worker_serial, self._worker_name = serial, name
        if wait:
            self._wait_worker_online(name=name)
        return process

    def start_flow_starter(self) -> subprocess.Popen:
        """Start the flow starter (supervised): it imports Prefect and the flow once and forks
        each run the worker hands it (:mod:`pixelflow.local.flow_starter`). It gets the worker's
        environment, which is what its runs' Prefect settings are checked against."""
        return self.supervisor.spawn(
            "flow-starter",
            [sys.executable, "-m", "pixelflow.local.flow_starter", "serve", "--socket", self.config.starter_socket],
            self.worker_env(), restart=self.start_flow_starter)

    def stop_worker(self, kill: bool = False) -> None:
        """Stop the worker: SIGTERM (it lets its flow runs finish) or, with ``kill``, SIGKILL of
        its process group, as when its machine is lost.

        Flow runs are started in their own sessions, so a killed worker leaves them running;
        kill them separately to simulate a lost machine.
        """
        self.supervisor.stop("worker", kill=kill, timeout=30)

    def start_bridge(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``pixelflow bridge`` (supervised; ``env``: overrides, e.g. another ``PREFECT_API_URL``)."""
        return self.supervisor.spawn(
            "bridge", [sys.executable, "-m", "pixelflow.cli", "bridge"], {**self.env(), **(env or {})},
            restart=lambda: self.start_bridge(env),
        )

    def stop_bridge(self, kill: bool = False) -> None:
        """Stop the bridge: SIGTERM (it releases what it has not delivered) or SIGKILL."""
        self.supervisor.stop("bridge", kill=kill, timeout=15)

    def start_dispatcher(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``pixelflow webhooks dispatch`` (supervised): signed webhook deliveries."""
        base = {"PIXELFLOW_API_PUBLIC_URL": f"http://127.0.0.1:{self.config.api_port}/"} if self.config.api_port else {}
        return self.supervisor.spawn(
            "webhooks", [sys.executable, "-m", "pixelflow.cli", "webhooks", "dispatch"],
            {**base, **self.env(), **(env or {})}, restart=lambda: self.start_dispatcher(env))

    def stop_dispatcher(self, kill: bool = False) -> None:
        """Stop the webhook dispatcher: SIGTERM (it ends its poll, finishes the attempt in hand and
        releases the rest) or SIGKILL."""
        self.supervisor.stop("webhooks", kill=kill, timeout=40)

    def start_reconciler(self) -> subprocess.Popen:
        """Start ``pixelflow reconcile --every ...`` (supervised): uploads left without a run get one."""
        after = self.config.reconcile_after_seconds or 120.0
        every = max(5.0, min(30.0, after / 4))
        return self.supervisor.spawn(
            "reconciler",
            [sys.executable, "-m", "pixelflow.cli", "reconcile", "--deployment", DEPLOYMENT_NAME,
             "--older-than", f"{after:g}", "--every", f"{every:g}"],
            self.env(),
            restart=self.start_reconciler,
        )

    def _api_token(self) -> str:
        """The API's token: the first of ``PIXELFLOW_API_TOKENS`` in ``config.env``, else the one
        kept in ``<home>/api-token`` (generated on first use, readable by its owner only)."""
        configured = [t.strip() for t in self.config.env.get("PIXELFLOW_API_TOKENS", "").split(",") if t.strip()]
        if configured:
            return configured[0]
        return self._kept_secret("api-token")

    def _kept_secret(self, name: str) -> str:
        """A random secret kept in ``<home>/<name>`` (generated on first use, readable by its owner only)."""
        path = self.config.home / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def start_api(self, wait: bool = True) -> subprocess.Popen:
        """Start ``pixelflow api`` on ``config.api_port`` (supervised) and wait for ``/health``."""
        from pixelflow.local.processes import wait_http

        port = self.config.api_port
        self.api_token = self._api_token()
        self.http_api_url = f"http://127.0.0.1:{port}"
        env = {**self.env(), "PIXELFLOW_API_PUBLIC_URL": f"{self.http_api_url}/"}
        env.setdefault("PIXELFLOW_API_TOKENS", self.api_token)
        if not (env.get("PIXELFLOW_PLAYBACK_SIGNING_KEY") or env.get("PIXELFLOW_PLAYBACK_SIGNING_KEY_SECRET_ID")):
            # Signed playback: the key `pixelflow playback-token` also finds in <home>/playback-key.
            env["PIXELFLOW_PLAYBACK_SIGNING_KEY"] = self._kept_secret("playback-key")
        process = self.supervisor.spawn(
            "api", [sys.executable, "-m", "pixelflow.cli", "api", "--host", "127.0.0.1", "--port", str(port)], env,
            restart=lambda: self.start_api(wait=False))
        if wait:
            wait_http(f"{self.http_api_url}/health", timeout=60, process=process)
            self.log(f"HTTP API on {self.http_api_url} (docs {self.http_api_url}/docs)")
        return process

    def start_postgres(self) -> None:
        """Start the stack's PostgreSQL server (``initdb`` on first use; its data survives a stop).

        Raises:
            StackError: When PostgreSQL is not installed or does not start.
        """
        from pixelflow.local.postgres import LocalPostgres, PostgresError
        from pixelflow.local.processes import free_port

        port = self.config.postgres_port or free_port()
        self.log(f"starting PostgreSQL on port {port} (data in {self.config.home / 'postgres'})")
        try:
            server = LocalPostgres(self.config.home).start(port, log_dir=self.config.log_dir)
        except PostgresError as exc:
            raise StackError(str(exc)) from None
        self.postgres_port = port
        self.supervisor.adopt("postgres", server.process, server.log_path)

    def database_url(self) -> str:
        """The URL of the Prefect server's database (a PostgreSQL one holds its password)."""
        from pixelflow.local.postgres import LocalPostgres
        from pixelflow.local.processes import sqlite_url

        if self.config.database == "postgres":
            return LocalPostgres(self.config.home).url(self.postgres_port)
        return sqlite_url(self.config.home / "prefect")

    def start_prefect_server(self) -> None:
        """Start the stack's Prefect server (its database survives a stop)."""
        from pixelflow.local.processes import _bin, prefect_env, wait_http

        home = (self.config.home / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)
        port = self.config.prefect_port
        env = prefect_env(home=home)
        env.pop("PREFECT_API_URL", None)
        env.update(
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_API_DATABASE_CONNECTION_URL=self.database_url(),
            PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS=str(self.config.concurrency_slot_wait_seconds),
        )
        process = self.supervisor.spawn(
            "prefect-server", [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env
        )
        self.api_url = f"http://127.0.0.1:{port}/api"
        try:
            wait_http(f"{self.api_url}/health", timeout=180, process=process)
        except (RuntimeError, TimeoutError) as exc:
            raise StackError(f"the Prefect server did not start: {exc}; see {self.config.log_dir / 'prefect-server.log'}") from None

    def stop_prefect_server(self, kill: bool = False) -> None:
        """Stop the Prefect server (an outage: the bridge holds messages until it is back)."""
        self.supervisor.stop("prefect-server", kill=kill, timeout=30)

    def _wait_worker_online(self, timeout: float = 120.0, name: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervisor.check()
            if self.prefect.worker_online(name):
                return
            time.sleep(0.5)
        raise StackError(f"the worker did not come online within {timeout:.0f} s; see {self.config.log_dir / 'worker.log'}")
