"""Flow-run operations on the Prefect API: find failed transcodes and schedule them again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

FLOW_NAME = "transcode"


@dataclass(frozen=True)
class RetryResult:
    flow_run_id: str
    name: str
    previous_state: str
    scheduled: bool
    reason: str = ""


def retry_flow_run(client, flow_run_id: str | UUID) -> RetryResult:
    """Schedule a finished deployment run again (what the UI's Retry button does).

    Task runs whose results were persisted (published renditions) are not redone.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Scheduled

    run = client.read_flow_run(UUID(str(flow_run_id)))
    previous = run.state.type.value if run.state else "UNKNOWN"
    terminal = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
    if run.state is None or run.state.type not in terminal:
        return RetryResult(str(run.id), run.name, previous, False, "the run has not finished")
    if run.deployment_id is None:
        return RetryResult(str(run.id), run.name, previous, False,
                           "the run has no deployment; run `pixelflow transcode s3://BUCKET/KEY` again instead")
    result = client.set_flow_run_state(run.id, Scheduled(message="Retried with pixelflow retry"), force=True)
    if result.status == SetStateStatus.ABORT:
        return RetryResult(str(run.id), run.name, previous, False, str(result.details.reason))
    return RetryResult(str(run.id), run.name, previous, True)


def failed_transcode_runs(client, since: datetime | None = None, deployment: str | None = None, limit: int = 200):
    """Failed or crashed runs of the transcode flow (optionally of one deployment) since a time."""
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName,
                                                FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])))
    if since is not None:
        run_filter.start_time = FlowRunFilterStartTime(after_=since)
    deployment_filter = DeploymentFilter(name=DeploymentFilterName(any_=[deployment])) if deployment else None
    return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])), flow_run_filter=run_filter,
                                 deployment_filter=deployment_filter, limit=limit)
