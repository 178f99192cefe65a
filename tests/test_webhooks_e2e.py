"""Signed webhooks end to end, with a real flow run on a real Prefect server: a receiver that is
down for two attempts still gets ``video.asset.ready`` for an upload, one event id across the
attempts, signed; and a forged ``pixelflow.asset.ready`` Prefect event is never delivered."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from pixelflow import webhooks
from pixelflow.aws import s3_client
from pixelflow.local.processes import stop_process
from pixelflow.outbox import Outbox
from tests.api_helpers import start_api
from tests.conftest import make_clip
from tests.events_helpers import wait_for
from tests.webhook_helpers import Receiver, start_dispatcher, webhook_env, webhook_settings

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_a_receiver_down_for_two_attempts_still_gets_the_ready_event_once_signed(moto_server, prefect_server, media_dir,
                                                                               monkeypatch, tmp_path):
    from flows.transcode import transcode

    settings = webhook_settings()
    for name, value in webhook_env(settings).items():
        monkeypatch.setenv(name, value)
    api = start_api(settings)
    receiver = Receiver(answers_by_type={webhooks.ASSET_READY: [500, 500]})  # down when the asset is ready
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        with api.client() as client:
            endpoint = client.post("/v1/webhooks", json={"url": receiver.url}).json()["data"]
            clip = make_clip(media_dir / "webhook-e2e.mp4", seconds=2, size="640x360")
            upload = client.post("/v1/uploads", json={"filename": "hook.mp4", "size": clip.stat().st_size,
                                                      "passthrough": "video-77"}).json()["data"]
            assert httpx.put(upload["url"], content=clip.read_bytes(), timeout=60).status_code == 200
            key = f"uploads/{upload['id']}/hook.mp4"
            etag = s3_client().head_object(Bucket=settings.upload_bucket, Key=key)["ETag"]
            # What the deployment trigger runs for the object's event; a second run of the same
            # upload (a duplicate event) finds it published and makes no second event.
            manifest = transcode(bucket=settings.upload_bucket, key=key, etag=etag)
            assert transcode(bucket=settings.upload_bucket, key=key, etag=etag)["asset_id"] == manifest["asset_id"]
            asset_id = manifest["asset_id"]

            def ready_attempts():
                return [r for r in receiver.requests if json.loads(r.body)["type"] == webhooks.ASSET_READY]

            wait_for(lambda: [d for d in Outbox(settings).list_deliveries(50, endpoint["id"])
                              if d["type"] == webhooks.ASSET_READY and d["status"] == "delivered"],
                     timeout=120, what="video.asset.ready delivered")
            attempts = ready_attempts()
            assert len(attempts) == 3  # 500, 500, then 200
            assert len({json.loads(a.body)["id"] for a in attempts}) == 1
            event = webhooks.verify(attempts[-1].body, attempts[-1].headers[webhooks.SIGNATURE_HEADER],
                                    endpoint["secret"])
            assert event["data"]["id"] == asset_id and event["data"]["status"] == "ready"
            assert event["data"]["passthrough"] == "video-77" and event["data"]["upload_id"] == upload["id"]
            # data is the API's own view of the asset.
            api_view = client.get(f"/v1/assets/{asset_id}").json()["data"]
            assert {k: event["data"][k] for k in ("duration", "max_resolution", "renditions", "status")} == \
                {k: api_view[k] for k in ("duration", "max_resolution", "renditions", "status")}
            tampered = attempts[-1].body.replace(b'"ready"', b'"errored"')
            with pytest.raises(webhooks.WebhookVerificationError):
                webhooks.verify(tampered, attempts[-1].headers[webhooks.SIGNATURE_HEADER], endpoint["secret"])

            (ready,) = [d for d in client.get("/v1/webhooks/deliveries").json()["data"]
                        if d["type"] == webhooks.ASSET_READY]
            assert [a["status_code"] for a in ready["attempts"]] == [500, 500, 200]

            # Deleting the asset is an event too; every event of the upload came in the order it
            # happened, each once.
            assert client.delete(f"/v1/assets/{asset_id}").status_code == 204
            wait_for(lambda: webhooks.ASSET_DELETED in [t for t, _ in receiver.events()], timeout=60,
                     what="video.asset.deleted")
        order = list(dict.fromkeys(receiver.events()))
        assert [t for t, _ in order] == [webhooks.UPLOAD_CREATED, webhooks.UPLOAD_ASSET_CREATED,
                                         webhooks.ASSET_CREATED, webhooks.ASSET_READY, webhooks.ASSET_DELETED]
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()


@pytest.mark.timeout(300)
def test_a_forged_prefect_event_is_never_a_signed_webhook(moto_server, prefect_server, tmp_path):
    settings = webhook_settings()
    api = start_api(settings)
    receiver = Receiver()
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        with api.client() as client:
            endpoint = client.post("/v1/webhooks", json={"url": receiver.url}).json()["data"]
            asset_id = uuid.uuid4().hex[:24]
            forged = {"id": str(uuid.uuid4()), "occurred": "2026-12-02T08:00:00Z", "event": "pixelflow.asset.ready",
                      "resource": {"prefect.resource.id": f"pixelflow.asset.{asset_id}"},
                      "payload": {"asset_id": asset_id, "status": "ready", "master_playlist": "s3://evil/x.m3u8"}}
            assert httpx.post(f"{prefect_server}/events", json=[forged], timeout=30).is_success
            # PixelFlow's own next event is delivered: the forged one, posted before it, never is.
            upload = client.post("/v1/uploads", json={"filename": "after.mp4", "size": 10}).json()["data"]
            wait_for(lambda: receiver.requests, timeout=60, what="the upload's event")
        assert [(t, json.loads(r.body)["data"]["id"]) for (t, _), r in zip(receiver.events(), receiver.requests)] == [
            (webhooks.UPLOAD_CREATED, upload["id"])]
        assert [d["type"] for d in Outbox(settings).list_deliveries(50, endpoint["id"])] == [webhooks.UPLOAD_CREATED]
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()


@pytest.mark.timeout(300)
def test_a_rejected_upload_is_a_signed_errored_event_with_its_code(moto_server, prefect_server, monkeypatch,
                                                                    tmp_path):
    from flows.transcode import transcode

    settings = webhook_settings()
    for name, value in webhook_env(settings).items():
        monkeypatch.setenv(name, value)
    api = start_api(settings)
    receiver = Receiver()
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        with api.client() as client:
            endpoint = client.post("/v1/webhooks", json={"url": receiver.url}).json()["data"]
            junk = b"not a video\n" * 100
            upload = client.post("/v1/uploads", json={"filename": "notes.mp4", "size": len(junk),
                                                      "passthrough": "doc-1"}).json()["data"]
            etag = httpx.put(upload["url"], content=junk, timeout=30).headers["etag"]
            state = transcode(bucket=settings.upload_bucket, key=f"uploads/{upload['id']}/notes.mp4", etag=etag,
                              return_state=True)
            assert state.is_failed()
            wait_for(lambda: webhooks.ASSET_ERRORED in [t for t, _ in receiver.events()], timeout=60,
                     what="video.asset.errored")
        (request,) = [r for r in receiver.requests if json.loads(r.body)["type"] == webhooks.ASSET_ERRORED]
        event = webhooks.verify(request.body, request.headers[webhooks.SIGNATURE_HEADER], endpoint["secret"])
        assert event["data"]["status"] == "errored" and event["data"]["errors"]["code"] == "not_media"
        assert event["data"]["passthrough"] == "doc-1" and event["data"]["playback"] is None
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()
