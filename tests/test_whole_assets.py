"""An asset exists for clients only once it is whole, whatever Prefect's result store remembers.

The test session keeps one Prefect home (one result store) for every test, as a user's machine
does: a rendition that an earlier run published and persisted as a result must never stand in
for objects that are not in the bucket now (another S3 endpoint, objects deleted since), and no
``manifest.json`` may ever name an object that is missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import boto3
import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ids import asset_id
from pixelflow.core.layout import AssetLayout, manifest_objects, missing_objects
from pixelflow.core.upload import Upload
from tests.conftest import make_clip
from tests.s3_fault_proxy import S3FaultProxy, Trigger

pytestmark = pytest.mark.integration

LADDER = "360,480"


@pytest.fixture(scope="module")
def clip(media_dir) -> Path:
    return make_clip(media_dir / "whole-480p.mp4", seconds=4, size="854x480")


@pytest.fixture
def small_ladder(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELFLOW_LADDER", LADDER)
    monkeypatch.setenv("PIXELFLOW_SCRATCH_DIR", str(tmp_path / "scratch"))


def task_runs(flow_run_id) -> dict[str, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    return by_name


def upload(s3, clip: Path, bucket: str, key: str) -> str:
    s3.upload_file(str(clip), bucket, key)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def listing(s3, bucket: str, layout: AssetLayout) -> dict[str, int]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=layout.prefix):
        for obj in page.get("Contents", []):
            found[layout.relative(obj["Key"])] = obj["Size"]
    return found


def assert_whole_and_playable(s3, bucket: str, layout: AssetLayout, dest: Path) -> dict:
    """Every object the manifest names is there with its size, nothing else is (what earlier
    attempts left was removed), and the master playlist decodes from the downloaded objects with
    no error, for the whole duration."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=layout.manifest_key)["Body"].read())
    found = listing(s3, bucket, layout)
    assert missing_objects(manifest_objects(manifest), found) == []
    assert set(found) == set(manifest_objects(manifest)) | {"manifest.json"}, sorted(set(found) - set(manifest_objects(manifest)))
    assert {r["name"] for r in manifest["renditions"]} == {"360p", "480p"} and manifest["audio"]
    for relative in found:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, layout.key(relative), str(target))
    for playlist in ["master.m3u8"] + [r["playlist"] for r in manifest["renditions"]]:
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(dest / playlist), "-f", "null", "-"],
                                 capture_output=True, text=True, timeout=120)
        assert decoded.returncode == 0 and decoded.stderr.strip() == "", (playlist, decoded.stderr)
    return manifest


def test_one_prefect_home_across_two_s3_endpoints_publishes_a_whole_asset_each_time(
        prefect_server, moto_server, buckets, clip, small_ladder, monkeypatch, tmp_path, session_dir):
    from flows.transcode import transcode
    from pixelflow.local.processes import start_moto

    up, out = buckets
    first = transcode(bucket=up, key="talk.mp4", etag=upload(s3_client(), clip, up, "talk.mp4"))
    layout = AssetLayout.of(first["asset_id"])

    # The same upload (same bytes, same bucket and key: the same asset id) on a new S3 endpoint
    # with empty buckets, the Prefect home and its persisted results unchanged.
    other = start_moto(log_dir=session_dir / "logs-second-moto")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", other.url)
        s3 = s3_client()
        s3.create_bucket(Bucket=up)
        s3.create_bucket(Bucket=out)
        etag = upload(s3, clip, up, "talk.mp4")
        state = transcode(bucket=up, key="talk.mp4", etag=etag, return_state=True)
        assert state.is_completed(), state.message
        assert state.result()["asset_id"] == first["asset_id"] == asset_id(up, "talk.mp4", etag)
        runs = task_runs(state.state_details.flow_run_id)
        # every rendition was encoded and uploaded again: nothing came from the first endpoint's results
        for name in ("upload-360p", "upload-480p", "upload-audio"):
            assert [r.state.name for r in runs[name]] == ["Completed"], name
        assert_whole_and_playable(s3, out, layout, tmp_path / "second")
    finally:
        other.stop()


def test_an_asset_whose_objects_were_all_deleted_is_published_whole_again(prefect_server, buckets, clip, small_ladder,
                                                                           tmp_path):
    from flows.transcode import transcode

    up, out = buckets
    s3 = s3_client()
    etag = upload(s3, clip, up, "deleted.mp4")
    first = transcode(bucket=up, key="deleted.mp4", etag=etag)
    layout = AssetLayout.of(first["asset_id"])
    keys = [{"Key": layout.key(relative)} for relative in listing(s3, out, layout)]
    s3.delete_objects(Bucket=out, Delete={"Objects": keys})
    assert listing(s3, out, layout) == {}

    # re-uploaded, same bytes: the same asset, found by a new event, a manual retry or the reconciler
    assert upload(s3, clip, up, "deleted.mp4") == etag
    state = transcode(bucket=up, key="deleted.mp4", etag=etag, return_state=True)
    assert state.is_completed(), state.message
    assert "already published" not in (state.message or "")
    runs = task_runs(state.state_details.flow_run_id)
    assert all(runs[name][0].state.name == "Completed" for name in ("upload-360p", "upload-480p", "upload-audio"))
    assert_whole_and_playable(s3, out, layout, tmp_path / "again")


def test_a_broken_asset_is_reported_broken_and_a_rerun_repairs_it(prefect_server, buckets, clip, small_ladder,
                                                                  tmp_path, capsys):
    from flows.transcode import transcode
    from pixelflow.ops import assets
    from pixelflow.cli import main
    from pixelflow.settings import PixelFlowSettings

    up, out = buckets
    s3 = s3_client()
    etag = upload(s3, clip, up, "broken.mp4")
    first = transcode(bucket=up, key="broken.mp4", etag=etag)
    layout = AssetLayout.of(first["asset_id"])
    gone = f"{first['folder']}/480p/seg_00000.m4s"
    s3.delete_object(Bucket=out, Key=layout.key(gone))  # an operator's or a lifecycle rule's doing

    info = assets.get_asset(first["asset_id"], PixelFlowSettings(), s3)
    assert info.status == assets.BROKEN
    assert info.error["code"] == "asset_incomplete" and info.error["missing"] == [gone]
    assert main(["status", first["asset_id"], "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "broken" and printed["error"]["code"] == "asset_incomplete"
    assert [a.status for a in assets.list_assets(PixelFlowSettings(), s3) if a.asset_id == first["asset_id"]] == ["broken"]

    state = transcode(bucket=up, key="broken.mp4", etag=etag, return_state=True)
    assert state.is_completed(), state.message
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["upload-480p"][0].state.name == "Completed"  # redone: its objects were not all there
    assert runs["upload-360p"][0].state.name == "Cached"     # whole: taken from the first run
    assert_whole_and_playable(s3, out, layout, tmp_path / "repaired")
    assert assets.get_asset(first["asset_id"], PixelFlowSettings(), s3).status == assets.READY
    assert main(["status", first["asset_id"]]) == 0


def test_a_manifest_naming_a_missing_segment_is_never_written(prefect_server, moto_server, buckets, clip, small_ladder,
                                                              monkeypatch, tmp_path):
    """A segment deleted after its rendition was uploaded, while the run publishes: the manifest
    is not written over the gap; the rendition is encoded and uploaded again, then published."""
    from flows.transcode import transcode

    up, out = buckets
    direct = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    direct.put_bucket_versioning(Bucket=out, VersioningConfiguration={"Status": "Enabled"})
    etag = upload(direct, clip, up, "vanishing.mp4")
    layout = AssetLayout.of(asset_id(up, "vanishing.mp4", etag))
    proxy = S3FaultProxy(moto_server).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # right after the run writes the poster (publish-asset's first step, before the manifest),
        # another actor deletes a published segment
        def delete_segment():
            (key,) = [o["Key"] for o in direct.list_objects_v2(Bucket=out, Prefix=layout.prefix)["Contents"]
                      if o["Key"].endswith("/360p/seg_00000.m4s")]
            direct.delete_object(Bucket=out, Key=key)

        gone = proxy.on(Trigger("PUT", f"/{out}/{layout.prefix}[^/]+/poster\\.jpg$", delete_segment))
        state = transcode(bucket=up, key="vanishing.mp4", etag=etag, return_state=True)
    finally:
        proxy.stop()
    assert gone.fired == 1
    assert state.is_completed(), state.message
    runs = task_runs(state.state_details.flow_run_id)
    assert len(runs["publish-asset"]) == 2 and runs["publish-asset"][0].state.is_failed() != runs["publish-asset"][1].state.is_failed()
    assert len(runs["transcode-360p"]) == 2 and len(runs["upload-360p"]) == 2  # redone alone
    assert len(runs["transcode-480p"]) == 1
    # every version of manifest.json ever written names only objects that exist
    versions = direct.list_object_versions(Bucket=out, Prefix=layout.manifest_key).get("Versions", [])
    assert len(versions) == 1
    manifest = json.loads(direct.get_object(Bucket=out, Key=layout.manifest_key, VersionId=versions[0]["VersionId"])["Body"].read())
    assert missing_objects(manifest_objects(manifest), listing(direct, out, layout)) == []
    assert_whole_and_playable(direct, out, layout, tmp_path / "published")


def test_an_upload_overwritten_while_it_is_read_publishes_nothing_under_its_id(prefect_server, moto_server, buckets,
                                                                               media_dir, small_ladder, monkeypatch):
    """The object is replaced right after the run's HEAD: the download, pinned to the ETag the
    HEAD saw, is refused; the run ends superseded and the first upload's asset id gets nothing
    of the second upload's bytes."""
    from flows.transcode import transcode

    up, out = buckets
    first, second = (make_clip(media_dir / f"overwritten-{n}.mp4", seconds=2, size="640x360", rate=str(r))
                     for n, r in (("a", 30), ("b", 25)))
    direct = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    etag = upload(direct, first, up, "overwritten.mp4")
    proxy = S3FaultProxy(moto_server).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        replaced = proxy.on(Trigger("HEAD", f"/{up}/overwritten\\.mp4$",
                                    lambda: direct.upload_file(str(second), up, "overwritten.mp4")))
        state = transcode(bucket=up, key="overwritten.mp4", etag=etag, return_state=True)
    finally:
        proxy.stop()
    assert replaced.fired == 1
    assert state.is_completed() and "overwritten while it was being read" in state.message, state.message
    assert direct.list_objects_v2(Bucket=out).get("KeyCount", 0) == 0
    runs = task_runs(state.state_details.flow_run_id)
    assert [r.run_count for r in runs["download"]] == [1]  # refused once, not retried


def test_a_source_is_read_in_parallel_parts_byte_for_byte(prefect_server, buckets, tmp_path):
    """Parts of 1 MiB, read in parallel and written at their offsets, give the object back exactly."""
    import os

    from pixelflow.core.upload import Upload
    from tasks.source import download_source

    up, _ = buckets
    data = os.urandom(3 * 1024 * 1024 + 12345)
    s3 = s3_client()
    s3.put_object(Bucket=up, Key="parts.bin", Body=data)
    source = Upload.from_head(up, "parts.bin", s3.head_object(Bucket=up, Key="parts.bin"))
    path = download_source(source, tmp_path / "dl" / "source", headroom=1.0, chunk_mb=1, concurrency=3)
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["source"]  # no partial file left


@pytest.mark.parametrize("planted", [b"x" * (5 * 1024 * 1024), b"not json", b'["a list"]'])
def test_a_planted_rejection_record_is_never_read_whole_nor_taken_for_a_rejection(moto_server, buckets, planted):
    """A huge, non-JSON or non-object error.json where the records are (whoever wrote it: the
    records are in the output bucket, where uploaders cannot write) is not read whole and does
    not make the upload rejected."""
    from pixelflow.ops import assets
    from pixelflow.settings import PixelFlowSettings

    up, out = buckets
    s3 = s3_client()
    s3.put_object(Bucket=up, Key="planted.mp4", Body=b"video bytes")
    upload = Upload.from_head(up, "planted.mp4", s3.head_object(Bucket=up, Key="planted.mp4"))
    settings = PixelFlowSettings()
    s3.put_object(Bucket=out, Key=settings.layout(upload.asset_id).error_key, Body=planted)
    assert assets.published_or_rejected(upload.asset_id, settings, s3) is None
    assert assets.get_asset(upload.asset_id, settings, s3).status == assets.PROCESSING


def test_an_asset_whose_master_playlist_is_missing_gets_it_back_from_its_manifest(prefect_server, buckets, clip,
                                                                                 small_ladder):
    """A run stopped between writing the manifest and the master playlist: the asset is broken
    until the next run of its upload writes the master playlist from the manifest, the same
    bytes, with nothing encoded again."""
    from flows.transcode import transcode
    from pixelflow.core.manifest import master_from_manifest
    from pixelflow.ops import assets
    from pixelflow.settings import PixelFlowSettings

    up, out = buckets
    s3 = s3_client()
    etag = upload(s3, clip, up, "no-master.mp4")
    first = transcode(bucket=up, key="no-master.mp4", etag=etag)
    layout = AssetLayout.of(first["asset_id"])
    written = s3.get_object(Bucket=out, Key=layout.master_key)["Body"].read()
    assert written.decode() == master_from_manifest(first)
    s3.delete_object(Bucket=out, Key=layout.master_key)
    info = assets.get_asset(first["asset_id"], PixelFlowSettings(), s3)
    assert info.status == assets.BROKEN and info.error["missing"] == ["master.m3u8"]

    state = transcode(bucket=up, key="no-master.mp4", etag=etag, return_state=True)
    assert state.is_completed() and "already published" in state.message, state.message
    assert s3.get_object(Bucket=out, Key=layout.master_key)["Body"].read() == written
    runs = task_runs(state.state_details.flow_run_id)
    assert [r.state.name for r in runs["restore-master"]] == ["Completed"]
    assert not [name for name in runs if name.startswith(("transcode", "encode-ladder", "upload", "download"))], runs
    assert assets.get_asset(first["asset_id"], PixelFlowSettings(), s3).status == assets.READY
