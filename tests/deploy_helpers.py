"""Helpers for the production-path tests: the ECS work pool from its base job template and the
``ecs`` deployment of prefect.yaml, registered with the real ``prefect deploy`` CLI.

The image build and push steps of the ``ecs`` deployment need Docker and a registry; the tests
register the deployment from a copy of prefect.yaml without them, with the image given directly
and the upload trigger disabled (so events posted by other tests start no runs of it).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "prefect.yaml"
BASE_JOB_TEMPLATE = ROOT / "deployments" / "ecs" / "base-job-template.json"


def prefect_project() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def deployment_config(name: str) -> dict[str, Any]:
    """The deployment ``name`` of prefect.yaml."""
    for deployment in prefect_project()["deployments"]:
        if deployment["name"] == name:
            return deployment
    raise KeyError(name)


def base_job_template() -> dict[str, Any]:
    return json.loads(BASE_JOB_TEMPLATE.read_text())


def create_ecs_pool(name: str | None = None) -> str:
    """Create an ECS work pool from deployments/ecs/base-job-template.json on the current server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = name or f"pixelflow-ecs-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="ecs", base_job_template=base_job_template()))
    return name


def deploy_ecs(work_dir: Path, pool: str, image: str, env: dict[str, str]) -> str:
    """Register prefect.yaml's ``ecs`` deployment with ``prefect deploy`` and return its id.

    Args:
        work_dir: Where the derived prefect file and the CLI's home go.
        pool: The work pool to deploy to (overrides ``pixelflow-ecs``).
        image: The image job variable (what the build step would have produced).
        env: The ``PIXELFLOW_*`` values the deployment reads from the environment at deploy time.
    """
    project = prefect_project()
    ecs = copy.deepcopy(deployment_config("ecs"))
    ecs.pop("build", None)
    ecs.pop("push", None)
    ecs["work_pool"]["job_variables"]["image"] = image
    for trigger in ecs.get("triggers", []):
        trigger["enabled"] = False
    derived = {key: value for key, value in project.items() if key not in ("deployments", "build", "push")}
    derived["deployments"] = [ecs]
    prefect_file = work_dir / "prefect-ecs.yaml"
    prefect_file.write_text(yaml.safe_dump(derived, sort_keys=False))

    run_env = dict(os.environ)
    run_env.update(env)
    run_env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    prefect = Path(sys.executable).with_name("prefect")
    result = subprocess.run(
        [str(prefect), "deploy", "--no-prompt", "--prefect-file", str(prefect_file), "--name", "ecs", "--pool", pool],
        cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, f"prefect deploy failed:\n{result.stdout}\n{result.stderr}"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("transcode/ecs")
    assert deployment.work_pool_name == pool
    return str(deployment.id)
