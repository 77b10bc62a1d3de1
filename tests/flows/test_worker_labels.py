"""A worker whose label write is refused still runs the flow run (``promptship.prefect_worker``).

Under a burst, SQLite Prefect answers the worker's ``PATCH /flow_runs/{id}/labels`` with 503 (a read-then-write
that SQLite refuses at once; docs/BENCH.md "50 at once"), and Prefect's own worker then ends the run ``Crashed``
("Failed to submit flow run to infrastructure"). Here a fault proxy in front of the session's Prefect server
answers every label write of the worker with 503; the flow-run process talks to the server directly. The run must
complete, once.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import get_current_settings

from promptship_sandbox.faultproxy import running_fault_proxy
from promptship_sandbox.prefect_server import process_group

pytestmark = pytest.mark.flow

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_refused_label_write_does_not_crash_the_run(prefect_harness: None, tmp_path: Path) -> None:
    settings = get_current_settings()
    direct = str(settings.api.url)
    pool = f"labels-{uuid.uuid4().hex[:6]}"
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT / "sandbox" / "src"), str(REPO_ROOT)]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("bare-chain"),
            name=f"{pool}-bare-chain",
            work_pool_name=pool,
            entrypoint="src/promptship/bench/chain.py:bare_chain",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}],
            # the flow-run process talks to the server itself: only the worker's calls go through the proxy
            job_variables={"env": {"PREFECT_API_URL": direct}},
        )
        with running_fault_proxy(direct) as proxy:
            proxy.inject("http_503", count=1000, match="/api/flow_runs/", method="PATCH")
            env = {
                **os.environ,
                "PREFECT_API_URL": f"{proxy.url}/api",
                "PREFECT_LOCAL_STORAGE_PATH": str(settings.results.local_storage_path),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_CLIENT_MAX_RETRIES": "1",  # one retry of the label write, then the worker's own answer
                "PYTHONPATH": os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])),
            }
            log = tmp_path / "worker.log"
            argv = [sys.executable, "-m", "promptship.cli", "worker", "--pool", pool]
            with process_group(argv, cwd=REPO_ROOT, env=env, log_path=log) as worker:
                run = client.create_flow_run_from_deployment(deployment_id, idempotency_key=uuid.uuid4().hex)
                deadline = time.monotonic() + 240
                state = client.read_flow_run(run.id).state
                while not (state and state.is_final()) and time.monotonic() < deadline:
                    assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
                    time.sleep(0.5)
                    state = client.read_flow_run(run.id).state
            fired = proxy.fired["http_503"]
        states = client.read_flow_run_states(run.id)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    tail = log.read_text(errors="replace")[-3000:]
    assert fired >= 2, f"the label write was never refused: {tail}"  # the fault really hit the worker
    assert state is not None and state.name == "Completed", f"{state}: {tail}"
    assert [s.name for s in states].count("Completed") == 1
    assert [s.name for s in states].count("Crashed") == 0
    assert len(runs) == 1
