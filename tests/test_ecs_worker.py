"""The production work pool: prefect.yaml's ``ecs`` deployment on a pool built from
deployments/ecs/base-job-template.json, and a real ``prefect worker start --type ecs`` process
submitting its flow run to ECS (moto's ECS, EC2 and SQS over HTTP).

moto's ECS records task definitions and tasks but runs no containers, so the assertions read
back what the worker registered and started: image, size, command, environment, roles, logs
and network configuration. That the image runs a flow is tested in test_image.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixelflow.local.ecs import ACCOUNT, IMAGE, deploy_env
from tests.deploy_helpers import base_job_template, create_ecs_pool, deploy_ecs, deployment_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_ecs_deployment_matches_the_local_one():
    """Both deployments start the same flow from the same event; ``ecs`` builds the image."""
    local, ecs = deployment_config("local"), deployment_config("ecs")
    assert ecs["entrypoint"] == local["entrypoint"] == "flows/transcode.py:transcode"

    def trigger(deployment):
        (only,) = deployment["triggers"]
        return {key: value for key, value in only.items() if key not in ("name", "description")}

    assert trigger(ecs) == trigger(local)
    assert trigger(ecs)["expect"] == ["pixelflow.upload.created"]
    assert set(trigger(ecs)["parameters"]) == {"bucket", "key", "etag", "version_id"}

    (build,) = ecs["build"]
    step = build["prefect_docker.deployments.steps.build_docker_image"]
    assert step["dockerfile"] == "transcoder_image/Dockerfile"
    assert (Path(__file__).resolve().parents[1] / step["dockerfile"]).is_file()
    (push,) = ecs["push"]
    assert push["prefect_docker.deployments.steps.push_docker_image"]["tag"] == "{{ " + step["id"] + ".tag }}"
    assert ecs["work_pool"]["job_variables"]["image"] == "{{ " + step["id"] + ".image }}"
    assert ecs["concurrency_limit"]["collision_strategy"] == "ENQUEUE"


def test_base_job_template_sizes_tasks_for_4k():
    variables = base_job_template()["variables"]["properties"]
    assert variables["cpu"]["default"] == 4096
    assert variables["memory"]["default"] == 16384
    assert variables["ephemeral_storage_gib"]["default"] == 100
    assert variables["launch_type"]["default"] == "FARGATE"
    assert variables["configure_cloudwatch_logs"]["default"] is True
    assert variables["cloudwatch_logs_options"]["default"]["awslogs-group"] == "/pixelflow"


@pytest.fixture
def ecs_network(moto_server):
    """What the CloudFormation stack provides: a cluster, a VPC with two subnets, a security
    group and the worker's task-events queue."""
    from pixelflow.local.ecs import ecs_network as network

    return network()


def test_ecs_worker_starts_the_transcode_task(moto_server, prefect_server, ecs_network, tmp_path):
    import boto3
    from prefect.client.orchestration import get_client

    pool = create_ecs_pool()
    env = deploy_env(ecs_network, PIXELFLOW_UPLOAD_BUCKET="pixelflow-uploads-test",
                     PIXELFLOW_OUTPUT_BUCKET="pixelflow-assets-test", PIXELFLOW_RECORDS_TABLE="pixelflow-records-test",
                     PIXELFLOW_WEBHOOK_QUEUE_NAME="pixelflow-webhooks-test.fifo")
    deployment_id = deploy_ecs(tmp_path, pool, IMAGE, env)
    parameters = {"bucket": "pixelflow-uploads-test", "key": "cats/cat video.mov", "etag": '"0123abcd"'}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == deployment_config("ecs")["concurrency_limit"]["limit"]
        flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)

    # The worker exactly as the stack runs it, polling once.
    worker_env = dict(os.environ)
    worker_env.update({
        "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": ecs_network["events_queue"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    log_path = tmp_path / "worker.log"
    prefect = Path(sys.executable).with_name("prefect")
    with open(log_path, "w") as log:
        worker = subprocess.run(
            [str(prefect), "worker", "start", "--type", "ecs", "--pool", pool, "--run-once", "--install-policy", "never"],
            env=worker_env, stdout=log, stderr=subprocess.STDOUT, timeout=180,
        )
    output = log_path.read_text()
    assert worker.returncode == 0, output
    assert "Failed to submit flow run" not in output, output

    ecs = boto3.client("ecs", region_name="us-east-1")
    ec2 = boto3.client("ec2", region_name="us-east-1")

    # The task (Fargate, in the stack's cluster), whose definition is the pool's.
    (task_arn,) = ecs.list_tasks(cluster=ecs_network["cluster"])["taskArns"]
    (task,) = ecs.describe_tasks(cluster=ecs_network["cluster"], tasks=[task_arn], include=["TAGS"])["tasks"]
    arn = task["taskDefinitionArn"]  # (other tests' revisions of the family share the region)

    # The task definition: the image, sized for 4K, logs to the stack's log group.
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert definition["family"] == "pixelflow-transcode"
    (container,) = definition["containerDefinitions"]
    assert container["image"] == IMAGE
    assert container["name"] == "transcoder"
    assert container["cpu"] == 4096 and container["memory"] == 16384
    assert definition["cpu"] == "4096" and definition["memory"] == "16384"
    assert definition["ephemeralStorage"] == {"sizeInGiB": 100}
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["networkMode"] == "awsvpc"
    assert definition["executionRoleArn"] == env["PIXELFLOW_EXECUTION_ROLE_ARN"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["logConfiguration"]["options"] == {
        "awslogs-group": "/pixelflow",
        "awslogs-stream-prefix": "transcode",
        "awslogs-create-group": "false",
        "awslogs-region": "us-east-1",
    }

    # The task: Fargate in the stack's cluster, the flow run's command and environment.
    assert task["launchType"] == "FARGATE"
    (override,) = task["overrides"]["containerOverrides"]
    assert override["name"] == "transcoder"
    assert override["command"] == ["prefect", "flow-run", "execute"]
    environment = {item["name"]: item["value"] for item in override["environment"]}
    assert environment["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert environment["PREFECT_API_URL"] == prefect_server
    assert environment["PIXELFLOW_UPLOAD_BUCKET"] == "pixelflow-uploads-test"
    assert environment["PIXELFLOW_OUTPUT_BUCKET"] == "pixelflow-assets-test"
    assert environment["PIXELFLOW_RECORDS_TABLE"] == "pixelflow-records-test"
    assert environment["PIXELFLOW_WEBHOOK_QUEUE_NAME"] == "pixelflow-webhooks-test.fifo"
    assert environment["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert environment["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/pixelflow-results"
    assert environment["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert not any(name.startswith("AWS_") for name in environment), "AWS credentials come from the task role"
    assert task["overrides"]["taskRoleArn"] == env["PIXELFLOW_TASK_ROLE_ARN"]
    tags = {tag["key"]: tag["value"] for tag in task.get("tags", [])}
    assert tags["prefect.io/flow-run-id"] == str(flow_run.id)

    # Network: one of the stack's subnets, its security group, through an ENI.
    (attachment,) = task["attachments"]
    details = {item["name"]: item["value"] for item in attachment["details"]}
    assert details["subnetId"] in ecs_network["subnets"]
    (eni,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[details["networkInterfaceId"]])["NetworkInterfaces"]
    assert [group["GroupId"] for group in eni["Groups"]] == [ecs_network["group"]]

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
    assert run.state.type.value in ("PENDING", "RUNNING"), run.state
    assert run.infrastructure_pid == f"{ecs_network['cluster']}::{task_arn}"
