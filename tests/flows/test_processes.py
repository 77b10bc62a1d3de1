"""The flow in other processes: a worker SIGKILLed after the PR, then resumed; a served run cancelled for real.

State shared between processes lives in ``durable_fakes`` (a JSON file); the Prefect server is the session's
harness; persisted task results are in the same local storage for every process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import get_current_settings
from prefect.states import Cancelling

from flows.dev_cycle import resume_dev_cycle
from promptship.domain.request import DevRequest, conversation_id_for
from promptship.store import Store
from promptship.wiring import installed
from tests.flows.durable_fakes import JsonState, durable_services

pytestmark = pytest.mark.flow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _request() -> DevRequest:
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", auto_merge=True)


def _env(fakes: Path) -> dict[str, str]:
    settings = get_current_settings()
    return {
        **os.environ,
        "PREFECT_API_URL": str(settings.api.url),
        "PREFECT_LOCAL_STORAGE_PATH": str(settings.results.local_storage_path),
        "PROMPTSHIP_SERVICES_FACTORY": "tests.flows.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # the caller's PYTHONPATH after the checkout: a worktree's own sources win over the installed ones
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def _wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 180, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def read_run(run_id: uuid.UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def run_state(run_id: uuid.UUID) -> str:
    """The run's state name; an assertion error when it ended any other way than Completed."""
    state = read_run(run_id).state
    assert state is None or not (state.is_final() and not state.is_completed()), (
        f"run {run_id} ended {state.name}: {state.message}"
    )
    return state.name if state else ""


def _flow_runs_of(request: DevRequest) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=200)
    return [r for r in runs if r.parameters.get("request", {}).get("prompt") == request.prompt]


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed by PID (their whole session) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def test_sigkilled_run_after_the_pr_resumes_without_a_second_pr_or_agent_run(
    prefect_harness: None, tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    fakes = tmp_path / "fakes"
    state = JsonState(fakes)
    (fakes / "hold-merge").write_text("")
    request = _request()
    script = (
        "import sys\n"
        "from flows.dev_cycle import dev_cycle\n"
        "from promptship.domain.request import DevRequest\n"
        "dev_cycle(DevRequest.model_validate_json(sys.argv[1]))\n"
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", script, request.model_dump_json()],
        cwd=REPO_ROOT,
        env=_env(fakes),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    spawned.append(worker)
    _wait_for(lambda: (fakes / "at-merge").exists() or worker.poll() is not None, "the worker to reach the merge")
    assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    os.killpg(worker.pid, signal.SIGKILL)  # the process dies mid-merge: no state change reaches Prefect
    worker.wait(timeout=30)
    (fakes / "hold-merge").unlink()

    (killed,) = _flow_runs_of(request)
    assert killed.state is not None and killed.state.is_running()  # Prefect never learns it died
    before = state.read()
    assert before["pr_creations"] == 1 and not before.get("images")

    with installed(durable_services(fakes)):
        report = resume_dev_cycle(str(killed.id), force=True)

    after = state.read()
    assert report.outcome == "deployed"
    assert after["pr_creations"] == 1  # the PR of the killed run was found, not opened again
    (conversation,) = after["conversations"].values()
    assert conversation["runs"] == 1  # the agent worked once, in the killed process
    assert len(after["images"]) == 1 and after["merges"] == 1
    with get_client(sync_client=True) as client:
        old = client.read_flow_run(killed.id)
    assert old.state is not None and old.state.is_crashed()


def test_cancelling_a_served_run_interrupts_the_agent_comments_on_the_pr_and_records_it(
    prefect_harness: None, tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    from prefect.deployments import run_deployment

    fakes = tmp_path / "fakes"
    state = JsonState(fakes)
    (fakes / "hold-merge").write_text("")
    request = _request()
    name = f"cancel-{uuid.uuid4().hex[:6]}"
    script = f"from flows.dev_cycle import dev_cycle\ndev_cycle.serve(name={name!r}, print_starting_message=False)\n"
    log = (tmp_path / "runner.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=_env(fakes),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    spawned.append(runner)

    def deployment_exists() -> bool:
        assert runner.poll() is None, (tmp_path / "runner.log").read_text()[-3000:]
        with get_client(sync_client=True) as client:
            try:
                client.read_deployment_by_name(f"dev-cycle/{name}")
            except Exception:
                return False
        return True

    _wait_for(deployment_exists, "the runner to register its deployment")
    flow_run = run_deployment(f"dev-cycle/{name}", parameters={"request": request.model_dump(mode="json")}, timeout=0)
    assert isinstance(flow_run, FlowRun)

    def at_merge() -> bool:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run.id).state
        assert current is None or not current.is_final(), f"the served run ended {current.name}: {current.message}"
        return (fakes / "at-merge").exists()

    _wait_for(at_merge, "the served run to reach the merge", log=tmp_path / "runner.log")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelling(message="cancelled by the test"))

        def cancelled() -> bool:
            current = client.read_flow_run(flow_run.id).state
            return current is not None and current.is_cancelled()

        _wait_for(cancelled, "the run to be Cancelled", log=tmp_path / "runner.log")
    key = request.run_key
    _wait_for(lambda: conversation_id_for(key) in state.read().get("cancelled", []), "the agent to be cancelled")

    shared = state.read()
    assert shared.get("merges", 0) == 0 and not shared.get("images")  # nothing after the cancel point happened
    pr_number = shared["prs"][key]["number"]
    assert [c[1] for c in shared.get("comments", [])] == [pr_number]
    assert "cancelled" in shared["comments"][0][2]
    store = durable_services(fakes).sink
    assert isinstance(store, Store)
    stored = store.run(key)
    assert stored is not None and stored.outcome == "cancelled"
    assert stored.flow_run_id == str(flow_run.id)
    assert [r.step for r in stored.steps][-2:] == ["wait_for_ci#1", "report"]  # what finished before the cancel
