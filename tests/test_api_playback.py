"""Private playback through the API (real uvicorn, moto S3 and DynamoDB over HTTP): an asset's
playback policy is chosen at upload and changed later, a signed asset's playlists, segments and
poster are 403 without a valid playback token of it and 200 with one (by the relative URLs a
player resolves, the token in their path), and every bad request has its code."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urljoin

import httpx
import pytest

from pixelflow.aws import s3_client
from pixelflow.core.playback_token import sign_token
from pixelflow.core.upload import Upload
from pixelflow.records import READY, record_asset_state
from tests.api_helpers import make_settings, start_api

pytestmark = pytest.mark.integration

KEY = "playback-signing-key-for-tests-" + "x" * 16
MASTER = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n"
MEDIA = ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n"
         "#EXTINF:2.0,\nseg_00000.m4s\n#EXT-X-ENDLIST\n")
FILES = {"master.m3u8": MASTER.encode(), "360p/index.m3u8": MEDIA.encode(), "360p/init.mp4": b"\0\0\0\x18ftypiso6",
         "360p/seg_00000.m4s": b"segment-bytes", "poster.jpg": b"\xff\xd8\xff\xe0poster"}


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings(playback_signing_key=KEY, playback_token_max_seconds=7200))
    yield api
    api.stop()


@pytest.fixture
def client(api):
    with api.client() as client:
        yield client


def _publish(api, key: str, *, policy: str | None = None) -> str:
    """An asset of an object of the upload bucket: its files in the output bucket and its ready
    record, as the flow leaves them (the record written by the flow's own function)."""
    s3 = s3_client()
    s3.put_object(Bucket=api.settings.upload_bucket, Key=key, Body=b"source " + key.encode())
    upload = Upload.from_head(api.settings.upload_bucket, key,
                              s3.head_object(Bucket=api.settings.upload_bucket, Key=key))
    layout = api.settings.layout(upload.asset_id)
    for name, body in FILES.items():
        s3.put_object(Bucket=api.settings.output_bucket, Key=layout.key(name), Body=body)
    rendition = {"name": "360p", "width": 640, "height": 360,
                 "files": [name for name in FILES if name.startswith("360p/")]}
    manifest = {"asset_id": upload.asset_id, "duration": 2.0, "renditions": [rendition], "source": upload.to_dict()}
    s3.put_object(Bucket=api.settings.output_bucket, Key=layout.manifest_key, Body=json.dumps(manifest).encode())
    record_asset_state(api.settings, upload, READY, manifest=manifest, records=api.records)
    if policy:
        api.records.set_playback_policy(upload.asset_id, policy)
    return upload.asset_id


def _fetch_all(master_url: str) -> dict[str, tuple[int, str | None]]:
    """What a player fetches from a master playlist, by relative URLs: (status, error code) of each."""
    got: dict[str, tuple[int, str | None]] = {}

    def get(url: str) -> httpx.Response:
        response = anonymous.get(url)
        code = response.json()["error"]["code"] if response.status_code >= 400 else None
        got[url.rsplit("/assets/", 1)[1].split("/", 1)[1]] = (response.status_code, code)
        return response

    with httpx.Client(timeout=30) as anonymous:
        master = get(master_url)
        if master.status_code == 200:
            media_url = urljoin(master_url, master.text.strip().splitlines()[-1])
            get(media_url)
            for name in ("init.mp4", "seg_00000.m4s"):
                get(urljoin(media_url, name))
        else:
            for name in ("360p/index.m3u8", "360p/seg_00000.m4s"):
                get(urljoin(master_url, name))
        get(urljoin(master_url, "poster.jpg"))
    return got


def test_a_signed_asset_plays_only_with_a_valid_token_of_it(api, client):
    public = _publish(api, "videos/public.mp4")
    signed = _publish(api, "videos/signed.mp4", policy="signed")
    base = f"{api.url}/assets/"

    # Public assets are as before: every file without a token, the playback URLs in the view.
    assert set(_fetch_all(f"{base}{public}/master.m3u8").values()) == {(200, None)}
    view = client.get(f"/v1/assets/{public}").json()["data"]
    assert view["playback_policy"] == "public" and view["playback"]["hls"] == f"{base}{public}/master.m3u8"

    # A signed one: no URL in its view, and every file 403 without a token.
    view = client.get(f"/v1/assets/{signed}").json()["data"]
    assert view["playback_policy"] == "signed" and view["playback"] is None
    assert set(_fetch_all(f"{base}{signed}/master.m3u8").values()) == {(403, "playback_token_required")}
    escaped = httpx.get(f"{base}%{ord(signed[0]):02x}{signed[1:]}/%6d{'aster.m3u8'}")  # %-escapes are no way round
    assert escaped.status_code in (403, 404), escaped.text

    # A token, with the URLs the player needs: the master, and every file by its relative URL.
    issued = client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": 600, "viewer_id": "user-42"})
    assert issued.status_code == 201, issued.text
    data = issued.json()["data"]
    token = data["token"]
    assert {k: data["playback"][k] for k in ("hls", "poster")} == {
        "hls": f"{api.url}/t/{token}/assets/{signed}/master.m3u8", "poster": f"{api.url}/t/{token}/assets/{signed}/poster.jpg"}
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (claims["sub"], claims["viewer_id"], claims["exp"] - claims["iat"], data["expires_in"]) == \
        (signed, "user-42", 600, 600)
    fetched = _fetch_all(data["playback"]["hls"])
    assert fetched == {name: (200, None) for name in ("master.m3u8", "360p/index.m3u8", "360p/init.mp4",
                                                     "360p/seg_00000.m4s", "poster.jpg")}
    with httpx.Client(timeout=30) as anonymous:
        segment = anonymous.get(f"{api.url}/t/{token}/assets/{signed}/360p/seg_00000.m4s",
                                headers={"Range": "bytes=0-3"})
        assert segment.status_code == 206 and segment.content == b"segm"
        assert "max-age" in segment.headers["cache-control"]  # segments stay cacheable

    # Expired, tampered, of another asset, signed with another key: 403 with the reason.
    now = int(time.time())
    expired = sign_token(KEY.encode(), signed, expires_at=now - 1, issued_at=now - 60)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{base64.urlsafe_b64encode(json.dumps({**claims, 'exp': now + 10**6}).encode()).decode().rstrip('=')}.{signature}"
    other = sign_token(KEY.encode(), public, expires_at=now + 600, issued_at=now)
    foreign = sign_token(b"another-key-" + b"y" * 32, signed, expires_at=now + 600, issued_at=now)
    for bad, code in ((expired, "playback_token_expired"), (tampered, "playback_token_invalid"),
                      (other, "playback_token_wrong_asset"), (foreign, "playback_token_invalid"),
                      ("not-a-jwt", "playback_token_invalid")):
        assert set(_fetch_all(f"{api.url}/t/{bad}/assets/{signed}/master.m3u8").values()) == {(403, code)}, code
    # A token opens its own asset only.
    assert _fetch_all(f"{api.url}/t/{token}/assets/{public}/master.m3u8")["master.m3u8"] == \
        (403, "playback_token_wrong_asset")


def test_the_policy_is_chosen_at_upload_and_changed_later(api, client):
    created = client.post("/v1/uploads", json={"filename": "private.mp4", "size": 20, "playback_policy": ["signed"]})
    assert created.status_code == 201, created.text
    upload_data = created.json()["data"]
    assert upload_data["playback_policy"] == ["signed"]
    assert httpx.put(upload_data["url"], content=b"private source bytes").status_code == 200
    # The flow's first write (or the API noticing the object) gives the asset the upload's policy.
    asset_id = client.get(f"/v1/uploads/{upload_data['id']}").json()["data"]["asset_id"]
    assert client.get(f"/v1/assets/{asset_id}").json()["data"]["playback_policy"] == "signed"
    key = api.records.get_upload(upload_data["id"])["key"]
    s3 = s3_client()
    upload = Upload.from_head(api.settings.upload_bucket, key, s3.head_object(Bucket=api.settings.upload_bucket, Key=key))
    for name, body in FILES.items():
        s3.put_object(Bucket=api.settings.output_bucket, Key=api.settings.layout(asset_id).key(name), Body=body)
    assert record_asset_state(api.settings, upload, READY, manifest={"renditions": []},
                              records=api.records)["playback_policy"] == "signed"
    master = f"{api.url}/assets/{asset_id}/master.m3u8"
    assert httpx.get(master).status_code == 403

    made_public = client.patch(f"/v1/assets/{asset_id}", json={"playback_policy": "public"})
    assert made_public.status_code == 200 and made_public.json()["data"]["playback_policy"] == "public"
    assert made_public.json()["data"]["playback"]["hls"] == master
    assert httpx.get(master).status_code == 200
    # Later writes of the flow keep the policy the app chose.
    record_asset_state(api.settings, upload, READY, manifest={"renditions": []}, records=api.records)
    assert httpx.get(master).status_code == 200
    assert client.patch(f"/v1/assets/{asset_id}", json={"playback_policy": "signed"}).status_code == 200
    response = httpx.get(master)
    assert response.status_code == 403 and response.json()["error"]["code"] == "playback_token_required"
    assert [a["playback_policy"] for a in client.get("/v1/assets").json()["data"] if a["id"] == asset_id] == ["signed"]

    # A direct upload (no API upload) has the default policy: public.
    direct = _publish(api, "videos/direct.mp4")
    assert client.get(f"/v1/assets/{direct}").json()["data"]["playback_policy"] == "public"


def test_bad_policy_and_token_requests_are_refused_with_their_codes(api, client):
    public = _publish(api, "videos/bad-public.mp4")
    signed = _publish(api, "videos/bad-signed.mp4", policy="signed")
    unknown = "0" * 24
    cases = [
        (client.patch(f"/v1/assets/{unknown}", json={"playback_policy": "signed"}), 404, "asset_not_found"),
        (client.patch(f"/v1/assets/{public}", json={"playback_policy": "private"}), 400, "invalid_request"),
        (client.patch(f"/v1/assets/{public}", json={"playback_policy": "signed", "x": 1}), 400, "unknown_field"),
        (client.patch(f"/v1/assets/{public}", json={}), 400, "invalid_request"),
        (client.patch(f"/v1/assets/{public}", content=b"[", headers={"content-type": "application/json"}),
         400, "invalid_request"),
        (client.post(f"/v1/assets/{unknown}/playback-tokens", json={}), 404, "asset_not_found"),
        (client.post(f"/v1/assets/not-an-id/playback-tokens", json={}), 404, "asset_not_found"),
        (client.post(f"/v1/assets/{public}/playback-tokens", json={}), 409, "asset_not_signed"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": 0}), 400, "expiry_out_of_range"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": -60}), 400, "expiry_out_of_range"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": 7201}), 400, "expiry_out_of_range"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": 10**12}), 400, "expiry_out_of_range"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"expires_in": "600"}), 400, "invalid_request"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"viewer_id": "v" * 256}), 400, "invalid_request"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"viewer_id": "a\nb"}), 400, "invalid_request"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"viewer_id": ""}), 400, "invalid_request"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json={"audience": "x"}), 400, "unknown_field"),
        (client.post(f"/v1/assets/{signed}/playback-tokens", json=["expires_in"]), 400, "invalid_request"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    with api.client(token=None) as anonymous:
        assert anonymous.post(f"/v1/assets/{signed}/playback-tokens").status_code == 401
        assert anonymous.patch(f"/v1/assets/{public}", json={"playback_policy": "signed"}).status_code == 401
    # Nothing changed: the public asset is still public, and a token request without a body
    # gets the default lifetime.
    assert httpx.get(f"{api.url}/assets/{public}/master.m3u8").status_code == 200
    default = client.post(f"/v1/assets/{signed}/playback-tokens")
    assert default.status_code == 201 and default.json()["data"]["expires_in"] == 3600
    # A deleted asset has no policy to change and no tokens.
    assert client.delete(f"/v1/assets/{signed}").status_code == 204
    assert client.patch(f"/v1/assets/{signed}", json={"playback_policy": "public"}).status_code == 404
    assert client.post(f"/v1/assets/{signed}/playback-tokens").json()["error"]["code"] == "asset_not_found"


def test_without_a_signing_key_nothing_becomes_signed_and_the_default_policy_applies(moto_server):
    api = start_api(make_settings())  # no PIXELFLOW_PLAYBACK_SIGNING_KEY
    try:
        with api.client() as client:
            before = api.record_count()
            refused = client.post("/v1/uploads", json={"filename": "a.mp4", "size": 10, "playback_policy": "signed"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "playback_not_configured"
            assert api.record_count() == before and api.object_keys() == []
            public = _publish(api, "videos/keyless.mp4")
            refused = client.patch(f"/v1/assets/{public}", json={"playback_policy": "signed"})
            assert refused.json()["error"]["code"] == "playback_not_configured"
            assert httpx.get(f"{api.url}/assets/{public}/master.m3u8").status_code == 200
    finally:
        api.stop()
    # PIXELFLOW_DEFAULT_PLAYBACK_POLICY=signed: assets given no policy (direct uploads) are signed.
    api = start_api(make_settings(default_playback_policy="signed", playback_signing_key=KEY))
    try:
        with api.client() as client:
            direct = _publish(api, "videos/direct-default.mp4")
            assert client.get(f"/v1/assets/{direct}").json()["data"]["playback_policy"] == "signed"
            assert httpx.get(f"{api.url}/assets/{direct}/poster.jpg").json()["error"]["code"] == \
                "playback_token_required"
            created = client.post("/v1/uploads", json={"filename": "a.mp4", "size": 10}).json()["data"]
            assert created["playback_policy"] == ["signed"]
            hls = client.post(f"/v1/assets/{direct}/playback-tokens").json()["data"]["playback"]["hls"]
            assert httpx.get(hls).status_code == 200
    finally:
        api.stop()


def test_the_reconciler_keeps_a_signed_uploads_policy(api, client, moto_server):
    """An API upload's asset recorded by the reconciler (its flow's writes lost) is still signed."""
    from pixelflow.ops.reconcile import repair_records

    created = client.post("/v1/uploads", json={"filename": "lost.mp4", "size": 9, "playback_policy": "signed"})
    upload = created.json()["data"]
    assert httpx.put(upload["url"], content=b"lost data").status_code == 200
    key = api.records.get_upload(upload["id"])["key"]
    s3 = s3_client()
    source = Upload.from_head(api.settings.upload_bucket, key, s3.head_object(Bucket=api.settings.upload_bucket, Key=key))
    for name, body in FILES.items():
        s3.put_object(Bucket=api.settings.output_bucket, Key=api.settings.layout(source.asset_id).key(name), Body=body)
    s3.put_object(Bucket=api.settings.output_bucket, Key=api.settings.layout(source.asset_id).manifest_key,
                  Body=json.dumps({"asset_id": source.asset_id, "status": "ready", "source": source.to_dict(),
                                   "renditions": [], "files": []}).encode())
    assert api.records.get_asset(source.asset_id) is None
    repair_records(api.settings, s3, api.records)
    record = api.records.get_asset(source.asset_id)
    assert (record["status"], record["playback_policy"], record["upload_id"]) == ("ready", "signed", upload["id"])
    assert httpx.get(f"{api.url}/assets/{source.asset_id}/master.m3u8").json()["error"]["code"] == \
        "playback_token_required"
