"""The crash-recovery automations install on a real Prefect server, idempotently."""

import json
import subprocess
import sys


def test_automations_install_twice_leaves_one_of_each(prefect_server):
    from prefect.client.orchestration import get_client

    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "pixelflow.cli", "automations", "install", "--json"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"installed": ["pixelflow-crashed-without-heartbeat", "pixelflow-rerun-crashed"]}
    with get_client(sync_client=True) as client:
        for name in ("pixelflow-crashed-without-heartbeat", "pixelflow-rerun-crashed"):
            [automation] = client.read_automations_by_name(name)
            assert automation.enabled
        [rerun] = client.read_automations_by_name("pixelflow-rerun-crashed")
        assert rerun.trigger.expect == {"prefect.flow-run.Crashed"}
        assert rerun.actions[0].state.value == "SCHEDULED"
