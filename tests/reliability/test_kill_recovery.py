"""Runs SIGKILLed at a named kill point in a real subprocess, then recovered — each test is a defect the
campaign found, or the recovery path it relies on.

The flow runs in a subprocess on the durable fakes (``promptship_sandbox.durable_fakes``: state in a JSON file
shared by processes) under the session's Prefect harness; the recovery runs in this process on the same fakes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings

from flows.dev_cycle import resume_dev_cycle
from flows.sweep import sweep
from promptship.domain.request import DevRequest
from promptship.faults import BETWEEN_MERGE_AND_ROLLOUT, DURING_ROLLBACK, KILL_AT_ENV, KILL_MARKERS_ENV, read_marker
from promptship.wiring import installed
from promptship_sandbox.durable_fakes import BASE_IMAGE, JsonState, durable_services

pytestmark = [pytest.mark.flow, pytest.mark.reliability]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "import sys\n"
    "from flows.dev_cycle import dev_cycle\n"
    "from promptship.domain.request import DevRequest\n"
    "dev_cycle(DevRequest.model_validate_json(sys.argv[1]))\n"
)


def _killed_run(fakes: Path, request: DevRequest, point: str) -> str:
    """Run the request in a subprocess killed at ``point``; return the id of its flow run (left Running)."""
    settings = get_current_settings()
    env = {
        **os.environ,
        "PREFECT_API_URL": str(settings.api.url),
        "PREFECT_LOCAL_STORAGE_PATH": str(settings.results.local_storage_path),
        "PROMPTSHIP_SERVICES_FACTORY": "promptship_sandbox.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        "PROMPTSHIP_TEST_LEASE_TTL_S": "2",
        KILL_AT_ENV: point,
        KILL_MARKERS_ENV: str(fakes),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path]),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, request.model_dump_json()],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stdout[-2000:] + done.stderr[-3000:]
    marker = read_marker(fakes, point)
    assert marker is not None and marker["point"] == point
    attempt = durable_services(fakes).sink.latest_attempt(request.run_key)
    assert attempt is not None and attempt.status == "running"
    store = durable_services(fakes).sink
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if store.attempt_of_flow_run(str(r.id)) is not None]
    (run,) = runs
    assert run.state is not None and run.state.is_running()  # Prefect never learns it died
    return str(run.id)


def test_a_rollback_killed_before_its_result_was_kept_is_not_undone_twice(
    prefect_harness: None, tmp_path: Path
) -> None:
    """Defect: the resumed rollback step undid again — with ``kubectl rollout undo`` semantics that puts the
    bad revision back. Now it finds the previous image serving and records the rollback as found."""
    fakes = tmp_path / "fakes"
    JsonState(fakes)
    (fakes / "unhealthy").write_text("")
    request = DevRequest(prompt=f"Add GET /version that breaks health ({uuid.uuid4().hex[:8]})", auto_merge=True)
    killed = _killed_run(fakes, request, DURING_ROLLBACK)
    assert JsonState(fakes).read()["rollbacks"] == 1

    ports = durable_services(fakes)
    with installed(ports):
        report = resume_dev_cycle(killed, force=True)

    state = JsonState(fakes).read()
    assert report.outcome == "rolled_back"
    assert state["rollbacks"] == 1 and state["serving"] == BASE_IMAGE
    assert state["revert_creations"] == 1 and state["pr_creations"] == 1
    (rollback,) = [s for s in ports.sink.steps(request.run_key) if s.name == "rollback"]
    assert rollback.verdict == "restored" and rollback.facts.found is True


def test_the_sweeper_resumes_a_run_whose_lease_expired_and_leaves_live_ones(
    prefect_harness: None, tmp_path: Path
) -> None:
    fakes = tmp_path / "fakes"
    request = DevRequest(prompt=f"Add GET /version returning the SHA ({uuid.uuid4().hex[:8]})", auto_merge=True)
    killed = _killed_run(fakes, request, BETWEEN_MERGE_AND_ROLLOUT)
    ports = durable_services(fakes, lease_ttl_s=2)
    time.sleep(2.5)  # the dead run's heartbeat stopped: its 2 s lease runs out
    with installed(ports):
        swept = sweep()
        again = sweep()  # the resumed run is over: nothing more to do

    # runs of other tests (other stores) are "not_started" here: this store never saw them
    ours = [(s.flow_run_id, s.action, s.outcome) for s in swept if s.action != "not_started"]
    assert ours == [(killed, "resumed", "deployed")]
    assert [s.action for s in again if s.flow_run_id == killed] in ([], ["over"])
    state = JsonState(fakes).read()
    assert state["pr_creations"] == 1 and state["merges"] == 1 and len(state["images"]) == 1
    (conversation,) = state["conversations"].values()
    assert conversation["runs"] == 1
    with get_client(sync_client=True) as client:
        old = client.read_flow_run(uuid.UUID(killed))
    assert old.state is not None and old.state.is_crashed()
