"""The production path against local endpoints: the ECS work pool from its base job template,
the network the CloudFormation stack would provide, and prefect.yaml's ``ecs`` deployment
registered with the real ``prefect deploy`` CLI, all against moto's server and a local Prefect
server. Used by the ECS tests and by ``python -m bench.latency --modes ecs``.

The image build and push steps of the ``ecs`` deployment need Docker and a registry; the
deployment is registered from a copy of prefect.yaml without them, with the image given
directly.
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

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"
BASE_JOB_TEMPLATE = ROOT / "deployments" / "ecs" / "base-job-template.json"
ACCOUNT = "123456789012"
#: An image reference shaped like the one the build step tags (nothing pulls it here).
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pixelflow-transcoder:2026-01-01t00-00-00-000000-00-00"


def prefect_project() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(PREFECT_YAML.read_text())


def deployment_config(name: str, entrypoint: str | None = None) -> dict[str, Any]:
    """The (first) deployment ``name`` of prefect.yaml (the ``transcode`` one), or the one of
    ``entrypoint`` (``flows/chunk.py:transcode_chunk``)."""
    for deployment in prefect_project()["deployments"]:
        if deployment["name"] == name and entrypoint in (None, deployment["entrypoint"]):
            return deployment
    raise KeyError(name)


def base_job_template() -> dict[str, Any]:
    return json.loads(BASE_JOB_TEMPLATE.read_text())


def ecs_network(region: str = "us-east-1") -> dict[str, Any]:
    """What the CloudFormation stack provides: a cluster, a VPC with two subnets, a security
    group and the worker's task-events queue (on the endpoint of ``AWS_ENDPOINT_URL``)."""
    import boto3

    suffix = uuid.uuid4().hex[:8]
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # as in the stack
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for cidr, zone in (("10.42.0.0/20", f"{region}a"), ("10.42.16.0/20", f"{region}b"))
    ]
    group = ec2.create_security_group(GroupName=f"pixelflow-{suffix}", Description="tasks", VpcId=vpc)["GroupId"]
    cluster = f"pixelflow-{suffix}"
    boto3.client("ecs", region_name=region).create_cluster(clusterName=cluster)
    events_queue = f"pixelflow-{suffix}-ecs-task-events"
    boto3.client("sqs", region_name=region).create_queue(QueueName=events_queue)
    return {"vpc": vpc, "subnets": subnets, "group": group, "cluster": cluster, "events_queue": events_queue}


def deploy_env(network: dict[str, Any], **pixelflow: str) -> dict[str, str]:
    """The ``PIXELFLOW_*`` values ``prefect deploy --name ecs`` reads, for ``network``."""
    return {
        "PIXELFLOW_ECS_CLUSTER": network["cluster"],
        "PIXELFLOW_TASK_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/pixelflow-task",
        "PIXELFLOW_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/pixelflow-execution",
        "PIXELFLOW_VPC_ID": network["vpc"],
        "PIXELFLOW_SUBNET_A": network["subnets"][0],
        "PIXELFLOW_SUBNET_B": network["subnets"][1],
        "PIXELFLOW_TASK_SECURITY_GROUP": network["group"],
        **pixelflow,
    }


def create_ecs_pool(name: str | None = None) -> str:
    """Create an ECS work pool from deployments/ecs/base-job-template.json on the current server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = name or f"pixelflow-ecs-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="ecs", base_job_template=base_job_template()))
    return name


def deploy_ecs(work_dir: Path, pool: str, image: str, env: dict[str, str], triggers: bool = False,
               chunks: bool = False) -> str:
    """Register prefect.yaml's ``ecs`` transcode deployment with ``prefect deploy`` and return its id.

    Args:
        work_dir: Where the derived prefect file goes.
        pool: The work pool to deploy to (overrides ``pixelflow-ecs``).
        image: The image job variable (what the build step would have produced).
        env: The ``PIXELFLOW_*`` values the deployment reads from the environment at deploy time.
        triggers: Keep its upload trigger enabled (otherwise events posted by others start no
            runs of it).
        chunks: Register the ``transcode-chunk/ecs`` deployment too (each chunk of a long
            source in its own task).

    Raises:
        RuntimeError: When ``prefect deploy`` fails.
    """
    import yaml

    project = prefect_project()
    deployments = []
    for entrypoint in ["flows/transcode.py:transcode"] + (["flows/chunk.py:transcode_chunk"] if chunks else []):
        ecs = copy.deepcopy(deployment_config("ecs", entrypoint))
        ecs.pop("build", None)
        ecs.pop("push", None)
        ecs["work_pool"]["name"] = pool  # `--pool` applies to one deployment only
        ecs["work_pool"]["job_variables"]["image"] = image
        for trigger in ecs.get("triggers", []):
            trigger["enabled"] = triggers
        deployments.append(ecs)
    derived = {key: value for key, value in project.items() if key not in ("deployments", "build", "push")}
    derived["deployments"] = deployments
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
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout}\n{result.stderr}")

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("transcode/ecs")
    if deployment.work_pool_name != pool:
        raise RuntimeError(f"transcode/ecs is on pool {deployment.work_pool_name}, not {pool}")
    return str(deployment.id)
