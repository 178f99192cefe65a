"""The records store (DynamoDB on moto over HTTP) and its repair from S3: conditional writes keep
a deleted asset deleted, the flow's writes link an asset to its API upload, and the reconciler
corrects every record that disagrees with S3 (which stays the truth)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pixelflow.aws import dynamodb_client, s3_client
from pixelflow.core.upload import Upload
from pixelflow.ops.reconcile import Repair, repair_records
from pixelflow.records import ERRORED, PREPARING, READY, Records, record_asset_state
from tests.api_helpers import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(moto_server):
    return make_settings()


@pytest.fixture
def records(settings):
    return Records.from_settings(settings)


def _age(records: Records, asset_id: str, seconds: float) -> None:
    """Backdate the record's last write."""
    old = (datetime.now(timezone.utc) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    dynamodb_client().update_item(TableName=records.table, Key={"pk": {"S": f"asset#{asset_id}"}},
                                  UpdateExpression="SET updated_at = :t", ExpressionAttributeValues={":t": {"S": old}})


def _publish(settings, asset_id: str, *, missing: bool = False) -> None:
    """A published asset's objects and manifest (one rendition); with ``missing``, a segment it names is absent."""
    s3, layout = s3_client(), settings.layout(asset_id)
    files = {"360p/init.mp4": b"i" * 10, "360p/seg_00000.m4s": b"s" * 20, "360p/index.m3u8": b"#EXTM3U\n",
             "master.m3u8": b"#EXTM3U\n", "poster.jpg": b"\xff\xd8jpeg"}
    for name, body in files.items():
        if not (missing and name.endswith(".m4s")):
            s3.put_object(Bucket=settings.output_bucket, Key=layout.key(name), Body=body)
    rendition = [n for n in files if n.startswith("360p/")]
    manifest = {"asset_id": asset_id, "status": "ready", "created_at": "2026-11-30T10:00:00+00:00", "duration": 4.0,
                "renditions": [{"name": "360p", "width": 640, "height": 360, "bandwidth": 800000, "files": rendition,
                                "file_sizes": [len(files[n]) for n in rendition]}],
                "audio": None, "master_playlist": "master.m3u8", "poster": "poster.jpg",
                "object_sizes": {"master.m3u8": len(files["master.m3u8"]), "poster.jpg": len(files["poster.jpg"])},
                "source": {"bucket": settings.upload_bucket, "key": f"{asset_id}.mp4"}}
    s3.put_object(Bucket=settings.output_bucket, Key=layout.manifest_key, Body=json.dumps(manifest).encode())


def _reject(settings, asset_id: str, recorded_at: datetime) -> None:
    record = {"asset_id": asset_id, "code": "not_media", "message": "Not a video.", "status": "rejected",
              "recorded_at": recorded_at.isoformat(timespec="seconds")}
    s3_client().put_object(Bucket=settings.output_bucket, Key=settings.layout(asset_id).error_key,
                           Body=json.dumps(record).encode())


def test_a_deleted_asset_stays_deleted_and_api_writes_never_overwrite_the_flows(settings, records):
    upload = Upload(settings.upload_bucket, "videos/a.mp4", "e1")
    assert record_asset_state(settings, upload, READY, manifest={"duration": 2.0, "renditions": []})["status"] == READY
    # What the API writes when it notices the object must not undo what the flow recorded.
    kept = records.record_asset(upload.asset_id, PREPARING, {"progress": 0}, only_if_new=True)
    assert kept["status"] == READY and kept["progress"] == 100
    assert records.tombstone_asset(upload.asset_id)["status"] == READY
    assert records.tombstone_asset(upload.asset_id) is None  # once
    for status in (PREPARING, READY, ERRORED):
        assert record_asset_state(settings, upload, status, progress=50) is None
    assert records.get_asset(upload.asset_id).keys() == {"pk", "id", "deleted_at"}
    assert records.list_assets()[0] == [] and records.list_assets(READY)[0] == []


def test_the_flows_first_write_links_the_asset_to_its_api_upload(settings, records):
    upload_id = "ab" * 12
    key = f"{settings.upload_key_prefix}{upload_id}/clip.mp4"
    records.create_upload({"id": upload_id, "status": "waiting", "key": key, "passthrough": "order-7",
                           "filename": "clip.mp4", "size": 5, "expires_epoch": 2**40})
    upload = Upload(settings.upload_bucket, key, "e2")
    first = record_asset_state(settings, upload, PREPARING, progress=0, flow_run_id="run-1")
    assert (first["passthrough"], first["upload_id"], first["status"]) == ("order-7", upload_id, PREPARING)
    assert records.get_upload(upload_id)["status"] == "asset_created"
    assert records.get_upload(upload_id)["asset_id"] == upload.asset_id
    later = record_asset_state(settings, upload, ERRORED, error={"code": "not_media", "message": "no"})
    assert later["errors"] == {"code": "not_media", "message": "no"} and "progress" not in later
    assert later["created_at"] == first["created_at"] and later["passthrough"] == "order-7"
    # An object under another upload's folder name, or a plain key, links to nothing.
    other = record_asset_state(settings, Upload(settings.upload_bucket, "videos/x.mp4", "e3"), PREPARING, progress=0)
    assert "upload_id" not in other and "passthrough" not in other


def test_the_reconciler_repairs_records_from_s3(settings, records):
    ids = {name: f"{n:02x}" * 12 for n, name in enumerate(
        ["published", "broken", "pending", "vanished", "deleted", "rejected", "retrying"], start=1)}
    _publish(settings, ids["published"])
    records.record_asset(ids["published"], PREPARING, {"progress": 40})      # crashed before writing ready
    _publish(settings, ids["broken"], missing=True)
    records.record_asset(ids["broken"], READY, {"progress": 100})             # its segment was removed later
    s3_client().put_object(Bucket=settings.upload_bucket, Key="videos/pending.mp4", Body=b"x")
    pending = Upload.from_head(settings.upload_bucket, "videos/pending.mp4",
                               s3_client().head_object(Bucket=settings.upload_bucket, Key="videos/pending.mp4"))
    ids["pending"] = pending.asset_id                                         # uploaded, no record yet
    records.record_asset(ids["vanished"], PREPARING, {"progress": 10})
    _age(records, ids["vanished"], 3600)                                      # S3 has nothing of it
    records.record_asset(ids["deleted"], READY, {})
    records.tombstone_asset(ids["deleted"])
    _publish(settings, ids["deleted"])                                        # a run finished after the delete
    records.record_asset(ids["rejected"], PREPARING, {"progress": 0})
    _age(records, ids["rejected"], 600)
    _reject(settings, ids["rejected"], datetime.now(timezone.utc))           # failed after its last write
    _reject(settings, ids["retrying"], datetime.now(timezone.utc) - timedelta(minutes=10))
    records.record_asset(ids["retrying"], PREPARING, {"progress": 20})       # a retry after that failure

    repairs = sorted(repair_records(settings, s3_client(), records), key=lambda r: r.asset_id)
    assert repairs == sorted([
        Repair(ids["published"], PREPARING, READY), Repair(ids["broken"], READY, ERRORED),
        Repair(ids["pending"], None, PREPARING), Repair(ids["vanished"], PREPARING, ERRORED),
        Repair(ids["deleted"], "deleted", "purged"), Repair(ids["rejected"], PREPARING, ERRORED),
    ], key=lambda r: r.asset_id)
    published = records.get_asset(ids["published"])
    assert published["status"] == READY and published["max_resolution"] == "640x360" and published["duration"] == 4.0
    assert records.get_asset(ids["broken"])["errors"]["code"] == "asset_incomplete"
    assert records.get_asset(ids["pending"])["source"]["key"] == "videos/pending.mp4"
    assert records.get_asset(ids["vanished"])["errors"]["code"] == "source_not_found"
    assert records.get_asset(ids["rejected"])["errors"] == {"code": "not_media", "message": "Not a video."}
    assert records.get_asset(ids["retrying"])["status"] == PREPARING
    prefix = settings.layout(ids["deleted"]).prefix
    assert s3_client().list_objects_v2(Bucket=settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
    assert records.get_asset(ids["deleted"])["deleted_at"]
    # Once repaired, the records agree with S3: a second pass changes nothing.
    assert repair_records(settings, s3_client(), records) == []


def test_a_ready_asset_whose_objects_were_removed_is_errored_in_the_api_as_in_the_listing(settings, records):
    """``GET /v1/assets/{id}`` of a ``ready`` record checks the bucket: once a segment is removed it
    answers ``errored`` (``asset_incomplete``, no playback), as ``pixelflow status``/``ls`` (the
    listing) say ``broken``, and the reconciler's repair then agrees (it has nothing to correct);
    a withdrawn manifest whose upload is still there is ``preparing`` (a new run rebuilds it)."""
    from pixelflow.ops import assets as s3_assets
    from tests.api_helpers import start_api

    s3 = s3_client()
    s3.put_object(Bucket=settings.upload_bucket, Key="videos/removed.mp4", Body=b"video")
    upload = Upload.from_head(settings.upload_bucket, "videos/removed.mp4",
                              s3.head_object(Bucket=settings.upload_bucket, Key="videos/removed.mp4"))
    asset_id, layout = upload.asset_id, settings.layout(upload.asset_id)
    _publish(settings, asset_id)
    records.record_asset(asset_id, READY, {"progress": 100}, first={"source": upload.to_dict()})
    api = start_api(settings)
    try:
        with api.client() as client:
            ready = client.get(f"/v1/assets/{asset_id}").json()["data"]
            assert ready["status"] == READY and ready["playback"]["hls"].endswith(f"/{asset_id}/master.m3u8")

            s3.delete_object(Bucket=settings.output_bucket, Key=layout.key("360p/seg_00000.m4s"))
            listed = s3_assets.get_asset(asset_id, settings, s3)
            assert (listed.status, listed.error["code"]) == (s3_assets.BROKEN, "asset_incomplete")
            response = client.get(f"/v1/assets/{asset_id}")
            assert response.status_code == 200
            broken = response.json()["data"]
            assert broken["status"] == ERRORED and broken["playback"] is None
            assert broken["errors"] == {"code": "asset_incomplete", "message": listed.error["message"]}
            # The record itself was corrected: the list agrees, and so does the reconciler.
            (item,) = [a for a in client.get("/v1/assets").json()["data"] if a["id"] == asset_id]
            assert item["status"] == ERRORED
            assert [r for r in repair_records(settings, s3, records) if r.asset_id == asset_id] == []

            # A run rebuilding it withdrew the manifest; the upload is still there: preparing.
            records.record_asset(asset_id, READY, {"progress": 100, "errors": None})
            s3.delete_object(Bucket=settings.output_bucket, Key=layout.manifest_key)
            assert s3_assets.get_asset(asset_id, settings, s3).status == s3_assets.PROCESSING
            assert client.get(f"/v1/assets/{asset_id}").json()["data"]["status"] == PREPARING
            assert [r for r in repair_records(settings, s3, records) if r.asset_id == asset_id] == []
    finally:
        api.stop()
