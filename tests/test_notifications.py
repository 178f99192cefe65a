"""The unsigned webhook automations of earlier versions are retired: ``pixelflow notify install``
refuses and names the signed webhooks that replace it, and ``pixelflow notify remove`` deletes
what an earlier version installed on a real Prefect server (a Webhook block and CallWebhook
automations that any posted Prefect event could trigger)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest


def test_notify_install_is_retired_and_names_the_signed_webhooks(capsys):
    from pixelflow.cli import main

    assert main(["notify", "install", "--webhook", "https://hooks.example.com/x", "--events", "ready"]) == 2
    err = capsys.readouterr().err
    assert "retired" in err and "pixelflow webhooks create URL" in err and "docs/webhooks.md" in err


@pytest.mark.integration
def test_notify_remove_deletes_what_an_earlier_version_installed(prefect_server, capsys):
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from pixelflow.cli import main

    name = f"notify-{uuid.uuid4().hex[:8]}"
    # What `pixelflow notify install` made before it was retired.
    block_id = Webhook(method="POST", url="http://127.0.0.1:9/hooks").save(name, overwrite=True)
    with get_client(sync_client=True) as client:
        for kind in ("ready", "errored"):
            client.create_automation(AutomationCore(
                name=f"{name}-{kind}",
                trigger=EventTrigger(expect={f"pixelflow.asset.{kind}"}, match={"prefect.resource.id": "pixelflow.asset.*"},
                                     posture=Posture.Reactive, threshold=1, within=timedelta(0)),
                actions=[CallWebhook(block_document_id=block_id, payload="{}")]))
    assert main(["notify", "remove", "--name", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [f"{name}-ready", f"{name}-errored", f"webhook/{name}"]
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(f"{name}-ready") == []
        assert client.read_automations_by_name(f"{name}-errored") == []
    assert main(["notify", "remove", "--name", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == []
