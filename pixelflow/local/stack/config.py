"""Where and how the local stack runs: :class:`StackConfig`, the names of its deployment and work
pool, its default ports, and :class:`StackError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

#: Work pool, flow and deployment of the ``local`` block of prefect.yaml.
WORK_POOL = "pixelflow-local"
FLOW_NAME = "transcode"
DEPLOYMENT_NAME = "local"

DEFAULT_MOTO_PORT = 5000
DEFAULT_PREFECT_PORT = 4200
DEFAULT_API_PORT = 8000
PROJECT_DIR = Path(__file__).resolve().parents[3]

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
        api_port: Port of the HTTP API (``pixelflow api``: uploads, assets, the upload page);
            ``None`` (the default here; ``pixelflow stack up`` uses 8000) starts none. Its token is ``PIXELFLOW_API_TOKENS`` of ``env`` if set, else
            one generated once and kept in ``<home>/api-token``.
        database: The Prefect server's database: ``sqlite`` (embedded, nothing to install) or
            ``postgres`` (a local PostgreSQL server, :mod:`pixelflow.local.postgres`, its cluster
            in ``<home>/postgres``; what a stack under load should use).
        postgres_port: Loopback port of that PostgreSQL server; a free one when ``None``.
        warm_start: Start flow runs from a process that has already imported Prefect and the
            flow (:mod:`pixelflow.local.flow_starter`) instead of a new Python process each.
    """

    home: Path = field(default_factory=lambda: Path(".pixelflow").resolve())
    project_dir: Path = PROJECT_DIR
    moto_port: int = DEFAULT_MOTO_PORT
    prefect_port: int = DEFAULT_PREFECT_PORT
    aws_endpoint: str | None = None
    worker_query_seconds: float = 0.5
    env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    heartbeat_seconds: int = 30
    automations: bool = True
    concurrency_slot_wait_seconds: float = 10.0
    supervise: bool = True
    reconcile_after_seconds: float | None = 120.0
    api_port: int | None = None
    database: Literal["sqlite", "postgres"] = "sqlite"
    postgres_port: int | None = None
    warm_start: bool = True

    @property
    def starter_socket(self) -> str:
        """The flow starter's socket: a name in Linux's abstract namespace, one per stack home."""
        import hashlib

        return "@pixelflow-flow-starter-" + hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"
