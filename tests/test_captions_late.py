"""Caption files sent after their video, through the real flows on a real Prefect server, the
real API, records table, webhook dispatcher and receiver: a talk published without captions gains
a subtitles rendition per language sent later (through the API, and as a sidecar put straight in
the upload bucket), each change one ``video.asset.updated``; a malformed one is refused with
``invalid_captions``, leaving the asset as it was; a caption file sent while the video's run is
going is never lost; and none of it starts a transcode."""

from __future__ import annotations

import json

import httpx
import pytest
from prefect import task

from pixelflow import webhooks
from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist
from pixelflow.core.s3events import CAPTIONS_CREATED, S3Record
from pixelflow.errors import PixelFlowError
from pixelflow.local.processes import stop_process
from pixelflow.outbox import Outbox
from pixelflow.pipeline.bridge import build_event, skip_reason
from tests.api_helpers import start_api
from tests.conftest import make_clip
from tests.events_helpers import wait_for
from tests.player_helpers import TEST_LADDER
from tests.webhook_helpers import Receiver, start_dispatcher, webhook_env, webhook_settings

pytestmark = pytest.mark.integration

EN = b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello, later\n"
FR = "1\n00:00:01,000 --> 00:00:02,000\nBonjour plus tard\n".encode()
BROKEN = b"WEBVTT\n\n00:00:02.000 --> 00:00:01.000\nbackwards\n"


def _flow_runs(flow_name: str, prefix: str) -> list:
    """The runs of flow ``flow_name`` whose name starts with ``prefix``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), limit=200)
    return [run for run in runs if run.name.startswith(prefix)]


def _text(bucket: str, key: str) -> str:
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()


@pytest.fixture
def put_video(prefect_server, buckets, media_dir, monkeypatch):
    """Fresh buckets, the tests' quick ladder, and a function putting a 3 s talk ``talks/<name>.mp4``
    into the upload bucket (its key)."""
    for name, value in TEST_LADDER.items():
        monkeypatch.setenv(name, value)

    def put(name: str) -> str:
        clip = make_clip(media_dir / f"late-captions-{name}.mp4", seconds=3, size="640x360")
        s3_client().upload_file(str(clip), buckets[0], f"talks/{name}.mp4")
        return f"talks/{name}.mp4"

    return put


@pytest.mark.timeout(500)
def test_captions_sent_after_the_video_are_attached_to_its_asset(moto_server, prefect_server, media_dir, monkeypatch,
                                                                  tmp_path):
    from flows.captions import attach_captions_flow
    from flows.transcode import transcode

    settings = webhook_settings(captions_max_bytes=4096)
    for name, value in {**webhook_env(settings), **TEST_LADDER}.items():
        monkeypatch.setenv(name, value)
    api = start_api(settings)
    receiver = Receiver()
    dispatcher = start_dispatcher(settings, tmp_path)
    up, out = settings.upload_bucket, settings.output_bucket
    try:
        with api.client() as client:
            endpoint = client.post("/v1/webhooks", json={"url": receiver.url}).json()["data"]
            clip = make_clip(media_dir / "late-captions.mp4", seconds=3, size="640x360")
            upload = client.post("/v1/uploads", json={"filename": "talk.mp4", "size": clip.stat().st_size}).json()["data"]
            etag = httpx.put(upload["url"], content=clip.read_bytes(), timeout=60).headers["etag"]
            video = f"uploads/{upload['id']}/talk.mp4"
            manifest = transcode(bucket=up, key=video, etag=etag)   # published without captions
            asset_id, prefix = manifest["asset_id"], f"assets/{manifest['asset_id']}/"
            assert "subtitles" not in manifest and "SUBTITLES" not in _text(out, prefix + "master.m3u8")

            # English through the API, after the video: a URL for the upload's sidecar, then the
            # flow its caption event starts (the bridge makes it a captions event, not an upload).
            answer = client.post(f"/v1/uploads/{upload['id']}/captions", json={"language": "en"})
            assert answer.status_code == 201, answer.text
            assert httpx.put(answer.json()["data"]["url"], content=EN, timeout=30).status_code == 200
            en_key = f"uploads/{upload['id']}/talk.en.vtt"
            record = S3Record("ObjectCreated:Put", up, en_key, etag="e", sequencer="01")
            assert skip_reason(record, settings) is None and build_event(record)["event"] == CAPTIONS_CREATED
            result = attach_captions_flow(bucket=up, key=en_key)
            assert result["status"] == "attached" and result["assets"][0]["attached"] == ["en"]

            master = _text(out, prefix + "master.m3u8")
            (entry,) = json.loads(_text(out, prefix + "manifest.json"))["subtitles"]
            assert (f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,'
                    f'AUTOSELECT=YES,URI="{entry["playlist"]}"') in master
            assert all(v["SUBTITLES"] == "subs" for v in parse_master_playlist(master))
            assert not entry["playlist"].startswith(manifest["folder"])   # written by the attach, in its own folder
            asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
            assert asset["status"] == "ready" and asset["errors"] is None
            (subtitles,) = asset["playback"]["subtitles"]
            assert (subtitles["language"], subtitles["default"]) == ("en", True)
            served = httpx.get(subtitles["vtt"], timeout=30)
            assert served.status_code == 200 and served.headers["content-type"].startswith("text/vtt")
            assert "Hello, later" in served.text
            assert httpx.get(asset["playback"]["hls"], timeout=30).text == master
            # the same caption event again (a redelivery, a retry) changes nothing
            assert attach_captions_flow(bucket=up, key=en_key)["status"] == "unchanged"

            def delivered(kind: str) -> list:
                return [d for d in Outbox(settings).list_deliveries(50, endpoint["id"])
                        if d["type"] == kind and d["status"] == "delivered"]

            wait_for(lambda: delivered(webhooks.ASSET_UPDATED), timeout=60, what="video.asset.updated delivered")
            (updated,) = [json.loads(r.body) for r in receiver.requests
                          if json.loads(r.body)["type"] == webhooks.ASSET_UPDATED]
            assert updated["data"]["id"] == asset_id and updated["data"]["status"] == "ready"
            assert [s["language"] for s in updated["data"]["playback"]["subtitles"]] == ["en"]

            # French later, as a sidecar put straight into the bucket: English stays the default.
            s3_client().put_object(Bucket=up, Key=f"uploads/{upload['id']}/talk.fr.srt", Body=FR)
            assert attach_captions_flow(bucket=up, key=f"uploads/{upload['id']}/talk.fr.srt")["status"] == "attached"
            master = _text(out, prefix + "master.m3u8")
            assert 'LANGUAGE="en",NAME="English",DEFAULT=YES' in master
            assert 'LANGUAGE="fr",NAME="French",DEFAULT=NO' in master
            asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
            assert [s["language"] for s in asset["playback"]["subtitles"]] == ["en", "fr"]
            assert "Bonjour plus tard" in httpx.get(asset["playback"]["subtitles"][1]["vtt"], timeout=30).text
            wait_for(lambda: len(delivered(webhooks.ASSET_UPDATED)) == 2, timeout=60, what="second update")

            # A malformed one: refused with its code, the asset as it was and still playable.
            before = {name: _text(out, prefix + name) for name in ("manifest.json", "master.m3u8")}
            broken_key = f"uploads/{upload['id']}/talk.de.vtt"
            s3_client().put_object(Bucket=up, Key=broken_key, Body=BROKEN)
            with pytest.raises(PixelFlowError) as refused:
                attach_captions_flow(bucket=up, key=broken_key)
            assert refused.value.code.value == "invalid_captions"
            assert (refused.value.details["reason"], refused.value.details["file"]) == ("bad_timestamp", "talk.de.vtt")
            assert {name: _text(out, prefix + name) for name in before} == before
            asset = client.get(f"/v1/assets/{asset_id}").json()["data"]
            assert asset["status"] == "ready" and asset["errors"]["code"] == "invalid_captions"
            assert "talk.de.vtt" in asset["errors"]["message"]
            assert [s["language"] for s in asset["playback"]["subtitles"]] == ["en", "fr"]
            for variant in parse_master_playlist(before["master.m3u8"]):
                assert httpx.get(f"{asset['playback']['hls'].rsplit('/', 1)[0]}/{variant['URI']}",
                                 timeout=30).status_code == 200
            wait_for(lambda: len(delivered(webhooks.ASSET_UPDATED)) == 3, timeout=60, what="the refusal's update")
            refusal = [json.loads(r.body) for r in receiver.requests
                       if json.loads(r.body)["type"] == webhooks.ASSET_UPDATED][-1]
            assert refusal["data"]["errors"]["code"] == "invalid_captions"

        # Every event once, in order; the captions made no second ready event and no transcode:
        # the one transcode run is the video's.
        events = [t for t, _ in dict.fromkeys(receiver.events())]
        assert events == [webhooks.UPLOAD_CREATED, webhooks.UPLOAD_ASSET_CREATED, webhooks.ASSET_CREATED,
                          webhooks.ASSET_READY, webhooks.ASSET_UPDATED, webhooks.ASSET_UPDATED,
                          webhooks.ASSET_UPDATED]
        assert len(receiver.events()) == len(set(receiver.events()))
        assert [run.name for run in _flow_runs("transcode", f"transcode: uploads/{upload['id']}/")] == \
            [f"transcode: {video}"]
        assert len(_flow_runs("attach-captions", f"attach-captions: uploads/{upload['id']}/")) == 4
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()


@pytest.mark.timeout(300)
def test_a_caption_sent_while_the_video_runs_is_in_its_first_publication_or_attached_right_after(
        buckets, put_video, monkeypatch):
    import flows.transcode
    from flows.captions import attach_captions_flow
    from tasks.captions import read_captions

    (up, out), s3 = buckets, s3_client()
    s3.put_object(Bucket=up, Key="talks/run.en.vtt", Body=EN)   # before the video: read by its run
    put_video("run")
    seen = {}

    @task(name="captions")
    def captions_then_a_late_file(*args, **kwargs):
        """The run reads its sidecars; French arrives right after, its own flow finding no asset yet."""
        read = read_captions.fn(*args, **kwargs)
        s3.put_object(Bucket=up, Key="talks/run.fr.srt", Body=FR)
        seen["attach"] = attach_captions_flow(bucket=up, key="talks/run.fr.srt")
        return read

    monkeypatch.setattr(flows.transcode, "read_captions", captions_then_a_late_file)
    manifest = flows.transcode.transcode(bucket=up, key="talks/run.mp4")
    assert seen["attach"]["assets"][0]["status"] == "not_published"
    # the run attached it right after its manifest: both languages, English (read first) the default
    assert [(s["language"], s["default"]) for s in manifest["subtitles"]] == [("en", True), ("fr", False)]
    master = _text(out, f"assets/{manifest['asset_id']}/master.m3u8")
    assert 'LANGUAGE="en",NAME="English",DEFAULT=YES' in master and 'LANGUAGE="fr",NAME="French"' in master
    stored = json.loads(_text(out, f"assets/{manifest['asset_id']}/manifest.json"))
    assert stored["subtitles"] == manifest["subtitles"] and stored["flow_run_id"] == manifest["flow_run_id"]
    # a later run of the upload (a duplicate event) attaches nothing twice, and attaches a caption
    # file whose own attach never ran (its event lost)
    assert flows.transcode.transcode(bucket=up, key="talks/run.mp4")["subtitles"] == manifest["subtitles"]
    s3.put_object(Bucket=up, Key="talks/run.es.vtt", Body=EN)
    again = flows.transcode.transcode(bucket=up, key="talks/run.mp4")
    assert [s["language"] for s in again["subtitles"]] == ["en", "fr", "es"]
    assert again["subtitles"][:2] == manifest["subtitles"]


@pytest.mark.timeout(300)
def test_two_attaches_racing_keep_each_others_captions_and_a_language_sent_again_replaces_it(
        buckets, put_video, monkeypatch):
    import tasks.captions
    from flows.captions import attach_captions_flow
    from flows.transcode import transcode
    from pixelflow.core.layout import manifest_objects
    from pixelflow.core.manifest import master_from_manifest

    (up, out), s3 = buckets, s3_client()
    prefix = f"assets/{transcode(bucket=up, key=put_video('race'))['asset_id']}/"
    s3.put_object(Bucket=up, Key="talks/race.en.vtt", Body=EN)

    def racing(before, name: str, body: bytes) -> list:
        """S3 as the attaches see it, except that right before the first write ``before(kwargs)``
        picks, caption file ``name`` arrives and its own attach runs whole. Returns what the
        race saw: the key being written, then that attach's result."""
        raced = []

        class Racing:
            def __init__(self, client):
                self._client = client

            def __getattr__(self, attribute):
                return getattr(self._client, attribute)

            def put_object(self, **kwargs):
                if before(kwargs) and not raced:
                    raced.append(kwargs["Key"])
                    s3.put_object(Bucket=up, Key=f"talks/{name}", Body=body)
                    raced.append(attach_captions_flow(bucket=up, key=f"talks/{name}"))
                return self._client.put_object(**kwargs)

        monkeypatch.setattr(tasks.captions, "s3_client", lambda: Racing(real()))
        return raced

    real = tasks.captions.s3_client
    # French arrives while the English attach is about to replace the manifest, and wins
    raced = racing(lambda put: "IfMatch" in put, "race.fr.srt", FR)
    first = attach_captions_flow(bucket=up, key="talks/race.en.vtt")
    assert raced[0] == f"{prefix}manifest.json" and raced[1]["status"] == "attached"
    # the attach that lost the manifest's race read it again: nothing was left to attach
    assert first["status"] == "unchanged"
    manifest = json.loads(_text(out, prefix + "manifest.json"))
    assert [(s["language"], s["default"]) for s in manifest["subtitles"]] == [("en", True), ("fr", False)]
    master = _text(out, prefix + "master.m3u8")
    assert 'LANGUAGE="en"' in master and 'LANGUAGE="fr"' in master
    # ... and removed what it wrote: the asset holds exactly what its manifest names
    listed = {o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=out, Prefix=prefix)["Contents"]}
    assert listed == set(manifest_objects(manifest)) | {"manifest.json"}

    # Italian arrives after the German attach replaced the manifest and before it writes the master
    # playlist; Italian's attach writes its own first: German's then writes Italian's manifest's too
    s3.put_object(Bucket=up, Key="talks/race.de.vtt", Body=EN)
    raced = racing(lambda put: put["Key"].endswith("/master.m3u8"), "race.it.vtt", EN)
    assert attach_captions_flow(bucket=up, key="talks/race.de.vtt")["status"] == "attached"
    assert raced[1]["status"] == "attached"
    monkeypatch.setattr(tasks.captions, "s3_client", real)
    manifest = json.loads(_text(out, prefix + "manifest.json"))
    assert [s["language"] for s in manifest["subtitles"]] == ["en", "fr", "de", "it"]
    assert _text(out, prefix + "master.m3u8") == master_from_manifest(manifest)

    # English sent again, corrected: it replaces English (still the default), the others are kept
    s3.put_object(Bucket=up, Key="talks/race.en.vtt", Body=EN.replace(b"Hello, later", b"Hello, corrected"))
    assert attach_captions_flow(bucket=up, key="talks/race.en.vtt")["assets"][0]["attached"] == ["en"]
    replaced = json.loads(_text(out, prefix + "manifest.json"))
    assert [(s["language"], s["default"]) for s in replaced["subtitles"]] == [
        ("en", True), ("fr", False), ("de", False), ("it", False)]
    assert replaced["subtitles"][1:] == manifest["subtitles"][1:]
    assert "Hello, corrected" in _text(out, prefix + replaced["subtitles"][0]["file"])
    # every object the earlier manifest named is still there, unchanged (only it and the master change)
    named = {path: size for path, size in manifest_objects(manifest).items() if path != "master.m3u8"}
    assert {path: s3.head_object(Bucket=out, Key=prefix + path)["ContentLength"] for path in named} == named
