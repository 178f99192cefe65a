"""Asset events reach a webhook: ``pixelflow notify install`` creates a Prefect webhook block and
automations on a real Prefect server, and the real flow's ``pixelflow.asset.ready`` /
``pixelflow.asset.errored`` events arrive as one JSON POST each at a local HTTP receiver."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pixelflow.aws import s3_client
from pixelflow.core.ids import asset_id
from pixelflow.ops.notifications import EVENTS, PAYLOAD_FIELDS, parse_events, parse_header, payload_template
from tests.conftest import ROOT, make_clip

DOCS = ROOT / "docs" / "notifications.md"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pixelflow"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def wait_for(self, asset_ids: set[str], timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asset_ids <= {b["asset_id"] for b in self.bodies()}:
                return self.bodies()
            time.sleep(0.2)
        raise AssertionError(f"webhook got {self.bodies()} but not all of {asset_ids} within {timeout:.0f} s")


@pytest.fixture
def receiver():
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def notify_cli(capsys, *args: str, json_output: bool = True) -> dict | str:
    """Run ``pixelflow notify ...`` in-process; its JSON answer (or its text)."""
    from pixelflow.cli import main

    capsys.readouterr()
    code = main(["notify", *args, *(["--json"] if json_output else [])])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out) if json_output else out


def render(event: str, payload: dict, related: list[dict] | None = None) -> dict:
    """Render the body template the way the Prefect server's CallWebhook action does."""
    from prefect.server.events.actions import JinjaTemplateAction
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.server.utilities.user_templates import render_user_template_sync, validate_user_template

    JinjaTemplateAction._register_filters_if_needed()
    template = payload_template()
    validate_user_template(template)
    received = ReceivedEvent(occurred=datetime.now(timezone.utc), event=event, id=uuid.uuid4(), payload=payload,
                             resource={"prefect.resource.id": f"pixelflow.asset.{payload.get('asset_id')}"},
                             related=related or [])
    return json.loads(render_user_template_sync(template, {"event": received}))


def test_body_is_json_whatever_the_key():
    key = 'uploads/"quoted" <b>&\\ été\n.mp4'
    run = str(uuid.uuid4())
    body = render("pixelflow.asset.errored", {"asset_id": "a1", "bucket": "up", "key": key, "status": "rejected",
                                              "code": "not_media", "message": "The file is not a video."},
                  [{"prefect.resource.id": f"prefect.flow-run.{run}", "prefect.resource.role": "flow-run"}])
    assert body["key"] == key and body["code"] == "not_media" and body["master_playlist"] is None
    assert body["flow_run_id"] == run and body["event"] == "pixelflow.asset.errored"
    assert set(body) == {"event", "event_id", "occurred", "flow_run_id", *PAYLOAD_FIELDS}


def test_alert_and_documented_slack_template_render():
    alert = render("pixelflow.asset.alert", {"asset_id": "a2", "bucket": "up", "key": "k.mp4",
                                             "code": "too_many_attempts", "message": "Gave up after 4 attempts."})
    assert alert["code"] == "too_many_attempts" and alert["status"] is None and alert["flow_run_id"] is None

    from prefect.server.events.actions import JinjaTemplateAction
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.server.utilities.user_templates import render_user_template_sync

    from pixelflow.ops.notifications import check_template

    JinjaTemplateAction._register_filters_if_needed()
    [slack] = re.findall(r"```jinja\n(.*?)```", DOCS.read_text(), re.S)
    check_template(slack)
    event = ReceivedEvent(occurred=datetime.now(timezone.utc), event="pixelflow.asset.ready", id=uuid.uuid4(),
                          resource={"prefect.resource.id": "pixelflow.asset.a3"},
                          payload={"key": 'my "talk".mp4', "status": "ready", "master_playlist": "s3://o/a/master.m3u8"})
    assert json.loads(render_user_template_sync(slack, {"event": event})) == {
        "text": 'PixelFlow: my "talk".mp4 is ready s3://o/a/master.m3u8'}
    with pytest.raises(ValueError, match="not a valid template"):
        check_template('{"text": {{ event.payload.key')


def test_event_and_header_parsing():
    assert parse_events("ready, pixelflow.asset.errored,ready") == ["ready", "errored"]
    with pytest.raises(ValueError):
        parse_events("ready,done")
    assert parse_header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")
    assert set(EVENTS.values()) == {"pixelflow.asset.ready", "pixelflow.asset.errored", "pixelflow.asset.alert"}


def test_cli_rejects_bad_arguments(capsys, tmp_path):
    from pixelflow.cli import main

    assert main(["notify", "install", "--webhook", "http://x", "--events", "ready,finished"]) == 2
    assert "unknown event 'finished'" in capsys.readouterr().err
    assert main(["notify", "install", "--webhook", "hooks.example.com"]) == 2
    assert "--webhook must be an http(s) URL" in capsys.readouterr().err
    bad = tmp_path / "bad.j2"
    bad.write_text('{"text": {{ event.payload.key')
    assert main(["notify", "install", "--webhook", "http://x", "--template", str(bad)]) == 2
    assert "not a valid template" in capsys.readouterr().err


@pytest.mark.integration
def test_ready_and_rejected_uploads_post_one_webhook_each(prefect_server, buckets, receiver, media_dir, tmp_path,
                                                          capsys):
    from prefect.client.orchestration import get_client

    from flows.transcode import transcode

    name = f"notify-{uuid.uuid4().hex[:8]}"
    # installing twice converges: one block, one automation per event
    first = notify_cli(capsys, "install", "--webhook", receiver.url, "--name", name, "--events", "ready,errored,alert",
                       json_output=False)
    assert f"automation     {name}-alert  (pixelflow.asset.alert)" in first.splitlines()
    installed = notify_cli(capsys, "install", "--webhook", receiver.url, "--name", name, "--events", "ready,errored",
                           "--header", "X-PixelFlow-Token: s3cret")
    assert installed["automations"] == [f"{name}-ready", f"{name}-errored"]
    assert installed["removed"] == [f"{name}-alert"] and installed["block"] == f"webhook/{name}"
    try:
        with get_client(sync_client=True) as client:
            for kind in ("ready", "errored"):
                [automation] = client.read_automations_by_name(f"{name}-{kind}")
                assert automation.enabled and automation.trigger.expect == {EVENTS[kind]}
                assert str(automation.actions[0].block_document_id) == installed["block_document_id"]
            assert client.read_automations_by_name(f"{name}-alert") == []

        up, out = buckets
        s3 = s3_client()
        good = make_clip(media_dir / "notify-360p.mp4", seconds=2, size="640x360")
        s3.upload_file(str(good), up, "videos/good clip.mp4")
        good_etag = s3.head_object(Bucket=up, Key="videos/good clip.mp4")["ETag"]
        bogus = tmp_path / "notes.mp4"
        bogus.write_text("just text named like a video\n" * 40)
        s3.upload_file(str(bogus), up, "videos/notes.mp4")
        bogus_etag = s3.head_object(Bucket=up, Key="videos/notes.mp4")["ETag"]

        ready_state = transcode(bucket=up, key="videos/good clip.mp4", etag=good_etag, return_state=True)
        rejected_state = transcode(bucket=up, key="videos/notes.mp4", etag=bogus_etag, return_state=True)
        assert ready_state.is_completed() and rejected_state.is_failed()
        good_id, bogus_id = asset_id(up, "videos/good clip.mp4", good_etag), asset_id(up, "videos/notes.mp4", bogus_etag)

        receiver.wait_for({good_id, bogus_id})
        time.sleep(3)  # a second delivery of either event would show up here
        ours = [r for r in receiver.requests if json.loads(r["body"])["asset_id"] in (good_id, bogus_id)]
        assert len(ours) == 2, [r["body"] for r in ours]
        for request in ours:
            assert request["path"] == "/hooks/pixelflow"
            assert request["headers"]["Content-Type"] == "application/json"
            assert request["headers"]["X-PixelFlow-Token"] == "s3cret"
        by_id = {json.loads(r["body"])["asset_id"]: json.loads(r["body"]) for r in ours}

        ready = by_id[good_id]
        assert {k: ready[k] for k in ("event", "asset_id", "bucket", "key", "status", "master_playlist", "code",
                                      "renditions")} == {
            "event": "pixelflow.asset.ready", "asset_id": good_id, "bucket": up, "key": "videos/good clip.mp4",
            "status": "ready", "master_playlist": f"s3://{out}/assets/{good_id}/master.m3u8", "code": None,
            "renditions": ["360p"]}
        assert ready["duration"] == pytest.approx(2.0, abs=0.1)
        assert ready["flow_run_id"] == str(ready_state.state_details.flow_run_id)
        assert s3.head_object(Bucket=out, Key=f"assets/{good_id}/master.m3u8")["ContentLength"] > 0

        rejected = by_id[bogus_id]
        assert {k: rejected[k] for k in ("event", "asset_id", "bucket", "key", "status", "master_playlist", "code")} == {
            "event": "pixelflow.asset.errored", "asset_id": bogus_id, "bucket": up, "key": "videos/notes.mp4",
            "status": "rejected", "master_playlist": None, "code": "not_media"}
        assert rejected["message"] and rejected["flow_run_id"] == str(rejected_state.state_details.flow_run_id)
        assert ready["event_id"] != rejected["event_id"]
    finally:
        removed = notify_cli(capsys, "remove", "--name", name)["removed"]
    assert removed == [f"{name}-ready", f"{name}-errored", f"webhook/{name}"]
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(f"{name}-ready") == []
