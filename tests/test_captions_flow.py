"""Captions end to end through the real flow on a real Prefect server: sidecars uploaded beside
the video become the master playlist's subtitles group (still one decode of the source), and a
malformed sidecar rejects the upload with ``invalid_captions``, publishing nothing."""

from __future__ import annotations

import json
import time

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist, parse_media_playlist
from pixelflow.core.ids import asset_id
from pixelflow.errors import PixelFlowError
from tests.conftest import make_clip
from tests.player_helpers import TEST_LADDER

pytestmark = pytest.mark.integration

EN_VTT = b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello <b>captions</b>\n\nNOTE dropped\n\n" \
         b"00:00:02.500 --> 00:00:03.500\n<font color=red>Bye</font>\n"
FR_SRT = "1\r\n00:00:01,000 --> 00:00:02,000\r\nBonjour à tous\r\n".encode()


@pytest.fixture
def talk(media_dir, buckets, monkeypatch):
    for name, value in TEST_LADDER.items():
        monkeypatch.setenv(name, value)
    return make_clip(media_dir / "captions-talk.mp4", seconds=4, size="640x360")


def _put(bucket: str, key: str, body: bytes) -> str:
    return s3_client().put_object(Bucket=bucket, Key=key, Body=body)["ETag"]


def _ffmpeg_lines(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        for _ in range(100):  # logs reach the API in batches: wait for the run's last line
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
            if any(log.message.startswith("Finished in state") and log.task_run_id is None for log in logs):
                break
            time.sleep(0.1)
    return [log.message for log in logs if log.message.startswith("ffmpeg: ")]


def test_sidecars_become_a_subtitles_group_without_another_decode(prefect_server, buckets, talk):
    from flows.transcode import transcode

    up, out = buckets
    s3 = s3_client()
    _put(up, "talks/talk.en.vtt", EN_VTT)            # the captions first, then the video
    _put(up, "talks/talk.fr.srt", FR_SRT)
    _put(up, "talks/talk.v2.en.vtt", b"not ours")   # another video's sidecar: ignored
    # a caption file's own run (an event sent by hand) publishes nothing
    state = transcode(bucket=up, key="talks/talk.en.vtt", return_state=True)
    assert state.is_completed() and "caption file" in state.message
    assert s3.list_objects_v2(Bucket=out).get("KeyCount", 0) == 0

    s3.upload_file(str(talk), up, "talks/talk.mp4")
    etag = s3.head_object(Bucket=up, Key="talks/talk.mp4")["ETag"]
    manifest = transcode(bucket=up, key="talks/talk.mp4", etag=etag)
    prefix = f"assets/{asset_id(up, 'talks/talk.mp4', etag)}/"
    run = manifest["folder"]  # the attempt's folder: the captions are published with the rest of it

    def text(name: str) -> str:
        return s3.get_object(Bucket=out, Key=prefix + name)["Body"].read().decode()

    master = text("master.m3u8")
    assert ('#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,AUTOSELECT=YES,'
            f'URI="{run}/subtitles/en/index.m3u8"') in master
    assert f'LANGUAGE="fr",NAME="French",DEFAULT=NO,AUTOSELECT=YES,URI="{run}/subtitles/fr/index.m3u8"' in master
    variants = parse_master_playlist(master)
    assert len(variants) == 1 and all(v["SUBTITLES"] == "subs" for v in variants)
    for language in ("en", "fr"):
        playlist = parse_media_playlist(text(f"{run}/subtitles/{language}/index.m3u8"))
        assert playlist.segments == [("captions.vtt", pytest.approx(manifest["duration"], abs=0.001))]
        head = s3.head_object(Bucket=out, Key=f"{prefix}{run}/subtitles/{language}/captions.vtt")
        assert head["ContentType"] == "text/vtt; charset=utf-8"
    assert text(f"{run}/subtitles/en/captions.vtt") == (
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n00:00:00.500 --> 00:00:02.000\nHello <b>captions</b>\n\n"
        "00:00:02.500 --> 00:00:03.500\nBye\n")
    assert text(f"{run}/subtitles/fr/captions.vtt").endswith("00:00:01.000 --> 00:00:02.000\nBonjour à tous\n")
    stored = json.loads(text("manifest.json"))
    assert [(s["language"], s["name"], s["default"], s["source_key"]) for s in stored["subtitles"]] == [
        ("en", "English", True, "talks/talk.en.vtt"), ("fr", "French", False, "talks/talk.fr.srt")]
    assert stored["subtitles"][0]["size"] == len(text(f"{run}/subtitles/en/captions.vtt").encode())

    # Captions add no FFmpeg process: one decode made every rung, the audio, poster and storyboard.
    started = _ffmpeg_lines(manifest["flow_run_id"])
    decodes = [line for line in started if "-c copy" not in line]
    assert len(decodes) == 1 and "poster.jpg" in decodes[0], started


BAD_SIDECARS = [
    ("talks/talk.en.vtt", bytes(range(256)) * 4, "not_text"),
    ("talks/talk.en.vtt", b"WEBVTT\n\n" + b"00:00:01.000 --> 00:00:02.000\nwords\n\n" * 100, "too_large"),
    ("talks/talk.en.srt", b"1\n00:00:01,000 --> 00:00:0,500\nbroken\n", "bad_timestamp"),
    ("talks/talk.xx.vtt", b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nwhich language?\n", "unknown_language"),
]


@pytest.mark.parametrize("key,body,reason", BAD_SIDECARS, ids=[case[2] for case in BAD_SIDECARS])
def test_a_malformed_sidecar_rejects_the_upload_and_publishes_nothing(prefect_server, buckets, talk, monkeypatch,
                                                                      key, body, reason):
    from flows.transcode import transcode

    monkeypatch.setenv("PIXELFLOW_CAPTIONS_MAX_BYTES", "2000")
    up, out = buckets
    s3 = s3_client()
    _put(up, "talks/talk.fr.vtt", b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nbien\n")  # a good one besides
    _put(up, key, body)
    s3.upload_file(str(talk), up, "talks/talk.mp4")
    etag = s3.head_object(Bucket=up, Key="talks/talk.mp4")["ETag"]

    with pytest.raises(PixelFlowError) as caught:
        transcode(bucket=up, key="talks/talk.mp4", etag=etag)
    assert caught.value.code.value == "invalid_captions" and caught.value.details["reason"] == reason
    assert caught.value.details["file"] == key.rsplit("/", 1)[-1]
    aid = asset_id(up, "talks/talk.mp4", etag)
    # nothing published: the output bucket holds the rejection record alone, where uploaders cannot write
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=out).get("Contents", [])] == [f"records/{aid}/error.json"]
    record = json.loads(s3.get_object(Bucket=out, Key=f"records/{aid}/error.json")["Body"].read())
    assert record["code"] == "invalid_captions" and record["status"] == "rejected"
    # nothing is lost: the video and its caption files stay where they were uploaded
    for kept in ("talks/talk.mp4", key, "talks/talk.fr.vtt"):
        assert s3.head_object(Bucket=up, Key=kept)["ContentLength"] > 0
