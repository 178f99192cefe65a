"""The API keeps CloudFront's playback key-value store up to date: the signing key at start-up
(written once), each asset's policy when it is set or a token of it is issued.

moto serves CloudFront's control plane but not the key-value store's data plane
(``cloudfront-keyvaluestore``), so a small stand-in HTTP server answers its three operations here
(DescribeKeyValueStore, GetKey, PutKey with ``If-Match``, 409 for a stale ETag) as the API
reference describes them; boto3 signs the requests as for AWS (SigV4A, through awscrt)."""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from pixelflow.ops.playback_cdn import SIGNING_KEY
from tests.api_helpers import make_settings, start_api
from tests.test_api_playback import _publish

pytestmark = pytest.mark.integration

ARN = "arn:aws:cloudfront::123456789012:key-value-store/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
KEY = "cdn-signing-key-" + "c" * 30


class StandInStore(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.items: dict[str, str] = {}
        self.version = 1
        self.requests: list[tuple[str, str, str]] = []  # (method, key, Authorization scheme)
        self.conflicts = 0  # answer this many PutKeys 409, as when another writer got there first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInStore

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _answer(self, status: int, body: dict, error: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f"v{self.server.version}")
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, str | None]:
        # Reached as the client's proxy: the request line holds the store's whole URL, whose host
        # (<account>.cloudfront-kvs...) is never resolved here.
        url = urlsplit(self.path)
        assert url.hostname.startswith("123456789012."), self.path  # the account's endpoint, as on AWS
        match = re.fullmatch(r"/key-value-stores/([^/]+)(?:/keys/([^/]+))?", url.path)
        assert match and unquote(match[1]) == ARN, self.path
        key = unquote(match[2]) if match[2] else None
        self.server.requests.append((self.command, key or "", self.headers.get("Authorization", "").split(" ")[0]))
        return unquote(match[1]), key

    def do_GET(self):  # noqa: N802
        _, key = self._route()
        store = self.server
        if key is None:
            return self._answer(200, {"KvsARN": ARN, "ItemCount": len(store.items), "TotalSizeInBytes": 0,
                                      "Created": 0, "Status": "READY"})
        if key not in store.items:
            return self._answer(404, {"Message": "no such key"}, "ResourceNotFoundException")
        self._answer(200, {"Key": key, "Value": store.items[key], "ItemCount": len(store.items), "TotalSizeInBytes": 0})

    def _conflict(self) -> bool:
        store = self.server
        if store.conflicts or self.headers.get("If-Match") != f"v{store.version}":
            store.conflicts = max(0, store.conflicts - 1)
            store.version += 1
            self._answer(409, {"Message": "ETag mismatch"}, "ConflictException")
            return True
        return False

    def do_PUT(self):  # noqa: N802
        _, key = self._route()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._conflict():
            return
        self.server.items[key] = body["Value"]
        self.server.version += 1
        self._answer(200, {"ItemCount": len(self.server.items), "TotalSizeInBytes": 0})

    def do_DELETE(self):  # noqa: N802
        _, key = self._route()
        if key not in self.server.items:
            return self._answer(404, {"Message": "no such key"}, "ResourceNotFoundException")
        if self._conflict():
            return
        del self.server.items[key]
        self.server.version += 1
        self._answer(200, {"ItemCount": len(self.server.items), "TotalSizeInBytes": 0})


@pytest.fixture
def store():
    server = StandInStore()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _client(store: StandInStore):
    """boto3's client of the store's data plane, as the API makes it, through the stand-in."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudfront-keyvaluestore", region_name="us-east-1", endpoint_url="http://kvs.invalid",
                        config=Config(proxies={"http": store.url}, retries={"max_attempts": 1}))


def test_the_api_keeps_the_signing_key_and_each_signed_asset_in_the_store(store, moto_server, caplog):
    caplog.set_level(logging.INFO)  # what `pixelflow api` logs (botocore's DEBUG log prints request bodies)
    settings = make_settings(playback_signing_key=KEY, playback_kvs_arn=ARN)
    api = start_api(settings, kvs=_client(store))
    try:
        assert store.items == {SIGNING_KEY: KEY}
        # Requests are signed as for AWS: SigV4A (the store's data plane accepts nothing else).
        assert {scheme for _, _, scheme in store.requests} == {"AWS4-ECDSA-P256-SHA256"}
        asset = _publish(api, "videos/cdn.mp4")
        store.conflicts = 1  # another writer changes the store between our describe and our put
        with api.client() as client:
            changed = client.patch(f"/v1/assets/{asset}", json={"playback_policy": "signed"})
            assert changed.status_code == 200, changed.text
            assert store.items[asset] == "signed"
            issued = client.post(f"/v1/assets/{asset}/playback-tokens")
            assert issued.status_code == 201
            assert issued.json()["data"]["playback"]["hls"].startswith(f"{api.url}/t/")
            assert client.patch(f"/v1/assets/{asset}", json={"playback_policy": "public"}).status_code == 200
            assert asset not in store.items  # the default policy (public): the store keeps only the others
            assert httpx.get(f"{api.url}/assets/{asset}/master.m3u8").status_code == 200
    finally:
        api.stop()
    # A second start-up finds the key in place and writes nothing.
    puts = [r for r in store.requests if r[0] == "PUT"]
    api = start_api(settings, kvs=_client(store))
    api.stop()
    assert [r for r in store.requests if r[0] == "PUT"] == puts and (("PUT", SIGNING_KEY) in {r[:2] for r in puts})
    assert caplog.records and KEY not in caplog.text  # the signing key is never logged


def test_the_records_stream_brings_every_recorded_policy_to_the_store(store, moto_server, monkeypatch):
    """What the stack's playback sync function does with the records table's stream (moto's real
    stream records): the transcode flow's first write of an asset uploaded as signed reaches the
    store before the asset is published; a policy written again unchanged writes nothing."""
    import boto3

    from pixelflow.ops import lambda_handlers
    from pixelflow.ops.playback_cdn import CdnPlaybackStore
    from pixelflow.records import PREPARING, record_asset_state

    settings = make_settings(playback_signing_key=KEY, playback_kvs_arn=ARN)
    dynamodb = boto3.client("dynamodb")
    described = dynamodb.update_table(TableName=settings.records_table, StreamSpecification={
        "StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})  # as the template's RecordsTable
    stream_arn = described["TableDescription"]["LatestStreamArn"]
    api = start_api(settings, kvs=_client(store))
    try:
        with api.client() as client:
            upload = client.post("/v1/uploads", json={"filename": "s.mp4", "size": 8,
                                                      "playback_policy": "signed"}).json()["data"]
        assert httpx.put(upload["url"], content=b"8 bytes!").status_code == 200
        from pixelflow.core.upload import Upload

        key = api.records.get_upload(upload["id"])["key"]
        s3 = boto3.client("s3")
        source = Upload.from_head(settings.upload_bucket, key, s3.head_object(Bucket=settings.upload_bucket, Key=key))
        record_asset_state(settings, source, PREPARING, progress=0, records=api.records)  # the flow's first write
        record_asset_state(settings, source, PREPARING, progress=50, records=api.records)
        public = _publish(api, "videos/stream-public.mp4")
        api.records.set_playback_policy(public, "public")
    finally:
        api.stop()

    streams = boto3.client("dynamodbstreams")

    def stream_records() -> list[dict]:
        records = []
        for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard["ShardId"],
                                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            records += streams.get_records(ShardIterator=iterator)["Records"]
        return records

    batch = stream_records()
    assert source.asset_id not in store.items
    monkeypatch.setattr(lambda_handlers, "_playback_store", CdnPlaybackStore(ARN, _client(store)))
    answer = lambda_handlers.playback_sync_handler({"Records": batch})
    assert store.items == {SIGNING_KEY: KEY, source.asset_id: "signed"}  # the public one is the default
    assert answer == {"written": 2}  # the upload's records and the unchanged rewrites wrote nothing
    # A deleted asset leaves the store.
    api.records.tombstone_asset(source.asset_id)
    answer = lambda_handlers.playback_sync_handler({"Records": stream_records()[len(batch):]})
    assert store.items == {SIGNING_KEY: KEY} and answer == {"written": 1}

