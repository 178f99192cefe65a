"""A newcomer's first commands, run the way a newcomer runs them: ``pixelflow transcode`` in a
fresh environment without ``PREFECT_API_URL``, with no bytecode cached for Python to reuse, and
the upload commands the local stack prints, with nothing but what ``./dev.sh`` installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.stack.services import Stack, StackConfig
from tests.conftest import make_clip
from tests.player_helpers import fresh_buckets, upload

pytestmark = pytest.mark.integration

PIXELFLOW = Path(sys.executable).with_name("pixelflow")


@pytest.mark.prefect  # it starts its own Prefect server
@pytest.mark.timeout(900)
def test_transcode_without_a_prefect_api_starts_its_own_server(moto_server, media_dir, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
        clip = make_clip(media_dir / "first-contact-360p.mp4", seconds=2, size="640x360")
        asset, _ = upload(settings, clip, "videos/first.mp4")
        child = {name: value for name, value in os.environ.items()
                 if not name.startswith(("PREFECT_API_", "PREFECT_HOME", "PYTEST_"))}
    pycache = tmp_path / "pycache"
    pycache.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),   # no profile, no database, nothing from earlier runs
        PYTHONDONTWRITEBYTECODE="1",                   # and no bytecode: every module compiles at import,
        PYTHONPYCACHEPREFIX=str(pycache),              # the server's too, as in a fresh container
        HOME=str(tmp_path),
        TMPDIR=str(scratch),
    )
    assert "PREFECT_API_URL" not in child

    done = subprocess.run([str(PIXELFLOW), "transcode", f"s3://{settings.upload_bucket}/videos/first.mp4", "--json"],
                          env=child, cwd=tmp_path, capture_output=True, text=True, timeout=840)

    assert done.returncode == 0, done.stderr[-4000:]
    assert "starting a Prefect server" in done.stderr
    for symptom in ("Timed out while attempting to connect to ephemeral Prefect API server", "database is locked"):
        assert symptom not in done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["status"] == "ready" and manifest["asset_id"] == asset
    assert [r["name"] for r in manifest["renditions"]] == ["360p"]
    published = s3_client().get_object(Bucket=settings.output_bucket, Key=f"{settings.asset_prefix}{asset}/manifest.json")
    assert json.loads(published["Body"].read())["status"] == "ready"
    assert not list(pycache.rglob("*.pyc")), "bytecode was written: the environment was not kept fresh"
    # The server's temporary home (its SQLite database, its log) went away with it.
    assert not list(scratch.glob("pixelflow-prefect-*"))


def test_the_stacks_upload_hint_works_with_what_dev_sh_installed(moto_server, media_dir, tmp_path):
    with pytest.MonkeyPatch.context() as env:
        settings = fresh_buckets(env)
    stack = Stack(StackConfig(home=tmp_path / "stack", env={"PIXELFLOW_UPLOAD_BUCKET": settings.upload_bucket,
                                                            "PIXELFLOW_OUTPUT_BUCKET": settings.output_bucket}))
    stack.aws_endpoint, stack.api_url = moto_server, "http://127.0.0.1:4200/api"
    hint = stack.uploads.how_to_upload()
    assert "aws " not in hint  # the AWS CLI is not installed by ./dev.sh
    upload_line = next(line for line in hint.splitlines() if " upload my-video.mp4" in line)
    assert "--wait" in upload_line

    # The printed lines, in a shell with nothing else set up; `--wait` left out, as no worker runs here.
    clip = make_clip(media_dir / "hint-360p.mp4", seconds=1, size="640x360")
    script = hint.replace(" --wait", "").replace("my-video.mp4", str(clip))
    done = subprocess.run(["bash", "-euc", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = s3_client().list_objects_v2(Bucket=settings.upload_bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == [clip.name]
    uploaded, listing = done.stdout.split("\nASSET ", 1)  # `pixelflow upload`'s lines, then `pixelflow ls`'s table
    asset = uploaded.split("\nasset", 1)[1].split()[0]
    assert [line.split()[:2] for line in listing.splitlines()[1:]] == [[asset, "processing"]]
