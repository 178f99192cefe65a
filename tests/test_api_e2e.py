"""End to end through the API, as an app integrates it: create an upload, PUT the file to the
presigned URL, poll the upload until its asset id, the flow (run in-process, as the trigger
would) records the asset preparing then ready, its playback URL plays, and DELETE removes it
for good: its prefix is empty, it is 404, and a duplicate event for it publishes nothing."""

from __future__ import annotations

import httpx
import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist
from tests.api_helpers import env_for, make_settings, start_api
from tests.conftest import make_clip
from tests.events_helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings())
    yield api
    api.stop()


def _events(prefect_server: str, name: str, asset_id: str) -> list[dict]:
    response = httpx.post(f"{prefect_server}/events/filter", timeout=15, json={"limit": 10, "filter": {
        "event": {"name": [name]}, "resource": {"id": [f"pixelflow.asset.{asset_id}"]},
        "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}})
    return response.json()["events"]


@pytest.mark.timeout(300)
def test_upload_poll_play_delete(api, prefect_server, media_dir, monkeypatch):
    from flows.transcode import transcode

    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "api-e2e.mp4", seconds=3, size="640x360")
    with api.client() as client:
        upload = client.post("/v1/uploads", json={"filename": "e2e.mp4", "size": clip.stat().st_size,
                                                  "passthrough": "video-1234"}).json()["data"]
        assert httpx.put(upload["url"], content=clip.read_bytes(), timeout=60).status_code == 200
        done = wait_for(lambda: (u := client.get(f"/v1/uploads/{upload['id']}").json()["data"])["asset_id"] and u,
                        timeout=10, what="the upload's asset id")
        assert done["status"] == "asset_created"
        asset_id = done["asset_id"]
        key = f"uploads/{upload['id']}/e2e.mp4"
        assert s3_client().head_object(Bucket=api.settings.upload_bucket, Key=key)["ContentLength"] == clip.stat().st_size

        # What the deployment trigger runs for the object's event.
        etag = s3_client().head_object(Bucket=api.settings.upload_bucket, Key=key)["ETag"]
        manifest = transcode(bucket=api.settings.upload_bucket, key=key, etag=etag)
        assert manifest["asset_id"] == asset_id

        asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
        assert asset["status"] == "ready" and asset["progress"] == 100
        assert asset["passthrough"] == "video-1234" and asset["upload_id"] == upload["id"]
        assert asset["max_resolution"] == "640x360" and asset["aspect_ratio"] == "16:9" and asset["duration"] > 2.5
        assert [a["id"] for a in client.get("/v1/assets", params={"status": "ready"}).json()["data"]] == [asset_id]
        (ready,) = wait_for(lambda: _events(prefect_server, "pixelflow.asset.ready", asset_id), timeout=30,
                            what="the ready event")
        assert ready["payload"]["passthrough"] == "video-1234"

        master = httpx.get(asset["playback"]["hls"], timeout=30)
        assert master.status_code == 200
        (variant,) = parse_master_playlist(master.text)
        base = asset["playback"]["hls"].rsplit("/", 1)[0]
        media = httpx.get(f"{base}/{variant['URI']}", timeout=30).text
        segment = next(line for line in media.splitlines() if line.endswith(".m4s"))
        rendition = variant["URI"].rsplit("/", 1)[0]
        assert httpx.get(f"{base}/{rendition}/{segment}", timeout=30).content[4:8] in (b"styp", b"moof")

        assert client.delete(f"/v1/assets/{asset_id}").status_code == 204
        prefix = api.settings.layout(asset_id).prefix
        assert s3_client().list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
        assert client.get(f"/v1/assets/{asset_id}").json()["error"]["code"] == "asset_not_found"
        assert client.get(f"/v1/uploads/{upload['id']}").status_code == 404  # its records went with it
        (deleted,) = wait_for(lambda: _events(prefect_server, "pixelflow.asset.deleted", asset_id), timeout=30,
                              what="the deleted event")
        assert deleted["payload"]["passthrough"] == "video-1234"

        # A duplicate event for the deleted asset (its source is still there) publishes nothing.
        state = transcode(bucket=api.settings.upload_bucket, key=key, etag=etag, return_state=True)
        assert state.is_completed() and "deleted" in state.message
        assert s3_client().list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
        assert client.get(f"/v1/assets/{asset_id}").status_code == 404


@pytest.mark.timeout(300)
def test_a_rejected_upload_is_an_errored_asset_with_its_code(api, prefect_server, monkeypatch):
    from flows.transcode import transcode

    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    junk = b"this is not a video at all\n" * 50
    with api.client() as client:
        upload = client.post("/v1/uploads", json={"filename": "notes.mp4", "size": len(junk),
                                                  "passthrough": "doc-9"}).json()["data"]
        etag = httpx.put(upload["url"], content=junk, timeout=30).headers["etag"]
        state = transcode(bucket=api.settings.upload_bucket, key=f"uploads/{upload['id']}/notes.mp4", etag=etag,
                          return_state=True)
        assert state.is_failed() and state.message.startswith("not_media:")
        asset_id = client.get(f"/v1/uploads/{upload['id']}").json()["data"]["asset_id"]
        asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "errored" and asset["errors"]["code"] == "not_media" and asset["errors"]["message"]
    assert asset["passthrough"] == "doc-9" and asset["playback"] is None and asset.get("progress") is None
    (errored,) = wait_for(lambda: _events(prefect_server, "pixelflow.asset.errored", asset_id), timeout=30,
                          what="the errored event")
    assert errored["payload"]["passthrough"] == "doc-9" and errored["payload"]["code"] == "not_media"
