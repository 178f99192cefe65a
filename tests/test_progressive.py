"""Progressive publication (``PIXELFLOW_PROGRESSIVE``, docs/chunks.md): a chunked asset plays
before its run ends, from EVENT playlists that only grow and are closed at the end; a source
found damaged after it became playable is withdrawn whole."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.hls import parse_master_playlist, parse_media_playlist
from pixelflow.core.ids import asset_id
from pixelflow.records import Records
from pixelflow.settings import PixelFlowSettings
from tests.conftest import make_clip
from tests.fault_helpers import find_processes
from tests.player_helpers import player_page
from tests.test_chunked_flow import _damaged_in_the_middle, _upload

pytestmark = pytest.mark.integration


@pytest.fixture
def progressive(monkeypatch, tmp_path):
    """Chunks of 4 s (two 2 s segments), one at a time, published as they are done; a records
    table of the test's own."""
    table = f"records-{tmp_path.name[-24:].replace('_', '-')}-{os.getpid()}"
    Records(table).ensure_table()
    for name, value in {"PIXELFLOW_RECORDS_TABLE": table, "PIXELFLOW_LADDER": "240,360", "PIXELFLOW_PRESET": "ultrafast",
                        "PIXELFLOW_SEGMENT_SECONDS": "2", "PIXELFLOW_CHUNK_SECONDS": "4",
                        "PIXELFLOW_CHUNK_WORKERS": "1", "PIXELFLOW_PROGRESSIVE": "true",
                        "PIXELFLOW_SCRATCH_DIR": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "scratch"


class _Run(threading.Thread):
    """The transcode flow of one upload, in-process, in a thread of its own."""

    def __init__(self, bucket: str, key: str, etag: str):
        super().__init__(daemon=True)
        self.args, self.state = {"bucket": bucket, "key": key, "etag": etag}, None

    def run(self) -> None:
        from flows.transcode import transcode

        self.state = transcode(**self.args, return_state=True)


def _read(bucket: str, key: str) -> str:
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def _exists(bucket: str, key: str) -> bool:
    return "Contents" in s3_client().list_objects_v2(Bucket=bucket, Prefix=key)


def _paused(fragment: str, scratch: Path, timeout: float = 60.0) -> int:
    """Stop (SIGSTOP) the FFmpeg process whose arguments hold ``fragment``, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in find_processes(str(scratch), fragment) if pid != os.getpid()]
        if pids:
            os.kill(pids[0], signal.SIGSTOP)
            return pids[0]
        time.sleep(0.02)
    raise AssertionError(f"no FFmpeg process with {fragment!r} started")


@pytest.mark.browser
def test_a_progressive_asset_plays_in_chromium_before_its_run_ends_and_its_playlists_only_grow(
        prefect_server, buckets, media_dir, browser, progressive):
    from pixelflow.commands.status import format_state
    from pixelflow.ops.api.assets import asset_view
    from pixelflow.ops.assets import get_asset

    up, out = buckets
    clip = make_clip(media_dir / "progressive.mp4", seconds=16, size="640x360", vf="hue=h=t*20")
    etag = _upload(clip, up, "talks/progressive.mp4")
    aid = asset_id(up, "talks/progressive.mp4", etag)
    prefix = f"assets/{aid}/"
    run = _Run(up, "talks/progressive.mp4", etag)
    run.start()
    # chunk 2 (8 to 12 s) is held: the run cannot end before the test lets it go on
    held = _paused("-ss 8.000000", progressive)
    try:
        deadline = time.monotonic() + 60
        while not _exists(out, f"{prefix}master.m3u8") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _exists(out, f"{prefix}master.m3u8") and not _exists(out, f"{prefix}manifest.json")
        master = _read(out, f"{prefix}master.m3u8")
        variants = parse_master_playlist(master)
        assert [v["RESOLUTION"] for v in variants] == ["426x240", "640x360"]
        assert 'TYPE=AUDIO' in master and all('mp4a.40.2' in v["CODECS"] for v in variants)
        early = {v["URI"]: _read(out, prefix + v["URI"]) for v in variants}
        audio_uri = next(line.split('URI="')[1].rstrip('"') for line in master.splitlines() if "TYPE=AUDIO" in line)
        early[audio_uri] = _read(out, prefix + audio_uri)
        for uri, text in early.items():  # chunks 0 and 1: 8 s, EVENT, open, cached a second at most
            assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text, uri
            assert parse_media_playlist(text).duration == pytest.approx(8.0, abs=0.1), uri
            assert s3_client().head_object(Bucket=out, Key=prefix + uri)["CacheControl"] == "public, max-age=1"
        # its record, the API and the player's view: preparing, and playable
        record = Records(PixelFlowSettings().records_table).get_asset(aid)
        assert record["status"] == "preparing" and record["playable"] is True
        view = asset_view(record, "http://api.test/assets/")
        assert view["playable"] and view["playback"]["hls"] == f"http://api.test/assets/{aid}/master.m3u8"
        state = get_asset(aid, PixelFlowSettings(), s3_client())
        assert (state.status, state.playable) == ("processing", True)
        assert format_state(state) == "processing (playable)"  # pixelflow status, ls

        # Chromium plays it while the run is held
        with player_page(browser, aid) as (page, errors):
            page.wait_for_selector("body[data-state=playing]", timeout=20_000)
            page.evaluate("""() => {
                const video = document.getElementById('video');
                window.playback = {ended: false, fatal: []};
                video.addEventListener('ended', () => { window.playback.ended = true; });
                window.pixelflow.hls.on(window.Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.playback.fatal.push(d.details); });
                video.playbackRate = 2;
            }""")
            page.wait_for_function("document.getElementById('video').currentTime > 3", timeout=20_000)
            assert run.is_alive() and not _exists(out, f"{prefix}manifest.json")
            assert "processing" in page.inner_text("#status").lower()
            os.kill(held, signal.SIGCONT)
            held = None
            run.join(120)
            assert run.state.is_completed(), run.state.message
            # the page plays on, through what was published since, to the end
            page.wait_for_function("window.playback.ended", timeout=60_000)
            assert page.evaluate("window.playback.fatal") == [] and not errors
            assert page.eval_on_selector("#video", "v => v.duration") == pytest.approx(16.0, abs=0.1)
            page.wait_for_selector("body[data-complete=true]", timeout=10_000)
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)

    # every playlist only grew: each early version is the start of the final one, now closed
    manifest = json.loads(_read(out, f"{prefix}manifest.json"))
    for uri, text in early.items():
        final = _read(out, prefix + uri)
        assert final.startswith(text) and final.rstrip().endswith("#EXT-X-ENDLIST"), uri
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in final
        assert parse_media_playlist(final).duration == pytest.approx(16.0, abs=0.1)
    assert {r["playlist"] for r in manifest["renditions"]} | {manifest["audio"]["playlist"]} == set(early)
    assert manifest["encoding"] == "chunked" and len(manifest["chunks"]) == 4
    record = Records(PixelFlowSettings().records_table).get_asset(aid)
    assert record["status"] == "ready" and record["playable"] is True


def test_a_source_found_damaged_after_it_became_playable_is_withdrawn_whole(prefect_server, buckets, media_dir,
                                                                           progressive, tmp_path):
    up, out = buckets
    clip = make_clip(media_dir / "progressive-long.mp4", seconds=26, size="640x360", vf="hue=h=t*20",
                     extra_video_args=["-g", "150"])
    damaged = _damaged_in_the_middle(clip, tmp_path / "damaged.mp4")  # about 13 s in: chunk 3
    etag = _upload(damaged, up, "talks/damaged.mp4")
    aid = asset_id(up, "talks/damaged.mp4", etag)
    seen: list[str] = []
    run = _Run(up, "talks/damaged.mp4", etag)
    run.start()
    while run.is_alive():
        if not seen and _exists(out, f"assets/{aid}/master.m3u8"):
            seen.append(_read(out, f"assets/{aid}/master.m3u8"))
            record = Records(PixelFlowSettings().records_table).get_asset(aid)
            assert record["playable"] is True
        time.sleep(0.05)
    assert seen, "the asset never became playable before the damage was found"
    assert run.state.is_failed() and run.state.message.startswith("corrupt_stream"), run.state.message
    # nothing of it stays in the production bucket; the rejection is recorded
    assert "Contents" not in s3_client().list_objects_v2(Bucket=out, Prefix=f"assets/{aid}/")
    error = json.loads(_read(out, f"records/{aid}/error.json"))
    assert error["code"] == "corrupt_stream"
    record = Records(PixelFlowSettings().records_table).get_asset(aid)
    assert record["status"] == "errored" and record["playable"] is False


def test_a_short_first_chunk_makes_a_progressive_asset_that_is_one_rendition(prefect_server, buckets, media_dir,
                                                                             progressive, monkeypatch):
    """``PIXELFLOW_PROGRESSIVE_FIRST_CHUNK_SECONDS``: the first chunk one 2 s segment, the others
    4 s; the renditions still number their segments on from 0 and last the source."""
    from flows.transcode import transcode

    monkeypatch.setenv("PIXELFLOW_PROGRESSIVE_FIRST_CHUNK_SECONDS", "2")
    up, out = buckets
    clip = make_clip(media_dir / "progressive.mp4", seconds=16, size="640x360", vf="hue=h=t*20")
    etag = _upload(clip, up, "talks/first.mp4")
    manifest = transcode(bucket=up, key="talks/first.mp4", etag=etag)
    assert [(c["start"], c["first_segment"]) for c in manifest["chunks"]] == [(0.0, 0), (2.0, 1), (6.0, 3),
                                                                              (10.0, 5), (14.0, 7)]
    for rendition in manifest["renditions"] + [manifest["audio"]]:
        text = _read(out, f"assets/{manifest['asset_id']}/{rendition['playlist']}")
        assert parse_media_playlist(text).duration == pytest.approx(16.0, abs=0.1)
        assert text.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-PLAYLIST-TYPE:EVENT" in text
    assert [r["segments"] for r in manifest["renditions"]] == [8, 8]
