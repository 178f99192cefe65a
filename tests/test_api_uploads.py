"""Direct uploads through the API (real uvicorn, moto S3 and DynamoDB over HTTP): one presigned
PUT for small files, resumable multipart for large ones, cancel, expiry, and every bad input
answered 4xx with its code while nothing is created or changed."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from pixelflow.core.upload import Upload
from tests.api_helpers import MiB, make_settings, start_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings(max_source_bytes=200 * MiB))
    yield api
    api.stop()


@pytest.fixture
def client(api):
    with api.client() as client:
        yield client


def _put(url: str, data: bytes) -> httpx.Response:
    response = httpx.put(url, content=data, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_small_upload_is_one_presigned_put_and_becomes_an_asset(api, client):
    body = b"not really a video, but bytes " * 100
    created = client.post("/v1/uploads", json={"filename": "talk.mp4", "size": len(body), "passthrough": "app-42"})
    assert created.status_code == 201, created.text
    upload = created.json()["data"]
    assert upload["status"] == "waiting" and upload["multipart"] is None and upload["passthrough"] == "app-42"
    assert upload["expires_at"] > upload["created_at"]
    # The URL allows one key (the upload's), expires after the setting, and carries no secret.
    url = urlsplit(upload["url"])
    key = f"uploads/{upload['id']}/talk.mp4"
    assert unquote(url.path) == f"/{api.settings.upload_bucket}/{key}"
    query = parse_qs(url.query)
    assert 3500 < int(query["X-Amz-Expires"][0]) <= api.settings.presign_expiry_seconds
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-SignedHeaders"] == ["host"]
    assert set(query) == {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                          "X-Amz-SignedHeaders", "X-Amz-Signature"}  # a signature, never a credential's secret

    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "waiting"
    etag = _put(upload["url"], body).headers["etag"]

    done = client.get(f"/v1/uploads/{upload['id']}").json()["data"]
    expected = Upload(api.settings.upload_bucket, key, etag).asset_id
    assert done["status"] == "asset_created" and done["asset_id"] == expected and done["url"] is None
    asset = client.get(f"/v1/assets/{expected}").json()["data"]
    assert asset["status"] == "preparing" and asset["progress"] == 0
    assert asset["passthrough"] == "app-42" and asset["upload_id"] == upload["id"] and asset["playback"] is None


def test_large_upload_resumes_from_the_parts_received(api, client):
    data = os.urandom(11 * MiB)  # parts of 5 MiB: 5 + 5 + 1
    upload = client.post("/v1/uploads", json={"filename": "big.mov", "size": len(data)}).json()["data"]
    multipart = upload["multipart"]
    assert upload["url"] is None and multipart["part_size"] == 5 * MiB and multipart["part_count"] == 3
    assert [p["size"] for p in multipart["parts"]] == [5 * MiB, 5 * MiB, 1 * MiB]
    assert multipart["complete_url"] == f"{api.url}/v1/uploads/{upload['id']}/complete"
    first = _put(multipart["parts"][0]["url"], data[:5 * MiB]).headers["etag"]

    # Interrupted here. A client that comes back asks what S3 already has and sends the rest.
    resumed = client.get(f"/v1/uploads/{upload['id']}").json()["data"]
    assert resumed["status"] == "waiting"
    assert resumed["parts_received"] == [{"part_number": 1, "size": 5 * MiB, "etag": first.strip('"')}]
    assert [p["url"] is None for p in resumed["multipart"]["parts"]] == [True, False, False]
    too_early = client.post(f"/v1/uploads/{upload['id']}/complete")
    assert too_early.status_code == 409 and too_early.json()["error"]["code"] == "parts_missing"
    assert too_early.json()["error"]["details"]["missing"] == [2, 3]
    etags = {1: first}
    for part in resumed["multipart"]["parts"][1:]:
        start = (part["part_number"] - 1) * 5 * MiB
        etags[part["part_number"]] = _put(part["url"], data[start:start + part["size"]]).headers["etag"]

    wrong = client.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": [
        {"part_number": n, "etag": "0" * 32 if n == 2 else etags[n]} for n in (1, 2, 3)]})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "etag_mismatch"
    assert wrong.json()["error"]["details"]["parts"] == [2]
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "waiting"
    assert api.multipart_uploads().count(f"uploads/{upload['id']}/big.mov") == 1

    done = client.post(f"/v1/uploads/{upload['id']}/complete",
                       json={"parts": [{"part_number": n, "etag": e} for n, e in etags.items()]})
    assert done.status_code == 200, done.text
    assert done.json()["data"]["status"] == "asset_created" and done.json()["data"]["asset_id"]
    from pixelflow.aws import s3_client

    stored = s3_client().get_object(Bucket=api.settings.upload_bucket, Key=f"uploads/{upload['id']}/big.mov")
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(data).digest()
    again = client.post(f"/v1/uploads/{upload['id']}/complete")
    assert again.status_code == 409 and again.json()["error"]["code"] == "upload_not_waiting"


BAD_CREATES = [
    ({"filename": "a.mp4", "size": 201 * MiB}, 413, "too_large"),
    ({"filename": "a.mp4", "size": 10, "passthrough": "x" * 256}, 400, "passthrough_too_long"),
    ({"filename": "a.mp4", "size": 10, "colour": "red"}, 400, "unknown_field"),
    ({"filename": "videos/a.mp4", "size": 10}, 400, "invalid_filename"),
    ({"filename": "..", "size": 10}, 400, "invalid_filename"),
    ({"filename": "a\\b.mp4", "size": 10}, 400, "invalid_filename"),
    ({"filename": "a\n.mp4", "size": 10}, 400, "invalid_filename"),
    ({"filename": "a.mp4", "size": "10"}, 400, "invalid_request"),
    ({"filename": "a.mp4", "size": 0}, 400, "empty_file"),
    ({"filename": "a.mp4"}, 400, "invalid_request"),
    ({"filename": "a.mp4", "size": 10, "playback_policy": "private"}, 400, "invalid_request"),
    ({"filename": "a.mp4", "size": 10, "playback_policy": ["public", "signed"]}, 400, "invalid_request"),
    ({"filename": "a.mp4", "size": 10, "playback_policy": []}, 400, "invalid_request"),
    (["a.mp4", 10], 400, "invalid_request"),
    ("a.mp4", 400, "invalid_request"),
]


@pytest.mark.parametrize("body,status,code", BAD_CREATES)
def test_bad_upload_requests_are_refused_and_create_nothing(api, client, body, status, code):
    before = (api.record_count(), api.multipart_uploads(), api.object_keys())
    response = client.post("/v1/uploads", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert response.json()["error"]["message"]
    assert (api.record_count(), api.multipart_uploads(), api.object_keys()) == before


def test_a_body_that_is_not_json_is_refused(api, client):
    count = api.record_count()
    response = client.post("/v1/uploads", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert api.record_count() == count


def test_part_numbers_out_of_range_and_unknown_uploads(api, client):
    upload = client.post("/v1/uploads", json={"filename": "p.mp4", "size": 7 * MiB}).json()["data"]
    for number in (0, 3, 10001):
        response = client.get(f"/v1/uploads/{upload['id']}/parts/{number}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "part_out_of_range"
    fresh = client.get(f"/v1/uploads/{upload['id']}/parts/2").json()["data"]
    assert fresh["part_number"] == 2 and fresh["size"] == 2 * MiB and "partNumber=2" in fresh["url"]
    response = client.post(f"/v1/uploads/{upload['id']}/complete", json={"parts": [{"part_number": 9, "etag": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "part_out_of_range"
    response = client.post(f"/v1/uploads/{upload['id']}/complete", json=[1, 2])
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "waiting"

    small = client.post("/v1/uploads", json={"filename": "s.mp4", "size": 5}).json()["data"]
    for response in (client.get(f"/v1/uploads/{small['id']}/parts/1"), client.post(f"/v1/uploads/{small['id']}/complete")):
        assert response.status_code == 400 and response.json()["error"]["code"] == "not_multipart"
    for upload_id in ("0123456789abcdef01234567", "not-an-id", "0123456789ABCDEF01234567"):
        for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/complete"), ("GET", "/parts/1")):
            response = client.request(method, f"/v1/uploads/{upload_id}{path}")
            assert (response.status_code, response.json()["error"]["code"]) == (404, "upload_not_found"), \
                (method, path, response.text)
    response = client.get(f"/v1/uploads/{upload['id']}/parts/first")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_cancel_aborts_the_multipart_upload(api, client):
    upload = client.post("/v1/uploads", json={"filename": "c.mp4", "size": 7 * MiB}).json()["data"]
    _put(upload["multipart"]["parts"][0]["url"], os.urandom(5 * MiB))
    key = f"uploads/{upload['id']}/c.mp4"
    assert key in api.multipart_uploads()
    cancelled = client.delete(f"/v1/uploads/{upload['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
    assert key not in api.multipart_uploads() and key not in api.object_keys()
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "cancelled"
    assert client.delete(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "cancelled"
    refused = client.get(f"/v1/uploads/{upload['id']}/parts/2")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "upload_not_waiting"


def test_an_expired_upload_times_out_and_refuses_completion(api, client):
    upload = client.post("/v1/uploads", json={"filename": "e.mp4", "size": 7 * MiB}).json()["data"]
    api.records.update_upload(upload["id"], {"expires_epoch": 1})  # as if its hour had passed
    response = client.post(f"/v1/uploads/{upload['id']}/complete")
    assert response.status_code == 410 and response.json()["error"]["code"] == "upload_expired"
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "timed_out"
    assert f"uploads/{upload['id']}/e.mp4" not in api.multipart_uploads()
