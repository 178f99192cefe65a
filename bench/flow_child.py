"""Run PixelFlow's ``transcode`` flow once, in this process (as ``pixelflow transcode`` does),
and write what happened as JSON.

The benchmark starts one of these per PixelFlow run, so the flow process's peak memory and CPU
are those of that run alone::

    python -m bench.flow_child <upload-bucket> <key> <result.json>

The environment points it at the services (``PREFECT_API_URL``, ``AWS_ENDPOINT_URL``) and
configures PixelFlow (``PIXELFLOW_*``).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    bucket, key, out_path = (argv if argv is not None else sys.argv[1:])[:3]
    started = time.time()
    from pixelflow.commands.transcode import run_in_process

    import flows.transcode  # noqa: F401 - timed apart from the run

    imported = time.time()
    state = run_in_process(bucket, key, return_state=True)
    finished = time.time()
    result: dict = {
        "flow_run_id": str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None,
        "state": state.type.value,
        "message": state.message,
        "started": started,
        "imported": imported,
        "finished": finished,
    }
    if state.is_completed():
        value = state.result(raise_on_failure=False)
        result["manifest"] = value if isinstance(value, dict) else None
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update({
        "self_maxrss": own.ru_maxrss * 1024,
        "self_cpu": own.ru_utime + own.ru_stime,
        "children_cpu": children.ru_utime + children.ru_stime,
        "children_maxrss": children.ru_maxrss * 1024,
    })
    with open(out_path, "w") as handle:
        json.dump(result, handle, indent=2, default=str)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
