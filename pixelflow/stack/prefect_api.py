"""Queries to the local stack's Prefect server: its REST API, the ``local`` deployment's flow
runs, the work pool's workers and links into the UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pixelflow.stack.config import DEPLOYMENT_NAME, FLOW_NAME, WORK_POOL


@dataclass(frozen=True)
class PrefectApi:
    """The Prefect server of a local stack.

    Attributes:
        api_url: Its REST API (``http://127.0.0.1:<port>/api``).
        ui_url: Its UI.
    """

    api_url: str
    ui_url: str

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the Prefect API and return the decoded JSON answer.

        Raises:
            httpx.HTTPStatusError: When the server answers with an error status.
        """
        import httpx

        response = httpx.request(method, f"{self.api_url}{path}", timeout=15, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment_id(self) -> str:
        """Id of the ``transcode/local`` deployment."""
        return self.api("GET", f"/deployments/name/{FLOW_NAME}/{DEPLOYMENT_NAME}")["id"]

    def flow_runs(self) -> list[dict[str, Any]]:
        """Flow runs of the local deployment, newest first."""
        body = {
            "deployments": {"id": {"any_": [self.deployment_id()]}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 200,
        }
        return self.api("POST", "/flow_runs/filter", json=body)

    def flow_run_for(self, key: str, etag: str | None = None) -> dict[str, Any] | None:
        """The newest flow run of the local deployment for an uploaded key (and ETag)."""
        from pixelflow.core.ids import normalize_etag

        for run in self.flow_runs():
            params = run.get("parameters") or {}
            if params.get("key") == key and (etag is None or normalize_etag(params.get("etag")) == normalize_etag(etag)):
                return run
        return None

    def flow_run_url(self, flow_run_id: str) -> str:
        """Link to a flow run in the UI."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    def worker_online(self, name: str | None = None) -> bool:
        """Whether a worker of the ``pixelflow-local`` pool (the one called ``name``) is online."""
        try:
            workers = self.api("POST", f"/work_pools/{WORK_POOL}/workers/filter", json={})
        except Exception:
            return False
        return any(w.get("status") == "ONLINE" and name in (None, w.get("name")) for w in workers)
