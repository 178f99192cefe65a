"""The transcoder image, built for real from transcoder_image/Dockerfile with buildah (no Docker
engine, no registry: the debian:bookworm-slim base is bootstrapped from Debian's mirror once and
kept in local storage), then run the way the ECS worker runs it.

The container shares the host's network, so the flow run inside it talks to the session's
Prefect server and moto S3 on loopback. It is started like an ECS task: the image's entrypoint,
the command ``prefect flow-run execute`` and the environment the worker passes
(``PREFECT__FLOW_RUN_ID``, ``PREFECT_API_URL`` and the deployment's ``env`` job variables);
AWS credentials stand in for the task role.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, make_clip
from tests.deploy_helpers import create_ecs_pool, deploy_ecs

pytestmark = [pytest.mark.image, pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/pixelflow-transcoder:test"
BUILD_LOG = ARTIFACTS / "image-build.log"


def _buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def transcoder_image(request) -> str:
    """Build the image with transcoder_image/build.sh (cached layers make rebuilds fast).

    The session's moto and Prefect servers start while the image builds.
    """
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install buildah)")
    if os.geteuid() != 0:
        pytest.skip("building with buildah's chroot isolation and bootstrapping the base needs root")
    if not (shutil.which("mmdebstrap") or shutil.which("debootstrap")):
        base = subprocess.run(["buildah", "inspect", "--type", "image", "docker.io/library/debian:bookworm-slim"],
                              capture_output=True)
        if base.returncode != 0:
            pytest.skip("no debian:bookworm-slim in local storage and neither mmdebstrap nor debootstrap")
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(BUILD_LOG, "w") as log:
        build = subprocess.Popen(
            [str(ROOT / "transcoder_image" / "build.sh"), "--engine", "buildah", "--bootstrap-base", "--tag", IMAGE],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            request.getfixturevalue("moto_server")
            request.getfixturevalue("prefect_server")
            returncode = build.wait(timeout=1200)
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
    output = BUILD_LOG.read_text()
    assert returncode == 0, output[-4000:]
    print(f"image built (servers started alongside) in {time.monotonic() - started:.0f} s")
    return IMAGE


def image_config(image: str) -> dict:
    inspected = json.loads(_buildah("inspect", "--type", "image", image))
    return inspected["OCIv1"]["config"]


class Container:
    """A working container of the image, removed on exit."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.config = image_config(image)
        self.name = f"pixelflow-test-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "Container":
        _buildah("from", "--pull-never", "--name", self.name, self.image)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True)

    def run(self, command: list[str], env: dict[str, str] | None = None, timeout: float = 120,
            log: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``command`` behind the image's entrypoint, as the image's user, on the host network."""
        args = ["buildah", "run", "--isolation", "chroot"]
        for name, value in (env or {}).items():
            args += ["--env", f"{name}={value}"]
        # tini is PID 1 on ECS; without a PID namespace it registers as subreaper instead.
        args += ["--env", "TINI_SUBREAPER=1", self.name, "--", *self.config["Entrypoint"], *command]
        if log is None:
            return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        with open(log, "w") as handle:
            return subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, text=True, timeout=timeout)


PROBE = r"""
import importlib.util, json, os, shutil, subprocess, tempfile
from importlib import metadata
import pixelflow, flows.transcode
ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
with tempfile.NamedTemporaryFile(dir=os.environ["PIXELFLOW_SCRATCH_DIR"]) as f:
    scratch_writable = True
print(json.dumps({
    "uid": os.getuid(),
    "cwd": os.getcwd(),
    "ffmpeg": ffmpeg,
    "ffmpeg_path": shutil.which("ffmpeg"),
    "pixelflow": pixelflow.__file__,
    "versions": {d: metadata.version(d) for d in ("prefect", "prefect-aws", "boto3", "fastapi", "pydantic")},
    "dev_tools": [m for m in ("pytest", "moto", "playwright", "cfnlint") if importlib.util.find_spec(m)],
    "uv": shutil.which("uv"),
    "scratch_writable": scratch_writable,
    "secrets": os.path.exists("/run/secrets/ca_bundle"),
    "aws_files": [p for p in ("/root/.aws", os.path.expanduser("~/.aws")) if os.path.exists(p)],
}))
"""


def test_image_is_a_locked_runtime(transcoder_image):
    config = image_config(transcoder_image)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["prefect", "flow-run", "execute"]
    assert config["WorkingDir"] == "/opt/pixelflow"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PIXELFLOW_PROJECT_DIR"] == "/opt/pixelflow"
    assert env["PIXELFLOW_SCRATCH_DIR"] == "/scratch"
    assert not any(name.startswith(("AWS_", "PREFECT_API")) for name in env)

    with Container(transcoder_image) as container:
        result = container.run(["python3", "-c", PROBE])
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["uid"] == 10001
    assert facts["cwd"] == "/opt/pixelflow"
    assert facts["ffmpeg_path"] == "/usr/bin/ffmpeg" and "deb12u" in facts["ffmpeg"], facts["ffmpeg"]
    assert facts["pixelflow"] == "/opt/pixelflow/pixelflow/__init__.py"
    # Exactly the locked versions this checkout runs (uv.lock), without the dev group.
    assert facts["versions"] == {name: metadata.version(name) for name in facts["versions"]}
    assert facts["dev_tools"] == []
    assert facts["uv"] is None
    assert facts["scratch_writable"] is True
    assert facts["secrets"] is False and facts["aws_files"] == []


def test_flow_run_executes_inside_the_image(transcoder_image, moto_server, prefect_server, buckets, media_dir,
                                            tmp_path):
    """A real ``transcode`` run in the image publishes the asset; a second run in a fresh container
    (a retry after a crash before publishing) reuses the renditions through the S3 result storage."""
    import boto3
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect_aws import AwsCredentials, S3Bucket

    from pixelflow.core.ids import asset_id

    upload, output = buckets
    s3 = boto3.client("s3", region_name="us-east-1")
    results = f"res-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=results)
    # What docs/aws.md has deployers create: S3 result storage, credentials from the task role.
    S3Bucket(bucket_name=results, bucket_folder="results", credentials=AwsCredentials()).save(
        "pixelflow-results", overwrite=True)

    clip = make_clip(media_dir / "image-clip.mp4", seconds=2, size="640x360")
    key = "uploads/cat clip (1).mp4"
    s3.upload_file(str(clip), upload, key)
    etag = s3.head_object(Bucket=upload, Key=key)["ETag"]
    asset = asset_id(upload, key, etag)

    pool = create_ecs_pool()
    deployment_id = deploy_ecs(tmp_path, pool, transcoder_image, {
        "PIXELFLOW_UPLOAD_BUCKET": upload,
        "PIXELFLOW_OUTPUT_BUCKET": output,
        "PIXELFLOW_ECS_CLUSTER": "pixelflow",
        "PIXELFLOW_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/pixelflow-task",
        "PIXELFLOW_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/pixelflow-execution",
        "PIXELFLOW_VPC_ID": "vpc-0123456789abcdef0",
        "PIXELFLOW_SUBNET_A": "subnet-0123456789abcdef0",
        "PIXELFLOW_SUBNET_B": "subnet-0123456789abcdef1",
        "PIXELFLOW_TASK_SECURITY_GROUP": "sg-0123456789abcdef0",
    })
    with get_client(sync_client=True) as client:
        job_env = client.read_deployment(deployment_id).job_variables["env"]

    def execute(container: Container, name: str):
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(
                deployment_id, parameters={"bucket": upload, "key": key, "etag": etag})
        env = {
            **job_env,
            "PREFECT__FLOW_RUN_ID": str(flow_run.id),
            "PREFECT_API_URL": prefect_server,
            "PREFECT_LOGGING_COLORS": "false",
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PIXELFLOW_LADDER": "360",
        }
        log = ARTIFACTS / f"image-{name}.log"
        result = container.run(list(container.config["Cmd"]), env=env, timeout=600, log=log)
        output_text = log.read_text()
        assert result.returncode == 0, output_text[-4000:]
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run.id)
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        assert run.state.is_completed(), (run.state, output_text[-4000:])
        return output_text, sorted(t.name for t in task_runs)

    manifest_key = f"assets/{asset}/manifest.json"
    with Container(transcoder_image) as container:
        _, first_tasks = execute(container, "first-run")
    manifest = json.loads(s3.get_object(Bucket=output, Key=manifest_key)["Body"].read())
    assert manifest["asset_id"] == asset and manifest["status"] == "ready"
    assert [r["name"] for r in manifest["renditions"]] == ["360p"]
    for relative in ("master.m3u8", manifest["renditions"][0]["playlist"], manifest["audio"]["playlist"],
                     manifest["poster"]):
        s3.head_object(Bucket=output, Key=f"assets/{asset}/{relative}")
    assert any(name.startswith("transcode-360p") for name in first_tasks), first_tasks
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=results).get("Contents", [])]
    assert any(f"pixelflow-rendition-{asset}-360p" in k for k in stored), stored

    # The asset was not published (e.g. the task was stopped): a new container picks it up and
    # finds both renditions in the S3 result storage instead of encoding them again.
    s3.delete_object(Bucket=output, Key=manifest_key)
    with Container(transcoder_image) as container:
        second_log, second_tasks = execute(container, "retry-run")
    assert "renditions already published by an earlier attempt: 360p, audio" in second_log
    assert not [name for name in second_tasks if name.startswith(("transcode", "decode", "encode-ladder"))], second_tasks
    again = json.loads(s3.get_object(Bucket=output, Key=manifest_key)["Body"].read())
    assert again["renditions"] == manifest["renditions"]
