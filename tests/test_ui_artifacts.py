"""What the Prefect UI shows for a transcode, read back from a real Prefect server: the flow run's
name and asset tag, one task run per rendition, a progress artifact per rendition that moves while
FFmpeg encodes and ends at 100, the renditions table and the links of a ready asset, and the
rejection note (code and what to do) of a rejected upload."""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ids import asset_id
from tests.conftest import make_clip

pytestmark = pytest.mark.integration


def upload(path, bucket: str, key: str) -> str:
    s3 = s3_client()
    s3.upload_file(str(path), bucket, key)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def flow_run_artifacts(client, flow_run_id=None, run_name: str | None = None, kind: str | None = None) -> list:
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType, FlowRunFilter, FlowRunFilterName,
    )

    fields = {}
    if flow_run_id is not None:
        fields["flow_run_id"] = ArtifactFilterFlowRunId(any_=[flow_run_id])
    if kind is not None:
        fields["type"] = ArtifactFilterType(any_=[kind])
    artifact_filter = ArtifactFilter(**fields)
    flow_run_filter = FlowRunFilter(name=FlowRunFilterName(any_=[run_name])) if run_name else None
    return client.read_artifacts(artifact_filter=artifact_filter, flow_run_filter=flow_run_filter)


class ProgressWatcher:
    """Polls the progress artifacts of a flow run (found by name) while it runs, like a UI refreshing."""

    def __init__(self, run_name: str, interval: float = 0.25) -> None:
        self.run_name = run_name
        self.interval = interval
        self.seen: dict[str, list[float]] = {}
        self.error: BaseException | None = None
        self.stop = threading.Event()
        # the test's Prefect settings (the session server's URL) live in context variables
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._poll,), daemon=True)

    def _poll(self) -> None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                while not self.stop.is_set():
                    for artifact in flow_run_artifacts(client, run_name=self.run_name, kind="progress"):
                        values = self.seen.setdefault(artifact.description, [])
                        if not values or values[-1] != float(artifact.data):
                            values.append(float(artifact.data))
                    self.stop.wait(self.interval)
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"polling the progress artifacts failed: {self.error!r}") from self.error


def test_ready_asset_in_the_ui(prefect_server, buckets, media_dir, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    from flows.transcode import transcode

    # Two rungs, encoded with the medium preset on one thread each so that an encode lasts a few
    # seconds on any machine: long enough for the throttled (every 5 s, every 10 %) progress updates to be
    # seen between 0 and 100.
    monkeypatch.setenv("PIXELFLOW_LADDER", "360,720")
    monkeypatch.setenv("PIXELFLOW_PRESET", "medium")
    monkeypatch.setenv("PIXELFLOW_ENCODER_THREADS", "1")
    clip = make_clip(media_dir / "ui-720p-6s.mp4", seconds=6, size="1280x720")
    up, out = buckets
    key = f"ui/{uuid.uuid4().hex[:8]} talk.mp4"
    etag = upload(clip, up, key)
    aid = asset_id(up, key, etag)

    with ProgressWatcher(f"transcode: {key}") as watcher:
        state = transcode(bucket=up, key=key, etag=etag, return_state=True)
    assert state.is_completed(), state.message
    manifest = state.result()
    run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        assert run.name == f"transcode: {key}"
        assert f"asset:{aid}" in run.tags

        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id])))
        by_name = {t.name: t for t in tasks}
        for rung in ("360p", "720p"):
            assert by_name[f"transcode-{rung}"].state.is_completed()
            assert by_name[f"upload-{rung}"].state.is_completed()
        for name in ("encode-ladder", "transcode-audio", "poster", "publish-asset"):
            assert by_name[name].state.is_completed(), name

        artifacts = flow_run_artifacts(client, run_id)
        progress = [a for a in artifacts if a.type == "progress"]
        assert sorted(a.description for a in progress) == [
            "360p (640x360): percent of the source encoded", "720p (1280x720): percent of the source encoded"]
        assert [float(a.data) for a in progress] == [100.0, 100.0], [(a.description, a.data) for a in progress]
        rung_tasks = {by_name["transcode-360p"].id, by_name["transcode-720p"].id}
        assert {a.task_run_id for a in progress} == rung_tasks

        [table] = [a for a in artifacts if a.key == f"asset-{aid}"]
        assert table.type == "table"
        rows = {row["rendition"]: row for row in json.loads(table.data)}
        assert list(rows) == ["360p", "720p", "audio"]
        for rendition in manifest["renditions"]:
            row = rows[rendition["name"]]
            assert row["resolution"] == f"{rendition['width']}x{rendition['height']}"
            assert row["bitrate (kbit/s)"] == round(rendition["bandwidth"] / 1000) > 0
            assert row["size (bytes)"] == rendition["size"] > 0
            assert row["segments"] == rendition["segments"] == 2
            assert row["duration (s)"] == pytest.approx(6.0, abs=0.1)

        [links] = [a for a in artifacts if a.key == f"asset-{aid}-links"]
        assert links.type == "markdown"
        assert f"`s3://{out}/assets/{aid}/master.m3u8`" in links.data
        assert f"pixelflow play {aid}" in links.data and f"pixelflow status {aid}" in links.data

    # The progress the UI showed moved: each rung was seen strictly between 0 and 100 before 100.
    for description, values in watcher.seen.items():
        assert values == sorted(values) and values[-1] == 100.0, (description, values)
    moving = {d: v for d, v in watcher.seen.items() if any(0 < x < 100 for x in v)}
    assert moving, f"no progress artifact was seen between 0 and 100: {watcher.seen}"


def test_rejected_upload_in_the_ui(prefect_server, buckets, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.transcode import FIX_HINTS, transcode
    from pixelflow.errors import ErrorCode

    up, out = buckets
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("just text named like a video\n" * 40)
    key = f"ui/{uuid.uuid4().hex[:8]} notes.mp4"
    etag = upload(bogus, up, key)
    aid = asset_id(up, key, etag)

    state = transcode(bucket=up, key=key, etag=etag, return_state=True)
    assert state.is_failed() and state.message.startswith("not_media: ")

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.name == f"transcode: {key}" and f"asset:{aid}" in run.tags
        artifacts = flow_run_artifacts(client, run.id)
        [note] = [a for a in artifacts if a.key == f"asset-{aid}-error"]
        assert note.type == "markdown"
        assert "Rejected: `not_media`" in note.data and key in note.data
        assert FIX_HINTS[ErrorCode.NOT_MEDIA] in note.data
        assert not [a for a in artifacts if a.type in ("table", "progress")]
