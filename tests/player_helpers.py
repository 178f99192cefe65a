"""Helpers for the player and CLI tests: assets published (and uploads rejected) by the real
``transcode`` flow in the session's moto S3."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ids import asset_id as compute_asset_id
from pixelflow.errors import PixelFlowError
from pixelflow.settings import PixelFlowSettings

#: A short, fast ladder for tests: two rungs, the fastest x264 preset, 2 s segments.
TEST_LADDER = {"PIXELFLOW_LADDER": "360,720", "PIXELFLOW_PRESET": "ultrafast", "PIXELFLOW_SEGMENT_SECONDS": "2"}


def fresh_buckets(env: pytest.MonkeyPatch) -> PixelFlowSettings:
    """Create an upload and an output bucket and point ``PIXELFLOW_*`` (and the flow) at them."""
    suffix = uuid.uuid4().hex[:8]
    env.setenv("PIXELFLOW_UPLOAD_BUCKET", f"up-{suffix}")
    env.setenv("PIXELFLOW_OUTPUT_BUCKET", f"out-{suffix}")
    for name, value in TEST_LADDER.items():
        env.setenv(name, value)
    settings = PixelFlowSettings()
    s3 = s3_client()
    s3.create_bucket(Bucket=settings.upload_bucket)
    s3.create_bucket(Bucket=settings.output_bucket)
    return settings


def upload(settings: PixelFlowSettings, path: Path, key: str) -> tuple[str, str]:
    """Put ``path`` into the upload bucket; returns ``(asset_id, etag)``."""
    s3 = s3_client()
    s3.upload_file(str(path), settings.upload_bucket, key)
    head = s3.head_object(Bucket=settings.upload_bucket, Key=key)
    return compute_asset_id(settings.upload_bucket, key, head["ETag"], head.get("VersionId")), head["ETag"]


def run_flow(settings: PixelFlowSettings, key: str, etag: str) -> dict[str, Any] | PixelFlowError:
    """Run the real ``transcode`` flow on one upload: its manifest, or the rejection it raised."""
    from flows.transcode import transcode

    try:
        return transcode(bucket=settings.upload_bucket, key=key, etag=etag)
    except PixelFlowError as error:
        return error


_LIBRARY: dict[str, Any] = {}

#: The library talk's sidecar captions (``videos/talk.en.vtt``, uploaded before the video).
TALK_CAPTIONS = (b"WEBVTT\n\n00:00:00.500 --> 00:00:03.000\nHello from PixelFlow\n\n"
                 b"00:00:05.000 --> 00:00:07.500\nSecond caption\n")


def short_clip(work: Path) -> Path:
    """A 2 s 640x360 clip with audio: one 360p rendition, transcoded in a few seconds."""
    from tests.conftest import make_clip

    path = work / "short-360p.mp4"
    return path if path.exists() else make_clip(path, seconds=2, size="640x360", rate="30")


def shared_library(work: Path) -> dict[str, Any]:
    """Buckets with one asset published and one upload rejected by the real transcode flow:
    an 8 s 1280x720 clip with English captions uploaded beside it (360p and 720p renditions,
    audio group, subtitles group) and a text file named like a
    video (``not_media``). Built once per test session; call :func:`use_library` to point the
    ``PIXELFLOW_*`` settings at its buckets."""
    if not _LIBRARY:
        from tests.conftest import make_clip

        clip = make_clip(work / "talk.mp4", seconds=8, size="1280x720", rate="30")
        junk = work / "notes.mp4"
        junk.write_bytes(b"this is not a video\n" * 100)
        with pytest.MonkeyPatch.context() as env:
            settings = fresh_buckets(env)
            s3_client().put_object(Bucket=settings.upload_bucket, Key="videos/talk.en.vtt", Body=TALK_CAPTIONS)
            ready_id, etag = upload(settings, clip, "videos/talk.mp4")
            manifest = run_flow(settings, "videos/talk.mp4", etag)
            assert isinstance(manifest, dict) and manifest["asset_id"] == ready_id, manifest
            rejected_id, etag = upload(settings, junk, "videos/notes.mp4")
            error = run_flow(settings, "videos/notes.mp4", etag)
            assert isinstance(error, PixelFlowError) and error.code.value == "not_media", error
        _LIBRARY.update(settings=settings, s3=s3_client(), ready=ready_id, manifest=manifest,
                        rejected=rejected_id, error=error, clip=clip)
    return _LIBRARY


def use_library(env: pytest.MonkeyPatch, library: dict[str, Any]) -> None:
    """Point ``PIXELFLOW_*`` (CLI commands, flow runs) at the library's buckets and test ladder."""
    env.setenv("PIXELFLOW_UPLOAD_BUCKET", library["settings"].upload_bucket)
    env.setenv("PIXELFLOW_OUTPUT_BUCKET", library["settings"].output_bucket)
    for name, value in TEST_LADDER.items():
        env.setenv(name, value)


@contextmanager
def player_page(browser, asset: str) -> Iterator[tuple[Any, list[str]]]:
    """The player page of ``asset`` in Chromium, served by a player server of its own (the
    current settings), and the page errors it raises; both closed on exit."""
    from pixelflow.player import make_server, serve_in_thread, server_url

    server = make_server(PixelFlowSettings(), port=0, s3=s3_client())
    serve_in_thread(server)
    context = browser.new_context(viewport={"width": 800, "height": 600})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server_url(server, asset))
        yield page, errors
    finally:
        context.close()
        server.shutdown()
        server.server_close()
