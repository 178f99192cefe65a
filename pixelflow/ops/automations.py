"""Prefect automations that keep crashed transcodes from staying crashed.

* ``pixelflow-crashed-without-heartbeat``: a transcode run (or a chunk's ``transcode-chunk``
  run) that stops sending heartbeats (its worker, container or machine is gone) is marked
  Crashed (a crashed chunk run is started again by its transcode run, never rescheduled). Flow
  runs send heartbeats every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (set it, e.g. to 30,
  in the worker's environment).
* ``pixelflow-rerun-crashed``: a Crashed transcode run is scheduled again; a worker picks it up
  and only what was not published yet is redone. The flow itself gives up after
  ``PIXELFLOW_MAX_ATTEMPTS`` attempts: the run ends Failed with ``too_many_attempts`` and a
  ``pixelflow.asset.alert`` event is emitted for notifications.

Install them once per Prefect server or workspace with ``pixelflow automations install``.
"""

from __future__ import annotations

from datetime import timedelta

from pixelflow.core.chunk_jobs import CHUNK_FLOW

FLOW_NAME = "transcode"
ZOMBIE = "pixelflow-crashed-without-heartbeat"
RERUN = "pixelflow-rerun-crashed"


def _flow_related(*names: str) -> dict[str, str | list[str]]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": list(names) if names else FLOW_NAME}


def ops_automations(heartbeat_seconds: int = 30) -> list:
    """The automations, as Prefect ``AutomationCore`` objects."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    terminal = {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed"}
    zombie = AutomationCore(
        name=ZOMBIE,
        description="Marks a transcode or transcode-chunk run Crashed when its heartbeats stop (worker, container or "
                    "machine lost).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *terminal},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            match_related=_flow_related(FLOW_NAME, CHUNK_FLOW),  # a lost chunk run: its dispatch starts it again
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=int(heartbeat_seconds * 2.5)),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="No heartbeat: the run's worker or container was lost.")],
    )
    rerun = AutomationCore(
        name=RERUN,
        description="Schedules a crashed transcode run again (the flow gives up after PIXELFLOW_MAX_ATTEMPTS).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            match_related=_flow_related(),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, message="Rescheduled after a crash", force=True)],
    )
    return [zombie, rerun]


def install(client, heartbeat_seconds: int = 30) -> list[str]:
    """Create or replace the automations (idempotent). Returns their names."""
    names = []
    for automation in ops_automations(heartbeat_seconds):
        for existing in client.read_automations_by_name(automation.name):
            client.delete_automation(existing.id)
        client.create_automation(automation)
        names.append(automation.name)
    return names
