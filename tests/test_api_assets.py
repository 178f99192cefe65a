"""Assets through the API: every asset listed newest first in pages, read from its record in one
request, backfilled from S3 when it has none (uploads that went straight to the bucket), played
from its playback URLs, and deleted for good (prefix empty, 404, no resurrection by late events)."""

from __future__ import annotations

import httpx
import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist
from pixelflow.core.upload import Upload
from pixelflow.records import ERRORED, PREPARING, READY, record_asset_state
from tests.api_helpers import env_for, make_settings, start_api
from tests.conftest import make_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings())
    yield api
    api.stop()


@pytest.fixture
def client(api):
    with api.client() as client:
        yield client


def _asset_ids(response) -> list[str]:
    return [a["id"] for a in response.json()["data"]]


def test_listing_is_newest_first_in_pages_and_filters_by_status(moto_server):
    api = start_api(make_settings())
    try:
        ids = []
        for n in range(5):
            asset_id = f"{n:024x}"
            api.records.record_asset(asset_id, READY if n % 2 == 0 else ERRORED, {"progress": 100},
                                     created_at=f"2026-11-0{n + 1}T00:00:00.000000Z")
            ids.append(asset_id)
        newest_first = list(reversed(ids))
        with api.client() as client:
            seen, cursor, pages = [], None, 0
            while True:
                response = client.get("/v1/assets", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
                assert response.status_code == 200, response.text
                seen += _asset_ids(response)
                pages += 1
                cursor = response.json()["next_cursor"]
                if not cursor:
                    break
            assert seen == newest_first and pages == 3
            ready = client.get("/v1/assets", params={"status": "ready"})
            assert _asset_ids(ready) == [ids[4], ids[2], ids[0]]
            assert all(a["status"] == "ready" for a in ready.json()["data"])
            first_errored = client.get("/v1/assets", params={"status": "errored", "limit": 1}).json()
            assert _asset_ids(httpx.Response(200, json=first_errored)) == [ids[3]]
            # A cursor of one listing is refused by another; made-up cursors are refused.
            for params in ({"cursor": first_errored["next_cursor"]}, {"cursor": "bm90IGEgY3Vyc29y"},
                           {"cursor": "%%%"}):
                bad = client.get("/v1/assets", params=params)
                assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor", bad.text
            for params in ({"status": "deleted"}, {"limit": 0}, {"limit": "many"}):
                bad = client.get("/v1/assets", params=params)
                assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request", bad.text
            capped = client.get("/v1/assets", params={"limit": 100000})
            assert capped.status_code == 200 and len(capped.json()["data"]) == 5
    finally:
        api.stop()


def test_a_thread_started_after_the_prefect_server_sees_it(prefect_server):
    """The API's server runs in a thread of its own, without the test's settings context: it
    must reach the session's Prefect server however early Prefect was imported (the doctests
    import it first when they run before this module)."""
    import threading

    from prefect.settings import get_current_settings

    seen = []
    thread = threading.Thread(target=lambda: seen.append(get_current_settings().api.url))
    thread.start()
    thread.join(10)
    assert seen == [prefect_server]


def test_unknown_assets_are_404(api, client):
    for asset_id in ("0123456789abcdef01234567", "not-an-asset", "ZZ23456789abcdef01234567"):
        for response in (client.get(f"/v1/assets/{asset_id}"), client.delete(f"/v1/assets/{asset_id}")):
            assert response.status_code == 404 and response.json()["error"]["code"] == "asset_not_found"
    for path in ("/assets/0123456789abcdef01234567/master.m3u8", "/assets/0123456789abcdef01234567/manifest.json",
                 "/assets/0123456789abcdef01234567/a/b/c.m4s", "/assets/nope/master.m3u8"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.timeout(300)
def test_a_direct_s3_upload_is_an_asset_that_plays_and_deletes_for_good(api, client, prefect_server, media_dir,
                                                                        monkeypatch):
    """The CLI's way (an object put straight in the bucket, the flow as today): the API serves
    the asset, plays it, and its deletion empties its prefix for good."""
    from flows.transcode import transcode
    from tests.events_helpers import wait_for

    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "api-direct.mp4", seconds=2, size="640x360")
    s3 = s3_client()
    key = "videos/direct upload.mp4"
    s3.upload_file(str(clip), api.settings.upload_bucket, key)
    upload = Upload.from_head(api.settings.upload_bucket, key, s3.head_object(Bucket=api.settings.upload_bucket, Key=key))
    manifest = transcode(bucket=upload.bucket, key=key, etag=upload.etag)
    assert manifest["asset_id"] == upload.asset_id

    asset = client.get(f"/v1/assets/{upload.asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["progress"] == 100
    assert asset["max_resolution"] == "640x360" and asset["aspect_ratio"] == "16:9"
    assert [r["name"] for r in asset["renditions"]] == ["360p"] and 1.5 < asset["duration"] < 2.5
    assert upload.asset_id in _asset_ids(client.get("/v1/assets"))
    # Playback needs no token: the master playlist, a rendition playlist, the poster.
    with httpx.Client(timeout=30) as anonymous:
        master = anonymous.get(asset["playback"]["hls"])
        assert master.status_code == 200 and master.headers["content-type"] == "application/vnd.apple.mpegurl"
        (variant,) = parse_master_playlist(master.text)
        media = anonymous.get(asset["playback"]["hls"].rsplit("/", 1)[0] + "/" + variant["URI"])
        assert media.status_code == 200 and "#EXTINF" in media.text
        poster = anonymous.get(asset["playback"]["poster"])
        assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"
        ranged = anonymous.get(asset["playback"]["poster"], headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and len(ranged.content) == 10
        # The storyboard: its WebVTT file names tiles of the sheet next to it (2 s: one tile).
        storyboard = anonymous.get(asset["playback"]["storyboard"])
        assert storyboard.status_code == 200 and storyboard.headers["content-type"].startswith("text/vtt")
        assert storyboard.text.splitlines()[2:4] == ["00:00:00.000 --> 00:00:02.000", "storyboard.jpg#xywh=0,0,160,90"]
        sheet = anonymous.get(asset["playback"]["storyboard"].rsplit("/", 1)[0] + "/storyboard.jpg")
        assert sheet.status_code == 200 and sheet.content[:2] == b"\xff\xd8"
        # The MP4 download of the highest rung, saved under the source's name.
        (download,) = asset["playback"]["downloads"]
        assert (download["name"], download["width"], download["height"]) == ("360p", 640, 360)
        mp4 = anonymous.get(download["url"])
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        assert len(mp4.content) == download["size"] and mp4.content[4:8] == b"ftyp"
        assert mp4.headers["content-disposition"].startswith('attachment; filename="direct upload-360p.mp4"')

    prefix = api.settings.layout(upload.asset_id).prefix
    assert s3.list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] > 5
    deleted = client.delete(f"/v1/assets/{upload.asset_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert s3.list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
    assert client.get(f"/v1/assets/{upload.asset_id}").status_code == 404
    assert client.delete(f"/v1/assets/{upload.asset_id}").status_code == 404
    assert upload.asset_id not in _asset_ids(client.get("/v1/assets"))
    # The source stays (PIXELFLOW_DELETE_SOURCE_ON_ASSET_DELETE is off by default).
    assert s3.head_object(Bucket=api.settings.upload_bucket, Key=key)["ContentLength"] == clip.stat().st_size
    # A late or duplicate state write (a redelivered event's run) does not resurrect it.
    for status in (PREPARING, READY):
        assert record_asset_state(api.settings, upload, status, progress=5, manifest=manifest) is None
    assert client.get(f"/v1/assets/{upload.asset_id}").status_code == 404
    assert upload.asset_id not in _asset_ids(client.get("/v1/assets"))
    # The deletion is an event, for automations and the app.
    from tests.events_helpers import upload_events  # noqa: F401 - same filter endpoint

    def deleted_events():
        response = httpx.post(f"{prefect_server}/events/filter", timeout=15, json={"limit": 10, "filter": {
            "event": {"name": ["pixelflow.asset.deleted"]}, "resource": {"id": [f"pixelflow.asset.{upload.asset_id}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}})
        return response.json()["events"]

    (event,) = wait_for(deleted_events, timeout=30, what="the pixelflow.asset.deleted event")
    assert event["payload"]["asset_id"] == upload.asset_id and event["payload"]["key"] == key

    # A run for the deleted upload (a late event) publishes nothing...
    late = transcode(bucket=upload.bucket, key=key, etag=upload.etag, return_state=True)
    assert late.is_completed() and "was deleted" in late.message
    assert s3.list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
    # ...but the same bytes uploaded again after the deletion are the asset's new life: whole again.
    import time

    time.sleep(1.1)  # S3's LastModified has whole seconds
    s3.upload_file(str(clip), api.settings.upload_bucket, key)
    again = transcode(bucket=upload.bucket, key=key, etag=upload.etag)
    assert again["asset_id"] == upload.asset_id
    asset = client.get(f"/v1/assets/{upload.asset_id}").json()["data"]
    assert asset["status"] == "ready"
    with httpx.Client(timeout=30) as anonymous:
        assert anonymous.get(asset["playback"]["hls"]).status_code == 200
    from pixelflow.core.layout import manifest_objects, missing_objects
    listed = {o["Key"][len(prefix):]: o["Size"]
              for o in s3.list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["Contents"]}
    assert missing_objects(manifest_objects(again), listed) == []
