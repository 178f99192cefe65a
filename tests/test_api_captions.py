"""``POST /v1/uploads/{id}/captions`` (real uvicorn, moto S3 and DynamoDB): a presigned PUT for
the upload's sidecar; bad requests answered 4xx with their code, creating nothing; and through
the flow, the captions sent that way become the asset's subtitles, or reject it."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import httpx
import pytest

from pixelflow.aws import s3_client
from tests.api_helpers import env_for, make_settings, start_api
from tests.conftest import make_clip

pytestmark = pytest.mark.integration

GOOD = b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello from the API\n"


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings(captions_max_bytes=4096))
    yield api
    api.stop()


@pytest.fixture
def client(api):
    with api.client() as client:
        yield client


def _upload(client, filename: str = "talk.mp4", size: int = 1000) -> dict:
    created = client.post("/v1/uploads", json={"filename": filename, "size": size})
    assert created.status_code == 201, created.text
    return created.json()["data"]


def test_a_caption_url_puts_the_uploads_sidecar(api, client):
    upload = _upload(client)
    answer = client.post(f"/v1/uploads/{upload['id']}/captions", json={"language": "pt-br", "format": "srt"})
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    assert (data["language"], data["name"], data["format"], data["max_bytes"]) == ("pt-BR", "Portuguese (BR)", "srt",
                                                                                    4096)
    key = f"uploads/{upload['id']}/talk.pt-BR.srt"
    assert unquote(urlsplit(data["url"]).path) == f"/{api.settings.upload_bucket}/{key}"
    assert data["expires_at"] == upload["expires_at"]
    assert httpx.put(data["url"], content=b"1\n00:00:01,000 --> 00:00:02,000\nOi\n", timeout=30).status_code == 200
    assert s3_client().head_object(Bucket=api.settings.upload_bucket, Key=key)["ContentLength"] > 0
    # the caption file is not the video: the upload still waits for it
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "waiting"
    default = client.post(f"/v1/uploads/{upload['id']}/captions", json={"language": "en"}).json()["data"]
    assert unquote(urlsplit(default["url"]).path).endswith(f"/uploads/{upload['id']}/talk.en.vtt")


BAD_CAPTIONS = [
    ({"language": "xx"}, 400, "invalid_captions"),          # shaped like a tag, no such language
    ({"language": "en_US"}, 400, "invalid_captions"),
    ({"language": "../../x"}, 400, "invalid_captions"),
    ({"language": "english"}, 400, "invalid_captions"),
    ({"language": "en-" + "a" * 20}, 400, "invalid_request"),  # longer than any tag
    ({"language": "en", "format": "ass"}, 400, "invalid_request"),
    ({"language": "en", "name": "English"}, 400, "unknown_field"),
    ({"language": 7}, 400, "invalid_request"),
    ({}, 400, "invalid_request"),
]


@pytest.mark.parametrize("body,status,code", BAD_CAPTIONS)
def test_bad_caption_requests_are_refused_and_create_nothing(api, client, body, status, code):
    upload = _upload(client)
    before = (api.record_count(), api.object_keys())
    response = client.post(f"/v1/uploads/{upload['id']}/captions", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert response.json()["error"]["message"]
    assert (api.record_count(), api.object_keys()) == before


def test_captions_need_an_upload_that_is_waiting_or_has_its_video(api, client):
    assert client.post("/v1/uploads/0123456789abcdef01234567/captions",
                       json={"language": "en"}).json()["error"]["code"] == "upload_not_found"
    upload = _upload(client, size=10)
    assert httpx.put(upload["url"], content=b"0123456789", timeout=30).status_code == 200
    # after the video: a URL for the same sidecar, valid from now on (attached to the asset)
    late = client.post(f"/v1/uploads/{upload['id']}/captions", json={"language": "en"})
    assert late.status_code == 201, late.text
    assert unquote(urlsplit(late.json()["data"]["url"]).path).endswith(f"/uploads/{upload['id']}/talk.en.vtt")
    assert late.json()["data"]["expires_at"] >= upload["expires_at"]
    assert client.get(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "asset_created"
    cancelled = _upload(client, size=10)
    assert client.delete(f"/v1/uploads/{cancelled['id']}").status_code in (200, 204)
    refused = client.post(f"/v1/uploads/{cancelled['id']}/captions", json={"language": "en"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "upload_not_waiting"
    with api.client(token=None) as anonymous:
        assert anonymous.post(f"/v1/uploads/{upload['id']}/captions", json={"language": "en"}).status_code == 401


def _send(client, clip, captions: dict[str, bytes]) -> tuple[dict, str]:
    upload = _upload(client, size=clip.stat().st_size)
    for language, body in captions.items():
        url = client.post(f"/v1/uploads/{upload['id']}/captions", json={"language": language}).json()["data"]["url"]
        assert httpx.put(url, content=body, timeout=30).status_code == 200
    etag = httpx.put(upload["url"], content=clip.read_bytes(), timeout=60).headers["etag"]
    return upload, etag


@pytest.mark.timeout(300)
def test_captions_sent_through_the_api_play_as_subtitles(api, client, prefect_server, media_dir, monkeypatch):
    from flows.transcode import transcode

    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    clip = make_clip(media_dir / "api-captions.mp4", seconds=3, size="640x360")
    upload, etag = _send(client, clip, {"en": GOOD})
    transcode(bucket=api.settings.upload_bucket, key=f"uploads/{upload['id']}/talk.mp4", etag=etag)
    asset_id = client.get(f"/v1/uploads/{upload['id']}").json()["data"]["asset_id"]
    playback = client.get(f"/v1/assets/{asset_id}").json()["data"]["playback"]
    (subtitles,) = playback["subtitles"]
    assert (subtitles["language"], subtitles["name"], subtitles["default"]) == ("en", "English", True)
    assert f'URI="{subtitles["url"].split(asset_id + "/", 1)[1]}"' in httpx.get(playback["hls"], timeout=30).text
    assert subtitles["url"].endswith("/subtitles/en/index.m3u8")
    playlist = httpx.get(subtitles["url"], timeout=30)
    assert playlist.status_code == 200 and "captions.vtt" in playlist.text
    vtt = httpx.get(subtitles["vtt"], timeout=30)
    assert vtt.headers["content-type"].startswith("text/vtt") and "Hello from the API" in vtt.text


@pytest.mark.timeout(300)
@pytest.mark.parametrize("body,reason", [
    (b"\xff\xd8\xff\xe0" + bytes(range(256)), "not_text"),
    (b"WEBVTT\n\n" + b"00:00:01.000 --> 00:00:02.000\nwords\n\n" * 200, "too_large"),
    (b"WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nbackwards\n", "bad_timestamp"),
], ids=["not_text", "too_large", "bad_timestamp"])
def test_bad_captions_sent_through_the_api_reject_the_asset(api, client, prefect_server, media_dir, monkeypatch,
                                                             body, reason):
    from flows.transcode import transcode

    for name, value in env_for(api.settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIXELFLOW_CAPTIONS_MAX_BYTES", "4096")  # the workers' setting, as the API's
    clip = make_clip(media_dir / "api-captions.mp4", seconds=3, size="640x360")
    upload, etag = _send(client, clip, {"en": body})
    state = transcode(bucket=api.settings.upload_bucket, key=f"uploads/{upload['id']}/talk.mp4", etag=etag,
                      return_state=True)
    assert state.is_failed() and state.message.startswith("invalid_captions:")
    asset_id = client.get(f"/v1/uploads/{upload['id']}").json()["data"]["asset_id"]
    asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "errored" and asset["errors"]["code"] == "invalid_captions"
    assert asset["playback"] is None
    prefix = api.settings.layout(asset_id).prefix
    assert s3_client().list_objects_v2(Bucket=api.settings.output_bucket, Prefix=prefix)["KeyCount"] == 0
