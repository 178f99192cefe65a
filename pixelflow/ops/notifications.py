"""Webhook notifications on asset events, as Prefect automations.

The ``transcode`` flow emits one Prefect event per outcome, about the resource
``pixelflow.asset.<asset_id>``:

* ``pixelflow.asset.ready``: the asset is published (payload: ``asset_id``, ``bucket``, ``key``,
  ``status`` = ``ready``, ``master_playlist``, ``renditions``, ``duration``);
* ``pixelflow.asset.errored``: the upload was not published (``status`` = ``rejected`` or
  ``failed``, ``code``, ``message``);
* ``pixelflow.asset.alert``: a run gave up after ``PIXELFLOW_MAX_ATTEMPTS`` (``code``, ``message``).

:func:`install` hangs a webhook on them: one Prefect ``Webhook`` block holding the URL (and any
headers) and one automation per event whose ``CallWebhook`` action posts :func:`payload_template`,
rendered by the Prefect server with the triggering event. Everything is named after ``name``, so
installing again converges instead of duplicating.

Example:
    >>> sorted(EVENTS)
    ['alert', 'errored', 'ready']
    >>> automation_name("pixelflow-notify", "ready")
    'pixelflow-notify-ready'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

#: Short names of the asset events, as accepted by ``pixelflow notify install --events``.
EVENTS: dict[str, str] = {
    "ready": "pixelflow.asset.ready",
    "errored": "pixelflow.asset.errored",
    "alert": "pixelflow.asset.alert",
}
DEFAULT_EVENTS = ("ready", "errored")
DEFAULT_NAME = "pixelflow-notify"
ASSET_RESOURCE = "pixelflow.asset.*"

#: Fields of the event payload copied into the webhook body (``null`` when the event has none).
PAYLOAD_FIELDS = ("asset_id", "bucket", "key", "status", "master_playlist", "renditions", "duration", "code",
                  "message")

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def payload_template() -> str:
    """The Jinja template of the webhook body: a JSON object rendered from the triggering event.

    Every field is always present: ``event``, ``event_id`` (deduplicate on it: deliveries are at
    least once), ``occurred``, ``flow_run_id`` and :data:`PAYLOAD_FIELDS`.
    """
    lines = [
        '"event": {{ event.event | tojson }}',
        '"event_id": "{{ event.id }}"',
        '"occurred": "{{ event.occurred.isoformat() }}"',
        "{%- set run = event.resource_in_role.get('flow-run') %}\n"
        "  \"flow_run_id\": {{ (run.id.replace('prefect.flow-run.', '') if run else none) | tojson }}",
    ]
    lines += [f'"{name}": {{{{ event.payload.{name} | default(none) | tojson }}}}' for name in PAYLOAD_FIELDS]
    return "{\n  " + ",\n  ".join(lines) + "\n}\n"


def automation_name(name: str, kind: str) -> str:
    """The automation that notifies ``kind`` events for the notification target ``name``."""
    return f"{name}-{kind}"


def parse_events(text: str) -> list[str]:
    """``"ready,errored"`` -> ``["ready", "errored"]`` (full event names are accepted too).

    Raises:
        ValueError: For an unknown event or an empty list.
    """
    kinds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind = part.removeprefix("pixelflow.asset.")
        if kind not in EVENTS:
            raise ValueError(f"unknown event {part!r}: choose from {', '.join(EVENTS)}")
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise ValueError("no events given")
    return kinds


def parse_header(text: str) -> tuple[str, str]:
    """``"Authorization: Bearer x"`` -> ``("Authorization", "Bearer x")``.

    Raises:
        ValueError: Without a ``:`` or a header name.
    """
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"a header is 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def check_name(name: str) -> str:
    """Block document names allow lowercase letters, digits and dashes only."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid name: use lowercase letters, digits and dashes")
    return name


def check_template(template: str) -> str:
    """Check a body template the way the Prefect server will (Jinja syntax, loop limits).

    Raises:
        ValueError: When the server would refuse it.
    """
    from prefect.server.utilities.user_templates import TemplateSecurityError, validate_user_template
    from jinja2 import TemplateSyntaxError

    try:
        validate_user_template(template)
    except (TemplateSyntaxError, TemplateSecurityError) as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    return template


def asset_automation(name: str, kind: str, block_document_id: UUID, template: str | None = None):
    """The automation posting ``kind`` events to the webhook block, as a Prefect ``AutomationCore``."""
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=automation_name(name, kind),
        description=f"POSTs every {EVENTS[kind]} event to the {name} webhook.",
        trigger=EventTrigger(
            expect={EVENTS[kind]},
            match={"prefect.resource.id": ASSET_RESOURCE},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=block_document_id, payload=template or payload_template())],
    )


@dataclass
class Installed:
    """What :func:`install` left on the Prefect server."""

    block: str
    block_document_id: UUID
    automations: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block, "block_document_id": str(self.block_document_id),
                "automations": self.automations, "removed": self.removed}


def save_webhook(name: str, url: str, headers: dict[str, str] | None = None) -> UUID:
    """Create or overwrite the ``Webhook`` block ``name`` (POST, JSON). Returns its document id."""
    from prefect.blocks.webhook import Webhook

    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return Webhook(method="POST", url=url, headers=all_headers).save(check_name(name), overwrite=True)


def install(client, url: str, kinds: list[str] | tuple[str, ...] = DEFAULT_EVENTS, name: str = DEFAULT_NAME,
            headers: dict[str, str] | None = None, template: str | None = None) -> Installed:
    """Create or update the webhook block and one automation per event kind (idempotent).

    Automations of this ``name`` for kinds not listed are deleted, so the server ends up with
    exactly the requested set.

    Args:
        client: A synchronous Prefect client (``get_client(sync_client=True)``).
        url: Where to POST.
        kinds: Keys of :data:`EVENTS`.
        name: The block's name and the automations' prefix.
        headers: Extra request headers (stored as secrets in the block).
        template: A Jinja body template instead of :func:`payload_template`.
    """
    if template is not None:
        check_template(template)
    block_id = save_webhook(name, url, headers)
    result = Installed(block=f"webhook/{name}", block_document_id=block_id)
    for kind in EVENTS:
        existing = client.read_automations_by_name(automation_name(name, kind))
        if kind not in kinds:
            for automation in existing:
                client.delete_automation(automation.id)
            if existing:
                result.removed.append(automation_name(name, kind))
            continue
        automation = asset_automation(name, kind, block_id, template)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
        else:
            client.create_automation(automation)
        result.automations.append(automation.name)
    return result


def remove(client, name: str = DEFAULT_NAME) -> list[str]:
    """Delete the automations and the webhook block ``name``. Returns what was deleted."""
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
