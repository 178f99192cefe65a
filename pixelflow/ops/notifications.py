"""Retired: the unsigned webhook automations of earlier ``pixelflow notify install``.

Earlier versions hung a Prefect ``CallWebhook`` automation on the ``pixelflow.asset.*`` Prefect
events: sent once, unsigned, and triggered by *any* event posted to the Prefect API, so anyone
who could post one could forge ``ready``. Apps now get signed webhooks, emitted only by
PixelFlow's own code when it records a change, and retried for a day
(:mod:`pixelflow.outbox`, ``pixelflow webhooks``, docs/webhooks.md). What remains here removes
what the old command installed.

Example:
    >>> automation_name("pixelflow-notify", "ready")
    'pixelflow-notify-ready'
"""

from __future__ import annotations

import re

#: Short names of the asset events the old automations were installed for.
EVENTS: dict[str, str] = {
    "ready": "pixelflow.asset.ready",
    "errored": "pixelflow.asset.errored",
    "alert": "pixelflow.asset.alert",
}
DEFAULT_NAME = "pixelflow-notify"
RETIRED = ("`pixelflow notify install` is retired: its Prefect automations were unsigned and could be triggered by "
           "a forged Prefect event. Register a signed webhook instead: pixelflow webhooks create URL (or POST "
           "/v1/webhooks); see docs/webhooks.md. `pixelflow notify remove` deletes what it installed before.")

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def automation_name(name: str, kind: str) -> str:
    """The automation the old command made for ``kind`` events of the target ``name``."""
    return f"{name}-{kind}"


def check_name(name: str) -> str:
    """Block document names allow lowercase letters, digits and dashes only."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid name: use lowercase letters, digits and dashes")
    return name


def remove(client, name: str = DEFAULT_NAME) -> list[str]:
    """Delete the automations and the webhook block the old ``pixelflow notify install`` made
    under ``name``. Returns what was deleted."""
    from prefect.exceptions import ObjectNotFound

    removed = []
    for kind in EVENTS:
        for automation in client.read_automations_by_name(automation_name(name, kind)):
            client.delete_automation(automation.id)
            removed.append(automation.name)
    try:
        document = client.read_block_document_by_name(check_name(name), "webhook", include_secrets=False)
    except ObjectNotFound:
        return removed
    client.delete_block_document(document.id)
    removed.append(f"webhook/{name}")
    return removed
