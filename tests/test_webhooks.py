"""Signed webhooks without a Prefect server: signatures, URL checks, the /v1/webhooks routes and
their bad input (fast tier), and (``stack`` tier) deliveries by a real ``pixelflow webhooks
dispatch`` process to a real receiver on loopback (in order per endpoint, retried with backoff, across a dispatcher restart,
resent by hand, never redirected, never to an address no longer allowed)."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys

import httpx
import pytest

from pixelflow import webhooks
from pixelflow.errors import ErrorCode, PixelFlowError
from pixelflow.local.processes import stop_process
from pixelflow.ops.webhook_urls import resolve
from pixelflow.outbox import Outbox
from tests.api_helpers import start_api
from tests.events_helpers import wait_for
from tests.webhook_helpers import Receiver, start_dispatcher, webhook_env, webhook_settings

SECRET = "whsec_test_secret"


# --- signatures ------------------------------------------------------------------------------

def test_verify_accepts_what_pixelflow_signs_and_refuses_anything_else():
    body = json.dumps({"id": "e1", "type": "video.asset.ready", "created_at": "x", "data": {"id": "a"}}).encode()
    now = 1_800_000_000
    header = webhooks.signature_header(body, SECRET, timestamp=now)
    assert webhooks.verify(body, header, SECRET, now=now + 10)["data"] == {"id": "a"}
    assert webhooks.verify(body.decode(), header, SECRET, now=now)["id"] == "e1"  # str bodies too
    refused = {
        "tampered body": (body.replace(b'"a"', b'"b"'), header, SECRET, now),
        "other secret": (body, header, "whsec_other", now),
        "too old": (body, header, SECRET, now + 301),
        "no header": (body, "", SECRET, now),
        "no v1": (body, f"t={now}", SECRET, now),
        "garbage": (body, "v1=zz,t=abc", SECRET, now),
        "not an event": (b"[1]", webhooks.signature_header(b"[1]", SECRET, now), SECRET, now),
    }
    for case, (raw, hdr, secret, at) in refused.items():
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(raw, hdr, secret, now=at)
            pytest.fail(case)
    # A rotated header may carry several v1 signatures: one matching is enough.
    both = f"t={now},v1={'0' * 64},v1={webhooks.sign(body, SECRET, now)}"
    assert webhooks.verify(body, both, SECRET, now=now)["type"] == "video.asset.ready"


# --- URLs ------------------------------------------------------------------------------------

def test_webhook_urls_that_reach_private_addresses_are_refused():
    for url in ("http://127.0.0.1/x", "http://localhost:8080/x", "http://10.1.2.3/", "http://169.254.169.254/latest",
                "http://[::1]/", "http://[::ffff:10.0.0.1]/", "http://0.0.0.0/", "http://192.168.1.10/",
                "http://100.64.0.1/", "http://224.0.0.1/"):
        with pytest.raises(PixelFlowError) as refused:
            resolve(url, [])
        assert refused.value.code == ErrorCode.WEBHOOK_ADDRESS_NOT_ALLOWED, url
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "https:///nohost", "not a url", "http://a b/",
                "http://example.com:0/", "http://example.com:99999/", "https://x." + "a" * 2048 + "/"):
        with pytest.raises(PixelFlowError) as invalid:
            resolve(url, [])
        assert invalid.value.code == ErrorCode.INVALID_WEBHOOK_URL, url
    assert str(resolve("http://127.0.0.1:9/x", ["127.0.0.0/8"]).address) == "127.0.0.1"

    # A name is judged by every address it resolves to: one private answer is enough to refuse it.
    def rebinding(host, port, type=None):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    with pytest.raises(PixelFlowError) as mixed:
        resolve("https://hooks.example.com/", [], resolver=rebinding)
    assert mixed.value.code == ErrorCode.WEBHOOK_ADDRESS_NOT_ALLOWED and mixed.value.details == {"address": "10.0.0.7"}
    target = resolve("https://hooks.example.com:8443/p?q=1", [], resolver=lambda h, p, type=None: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", p, 0, 0))])
    assert target.connect_url == "https://[2606:2800:220:1::1]:8443/p?q=1" and target.host_header == "hooks.example.com:8443"
    assert target.address == ipaddress.ip_address("2606:2800:220:1::1")


# --- the routes --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(webhook_settings())
    yield api
    api.stop()


pytestmark = pytest.mark.integration
#: Tests running ``pixelflow webhooks dispatch`` (and the API) as real processes: the stack tier.
STACK = pytest.mark.stack


def test_endpoints_are_created_listed_and_deleted_and_the_secret_is_shown_once(api):
    receiver = Receiver()
    try:
        with api.client() as client:
            created = client.post("/v1/webhooks", json={"url": receiver.url, "description": "app"})
            assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
            endpoint = created.json()["data"]
            assert endpoint["secret"].startswith("whsec_") and endpoint["url"] == receiver.url
            listed = client.get("/v1/webhooks").json()["data"]
            assert [e["id"] for e in listed] == [endpoint["id"]] and listed[0]["secret"] is None
            assert client.get(f"/v1/webhooks/{endpoint['id']}").json()["data"]["secret"] is None
            assert client.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
            assert client.get("/v1/webhooks").json()["data"] == []
            assert client.delete(f"/v1/webhooks/{endpoint['id']}").json()["error"]["code"] == "webhook_not_found"
    finally:
        receiver.close()


def test_bad_webhook_requests_are_refused_with_their_code_and_create_nothing(api):
    before = api.record_count()
    with api.client() as client:
        cases = [
            (client.post("/v1/webhooks", json={"url": "ftp://example.com/x"}), 400, "invalid_webhook_url"),
            (client.post("/v1/webhooks", json={"url": "http://user:pw@example.com/"}), 400, "invalid_webhook_url"),
            (client.post("/v1/webhooks", json={"url": "https://does-not-exist.invalid/"}), 400, "invalid_webhook_url"),
            (client.post("/v1/webhooks", json={"url": "http://10.0.0.8/hook"}), 400, "webhook_address_not_allowed"),
            (client.post("/v1/webhooks", json={"url": "http://169.254.169.254/"}), 400, "webhook_address_not_allowed"),
            (client.post("/v1/webhooks", json={"url": "http://[::1]/"}), 400, "webhook_address_not_allowed"),
            (client.post("/v1/webhooks", json={"url": 12}), 400, "invalid_request"),
            (client.post("/v1/webhooks", json={}), 400, "invalid_request"),
            (client.post("/v1/webhooks", json={"url": "https://example.com/", "secret": "mine"}), 400, "unknown_field"),
            (client.post("/v1/webhooks", json={"url": "https://example.com/", "description": "x" * 256}), 400,
             "invalid_request"),
            (client.post("/v1/webhooks", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
             "invalid_request"),
            (client.post("/v1/webhooks", json=["https://example.com/"]), 400, "invalid_request"),
            (client.get("/v1/webhooks/0123456789abcdef01234567"), 404, "webhook_not_found"),
            (client.get("/v1/webhooks/../../etc"), 404, "not_found"),
            (client.delete("/v1/webhooks/nope"), 404, "webhook_not_found"),
            (client.get("/v1/webhooks/deliveries", params={"endpoint_id": "0123456789abcdef01234567"}), 404,
             "webhook_not_found"),
            (client.get("/v1/webhooks/deliveries", params={"limit": 0}), 400, "invalid_request"),
            (client.get("/v1/webhooks/deliveries/nope"), 404, "delivery_not_found"),
            (client.post("/v1/webhooks/deliveries/" + "0" * 36 + ".0123456789abcdef01234567/resend"), 404,
             "delivery_not_found"),
        ]
        for response, status, code in cases:
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.request.url
    with api.client(token=None) as anonymous:
        assert anonymous.post("/v1/webhooks", json={"url": "https://example.com/"}).status_code == 401
        assert anonymous.get("/v1/webhooks/deliveries").status_code == 401
    assert api.record_count() == before


# --- deliveries --------------------------------------------------------------------------------

def _register(api, url: str) -> dict:
    with api.client() as client:
        response = client.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def _upload(api, name: str) -> dict:
    with api.client() as client:
        return client.post("/v1/uploads", json={"filename": name, "size": 1000, "passthrough": name}).json()["data"]


def _delivery(settings, event_type: str | None = None, endpoint_id: str | None = None) -> list[dict]:
    found = Outbox(settings).list_deliveries(100, endpoint_id)
    return [d for d in found if event_type is None or d["type"] == event_type]


@STACK
def test_deliveries_come_in_order_are_retried_and_survive_a_dispatcher_restart(moto_server, tmp_path):
    settings = webhook_settings()
    api = start_api(settings)
    receiver = Receiver(answers=[500])
    dispatcher = None
    try:
        endpoint = _register(api, receiver.url)
        first, second = _upload(api, "one.mp4"), _upload(api, "two.mp4")
        dispatcher = start_dispatcher(settings, tmp_path)
        # The first attempt is refused: a retry is pending when the dispatcher stops.
        wait_for(lambda: receiver.requests, timeout=60, what="the first attempt")
        pending = wait_for(lambda: [d for d in _delivery(settings, endpoint_id=endpoint["id"])
                                    if d["attempts"]], timeout=30, what="the recorded attempt")
        stop_process(dispatcher)
        dispatcher = None
        (failed_once,) = pending
        assert failed_once["status"] == "pending" and failed_once["next_attempt_at"]
        assert [(a["status_code"], a["error"]) for a in failed_once["attempts"]] == [(500, "HTTP 500")]
        # Nothing else was sent while the first event waited: the second is behind it.
        assert len(receiver.requests) == 1
        with api.client() as client:  # a pending delivery is being retried already: no resend
            refused = client.post(f"/v1/webhooks/deliveries/{failed_once['id']}/resend")
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "delivery_pending")

        dispatcher = start_dispatcher(settings, tmp_path / "again")
        wait_for(lambda: len(receiver.requests) >= 3, timeout=60, what="both deliveries after the restart")
        events = receiver.events()
        assert [t for t, _ in events] == ["video.upload.created"] * 3
        assert events[0][1] == events[1][1] != events[2][1]  # the same event id across attempts
        bodies = [json.loads(r.body) for r in receiver.requests]
        assert [b["data"]["id"] for b in bodies] == [first["id"], first["id"], second["id"]]  # in order of creation
        assert bodies[0]["data"]["passthrough"] == "one.mp4" and bodies[0]["data"]["status"] == "waiting"
        for request in receiver.requests:
            event = webhooks.verify(request.body, request.headers[webhooks.SIGNATURE_HEADER], endpoint["secret"])
            assert event["id"] == request.headers["PixelFlow-Event-Id"]
        done = wait_for(lambda: (d := _delivery(settings, endpoint_id=endpoint["id"])) and
                        all(x["status"] == "delivered" for x in d) and d, timeout=30, what="delivered records")
        assert sorted(len(d["attempts"]) for d in done) == [1, 2]
    finally:
        if dispatcher is not None:
            stop_process(dispatcher)
        receiver.close()
        api.stop()
    log = (tmp_path / "dispatcher.log").read_text() + (tmp_path / "again" / "dispatcher.log").read_text()
    assert endpoint["secret"] not in log and "whsec_" not in log


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "pixelflow.cli", "webhooks", *args], capture_output=True, text=True,
                          env={**os.environ, **webhook_env(settings)}, timeout=120)


@STACK
def test_a_failed_delivery_is_listed_with_its_status_codes_and_can_be_resent(moto_server, tmp_path):
    settings = webhook_settings(webhook_max_age_seconds=3)
    api = start_api(settings)
    receiver = Receiver(answers=[503, 503, 503, 503, 503, 503])
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        created = _cli(settings, "create", receiver.url, "--json")
        assert created.returncode == 0, created.stderr
        endpoint = json.loads(created.stdout)
        upload = _upload(api, "resend.mp4")
        (failed,) = wait_for(lambda: [d for d in _delivery(settings, endpoint_id=endpoint["id"])
                                      if d["status"] == "failed"], timeout=60, what="the delivery to fail")
        listed = _cli(settings, "deliveries", "--json")
        (shown,) = [d for d in json.loads(listed.stdout) if d["id"] == failed["id"]]
        assert shown["status"] == "failed" and shown["last_status_code"] == 503
        # (how many attempts fit in its 3 s depends on how fast the dispatcher started)
        assert {a["status_code"] for a in shown["attempts"]} == {503}, shown
        assert "503" in _cli(settings, "deliveries").stdout

        receiver.answers.clear()
        resent = _cli(settings, "resend", failed["id"], "--json")
        assert resent.returncode == 0, resent.stderr
        assert json.loads(resent.stdout)["status"] == "pending"
        wait_for(lambda: Outbox(settings).get_delivery(failed["id"])["status"] == "delivered", timeout=60,
                 what="the resent delivery")
        ids = {event_id for _, event_id in receiver.events()}
        assert len(ids) == 1 and json.loads(receiver.requests[-1].body)["data"]["id"] == upload["id"]
        with api.client() as client:  # the API shows the same, and resends it again
            (shown,) = [d for d in client.get("/v1/webhooks/deliveries").json()["data"] if d["id"] == failed["id"]]
            assert shown["status"] == "delivered" and shown["attempts"][-1]["status_code"] == 200
            assert client.post(f"/v1/webhooks/deliveries/{failed['id']}/resend").status_code == 202
        assert _cli(settings, "resend", "nope").returncode == 1
        assert _cli(settings, "create", "http://10.0.0.1/").returncode == 1
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()


@STACK
def test_redirects_are_not_followed_and_addresses_are_checked_again_at_delivery(moto_server, tmp_path):
    settings = webhook_settings(webhook_max_age_seconds=2)
    api = start_api(settings)
    target = Receiver()
    redirecting = Receiver(answers=[302] * 10, location=target.url)
    dispatcher = None
    try:
        endpoint = _register(api, redirecting.url)
        _upload(api, "redirect.mp4")
        dispatcher = start_dispatcher(settings, tmp_path)
        (failed,) = wait_for(lambda: [d for d in _delivery(settings) if d["status"] == "failed"], timeout=60,
                             what="the redirected delivery to fail")
        assert {a["status_code"] for a in failed["attempts"]} == {302}
        assert target.requests == [] and redirecting.requests
        stop_process(dispatcher)

        # The endpoint was registered while loopback was allowed; a dispatcher that does not
        # allow it any more sends nothing there (the address is checked at every delivery).
        strict = settings.model_copy(update={"webhook_allowed_networks": []})
        with api.client() as client:
            assert client.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
        _register(api, target.url)
        _upload(api, "rebound.mp4")
        dispatcher = start_dispatcher(strict, tmp_path / "strict")
        (refused,) = wait_for(lambda: [d for d in _delivery(settings) if d["status"] == "failed"
                                       and d["id"] != failed["id"]], timeout=60, what="the refused delivery")
        assert refused["attempts"][0]["error"].startswith("webhook_address_not_allowed")
        assert target.requests == []
    finally:
        if dispatcher is not None:
            stop_process(dispatcher)
        target.close()
        redirecting.close()
        api.stop()


@STACK
def test_an_attempt_is_bounded_by_its_time_limit(moto_server, tmp_path):
    settings = webhook_settings(webhook_timeout_seconds=1.0, webhook_max_age_seconds=2)
    api = start_api(settings)
    slow = Receiver(delay=4.0)
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        _register(api, slow.url)
        _upload(api, "slow.mp4")
        (failed,) = wait_for(lambda: [d for d in _delivery(settings) if d["status"] == "failed"], timeout=60,
                             what="the slow delivery to fail")
        assert {a["error"] for a in failed["attempts"]} == {"timeout"}  # given up before the answer came
    finally:
        stop_process(dispatcher)
        slow.close()
        api.stop()


def test_the_lambda_handler_delivers_a_real_sqs_batch_and_holds_back_a_retry(moto_server):
    from pixelflow.aws import sqs_client
    from pixelflow.ops.lambda_handlers import webhooks_handler

    settings = webhook_settings()
    api = start_api(settings)
    receiver = Receiver(answers=[500])
    try:
        _register(api, receiver.url)
        _upload(api, "a.mp4"), _upload(api, "b.mp4")
        sqs = sqs_client()
        url = sqs.get_queue_url(QueueName=settings.webhook_queue_name)["QueueUrl"]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
        # The shape of an SQS event source mapping's records.
        records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                    "attributes": m["Attributes"]} for m in messages]
        assert len(records) == 2
        result = webhooks_handler({"Records": records}, settings=settings)
        # The first is retried later, the second waits behind it: neither is done with.
        assert result == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
        assert len(receiver.requests) == 1

        def batch():  # what the event source mapping hands over once the backoff is over
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                      AttributeNames=["All"]).get("Messages", [])
            return [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                     "attributes": m["Attributes"]} for m in got]

        again = wait_for(batch, timeout=30, what="the messages after the backoff")
        assert [r["body"] for r in again] == [r["body"] for r in records]  # the same order
        assert webhooks_handler({"Records": again}, settings=settings) == {"batchItemFailures": []}
        assert [json.loads(r.body)["data"]["filename"] for r in receiver.requests] == ["a.mp4", "a.mp4", "b.mp4"]
    finally:
        receiver.close()
        api.stop()


def test_the_documented_receiver_accepts_a_delivery_and_refuses_a_tampered_one(tmp_path):
    import re

    from pixelflow.local.processes import free_port, spawn, wait_http
    from tests.conftest import ROOT

    (snippet,) = re.findall(r"## Verify it: a receiver.*?```python\n(.*?)```", (ROOT / "docs" / "webhooks.md").read_text(),
                            re.S)
    assert len(snippet.strip().splitlines()) <= 18
    port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(snippet.replace('"whsec_..."', repr(SECRET)).replace('("0.0.0.0", 8080)', f'("127.0.0.1", {port})')
                      .replace("class Hook(BaseHTTPRequestHandler):", "class Hook(BaseHTTPRequestHandler):\n"
                               "    def do_GET(self): self.send_response(200); self.end_headers()"))
    process = spawn([sys.executable, str(script)], tmp_path / "receiver.log", cwd=str(ROOT))
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=30, process=process)
        body = json.dumps({"id": "e1", "type": "video.asset.ready", "created_at": "x", "data": {"id": "a1"}}).encode()
        header = webhooks.signature_header(body, SECRET)
        url = f"http://127.0.0.1:{port}/hooks"
        assert httpx.post(url, content=body, headers={webhooks.SIGNATURE_HEADER: header}).status_code == 204
        assert httpx.post(url, content=body.replace(b"a1", b"a2"),
                          headers={webhooks.SIGNATURE_HEADER: header}).status_code == 400
        assert httpx.post(url, content=body).status_code == 400
    finally:
        stop_process(process)
    assert "video.asset.ready a1" in (tmp_path / "receiver.log").read_text()


@STACK
def test_the_local_stack_delivers_to_loopback_and_to_the_settings_endpoint(moto_server, tmp_path):
    """What `pixelflow stack up` adds: the dispatcher as a supervised child, loopback receivers
    allowed, and PIXELFLOW_WEBHOOK_URL / PIXELFLOW_WEBHOOK_SECRET as endpoint `default`."""
    from pixelflow.local.processes import free_port
    from pixelflow.local.stack import Stack, StackConfig

    settings = webhook_settings(webhook_allowed_networks=[])
    registered, simplest = Receiver(), Receiver()
    config = StackConfig(home=tmp_path / "stack", api_port=free_port(), env={
        **{k: v for k, v in webhook_env(settings).items() if k != "PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS"},
        "PIXELFLOW_WEBHOOK_URL": simplest.url, "PIXELFLOW_WEBHOOK_SECRET": SECRET})
    stack = Stack(config, log=lambda message: None)
    stack.aws_endpoint, stack.api_url = moto_server, "http://127.0.0.1:9/api"
    try:
        stack.start_api()
        stack.start_dispatcher()
        headers = {"Authorization": f"Bearer {stack.api_token}"}
        with httpx.Client(base_url=stack.http_api_url, headers=headers, timeout=30) as client:
            endpoint = client.post("/v1/webhooks", json={"url": registered.url}).json()["data"]
            assert [e["id"] for e in client.get("/v1/webhooks").json()["data"]] == ["default", endpoint["id"]]
            upload = client.post("/v1/uploads", json={"filename": "stack.mp4", "size": 5}).json()["data"]
        for receiver, secret in ((registered, endpoint["secret"]), (simplest, SECRET)):
            (request,) = wait_for(lambda: receiver.requests, timeout=60, what="the stack's delivery")
            event = webhooks.verify(request.body, request.headers[webhooks.SIGNATURE_HEADER], secret)
            assert (event["type"], event["data"]["id"]) == (webhooks.UPLOAD_CREATED, upload["id"])
    finally:
        stack.down()
        registered.close()
        simplest.close()


@STACK
def test_a_cancelled_upload_is_an_event_after_its_creation(moto_server, tmp_path):
    settings = webhook_settings()
    api = start_api(settings)
    receiver = Receiver()
    dispatcher = start_dispatcher(settings, tmp_path)
    try:
        endpoint = _register(api, receiver.url)
        upload = _upload(api, "cancel.mp4")
        with api.client() as client:
            assert client.delete(f"/v1/uploads/{upload['id']}").json()["data"]["status"] == "cancelled"
            assert client.delete(f"/v1/uploads/{upload['id']}").status_code == 200  # again: no second event
        wait_for(lambda: len(receiver.requests) >= 2, timeout=60, what="both events")
        bodies = [webhooks.verify(r.body, r.headers[webhooks.SIGNATURE_HEADER], endpoint["secret"])
                  for r in receiver.requests]
        assert [(b["type"], b["data"]["id"], b["data"]["status"]) for b in bodies] == [
            (webhooks.UPLOAD_CREATED, upload["id"], "waiting"), (webhooks.UPLOAD_CANCELLED, upload["id"], "cancelled")]
        assert bodies[1]["data"]["url"] is None  # no presigned URL ever leaves in an event
        assert len(_delivery(settings, endpoint_id=endpoint["id"])) == 2
    finally:
        stop_process(dispatcher)
        receiver.close()
        api.stop()
