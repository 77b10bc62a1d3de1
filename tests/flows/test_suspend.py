"""Waiting without holding a worker, for real: a process worker runs ``dev-cycle`` from a deployment on the session's
Prefect server; a run whose wait outlasts ``pipeline.suspend_after_s`` suspends (its flow-run process exits), the
webhook receiver (or ``promptship sweep``) resumes it, and the resumed run takes every finished step from the cache.

Shared state between the test, the worker's flow-run processes and the receiver is the durable fakes' JSON file and
the store under it (``durable_fakes``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from pydantic import SecretStr

from promptship.domain.request import DevRequest, branch_for, conversation_id_for
from promptship.domain.webhooks import sign
from promptship.servers.resumer import PrefectRunResumer, sweep_waits
from promptship.servers.webhook import create_app, running_asgi
from promptship.settings import Settings
from promptship.store import Store
from promptship.store.webhooks import WebhookDeliveries
from promptship_sandbox.prefect_server import is_alive, live_descendants, process_group
from tests.flows.durable_fakes import DurableCodeHost, JsonState, durable_services
from tests.flows.test_processes import REPO_ROOT, _env, _wait_for, read_run, run_state

pytestmark = [pytest.mark.flow, pytest.mark.webhook]

SECRET = "suspend-test-secret"


@dataclass
class Platform:
    fakes: Path
    state: JsonState
    deployment: str
    worker: subprocess.Popen[bytes]
    log: Path
    store: Store

    def submit(self, request: DevRequest) -> FlowRun:
        run = run_deployment(self.deployment, parameters={"request": request.model_dump(mode="json")}, timeout=0)
        assert isinstance(run, FlowRun)
        return run


def _pid_of(run: FlowRun) -> int:
    assert run.infrastructure_pid, "the worker recorded no process for the run"
    return int(str(run.infrastructure_pid).rsplit(":", 1)[-1])


@pytest.fixture(scope="module")
def platform(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A process work pool, the dev-cycle deployment on it (this checkout as its working directory) and one
    worker, whose flow runs use the durable fakes and suspend after 1 s of waiting."""
    tmp = tmp_path_factory.mktemp("suspend")
    fakes = tmp / "fakes"
    state = JsonState(fakes)
    pool, name = f"suspend-{uuid.uuid4().hex[:6]}", "dev-cycle-suspend"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("dev-cycle")
        client.create_deployment(
            flow_id=flow_id,
            name=name,
            work_pool_name=pool,
            entrypoint="flows/dev_cycle.py:dev_cycle",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}],
        )
    env = {
        **_env(fakes),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "30",
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "1",
    }
    log = tmp / "worker.log"
    argv = [sys.executable, "-m", "promptship.cli", "worker", "--pool", pool]
    with process_group(argv, cwd=REPO_ROOT, env=env, log_path=log) as worker:
        store = durable_services(fakes).sink
        assert isinstance(store, Store)
        yield Platform(fakes, state, f"dev-cycle/{name}", worker, log, store)


@pytest.fixture
def receiver(platform: Platform) -> Iterator[str]:
    """The webhook receiver on the fakes' store (the one the runs record their waits in); its base URL."""
    settings = Settings()
    settings.github.webhook_secret = SecretStr(SECRET)
    settings.github.allowed_repositories = ["demo/chat-app"]

    class NoStarts:
        def start(self, trigger: Any) -> str:
            raise AssertionError("this test triggers no run through the receiver")

    app = create_app(settings, NoStarts(), deliveries=WebhookDeliveries(platform.store.engine))
    with running_asgi(app) as url:
        yield url
        app.state.receiver.wait_idle(30)


def _deliver(url: str, event: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": uuid.uuid4().hex,
        "X-Hub-Signature-256": sign(SECRET.encode(), body),
    }
    return httpx.post(f"{url}/github/webhook", content=body, headers=headers, timeout=30)


def _suspended(platform: Platform, run: FlowRun, what: str) -> float:
    """Wait until ``run`` is Suspended and its flow-run process gone; seconds from Suspended to the exit."""
    _wait_for(lambda: run_state(run.id) == "Suspended", f"the run to suspend {what}", log=platform.log)
    seen = time.monotonic()
    pid = _pid_of(read_run(run.id))
    _wait_for(lambda: not is_alive(pid), "the suspended run's process to exit", timeout_s=60, log=platform.log)
    return time.monotonic() - seen


def _finished(platform: Platform, run: FlowRun) -> FlowRun:
    _wait_for(lambda: run_state(run.id) == "Completed", "the resumed run to complete", log=platform.log)
    return read_run(run.id)


def _task_runs(run: FlowRun) -> dict[str, list[str]]:
    """State names of the flow run's task runs, by task name ("Completed" = its body ran, "Cached" = from the
    cache)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])), limit=200)
    out: dict[str, list[str]] = {}
    for t in runs:
        out.setdefault(t.name.rsplit("-", 1)[0], []).append(t.state.name if t.state else "")
    return out


def _waits_of(platform: Platform, run: FlowRun) -> list[Any]:
    return [w for w in platform.store.waits().all() if w.flow_run_id == str(run.id)]


def _request(**changes: Any) -> DevRequest:
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", **changes)


def test_a_run_waiting_for_ci_suspends_and_a_ci_event_resumes_it_to_deploy_with_every_side_effect_once(
    platform: Platform, receiver: str
) -> None:
    (platform.fakes / "ci-pending").write_text("")
    request = _request(auto_merge=True)
    key = request.run_key
    run = platform.submit(request)
    exit_s = _suspended(platform, run, "in its CI wait")
    print(f"suspended run's process exited {exit_s:.2f} s after Suspended")
    assert live_descendants(platform.worker.pid) == []  # nothing of the run holds a process: only the worker is left

    (wait,) = _waits_of(platform, run)
    sha = platform.state.read()["branches"][branch_for(key)]
    assert (wait.kind, wait.label, wait.sha, wait.flow_run_id) == ("ci", "wait_for_ci#1", sha, str(run.id))
    stored = platform.store.attempt_steps(wait.attempt_id)
    suspended_at = wait.suspended_at
    assert suspended_at is not None and all(s.ended_at <= suspended_at for s in stored)
    assert "wait_for_ci#1" not in [s.step for s in stored]  # the look before the wait is not a step
    assert platform.store.lease_holder(key) == str(run.id)  # the request stays held while its run has no process

    (platform.fakes / "ci-pending").unlink()
    answer = _deliver(
        receiver,
        "check_suite",
        {"action": "completed", "repository": {"full_name": request.repository}, "check_suite": {"head_sha": sha}},
    )
    assert answer.status_code == 202 and answer.json()["outcome"] == "ci"
    done = _finished(platform, run)

    shared = platform.state.read()
    report = platform.store.run(key)
    assert report is not None and report.outcome == "deployed"
    assert shared["pr_creations"] == 1 and shared["merges"] == 1 and len(shared["images"]) == 1
    assert shared["conversations"][conversation_id_for(key)]["runs"] == 1  # the agent worked once
    steps = [s.step for s in report.steps]
    assert len(steps) == len(set(steps))
    # before the suspension: each finished step's record is from the first process, not written again after
    after = {s.step: s for s in platform.store.attempt_steps(wait.attempt_id)}
    for before in stored:
        assert after[before.step].ended_at == before.ended_at, before.step
    # every step's body ran exactly once over both processes; the resumed process took the earlier ones cached
    tasks = _task_runs(done)
    for name in ("route", "generate_code", "compile_check", "open_pull_request", "wait_for_ci", "merge", "roll_out"):
        assert tasks[name].count("Completed") == 1, (name, tasks[name])
    assert "Cached" in tasks["generate_code"] and "Cached" in tasks["open_pull_request"]
    assert _waits_of(platform, run) == []  # it waits for nothing any more
    assert platform.store.lease_holder(key) is None


def test_a_merge_wait_resumed_by_a_pr_closed_without_merge_ends_stopped(platform: Platform, receiver: str) -> None:
    (platform.fakes / "ci-pending").unlink(missing_ok=True)  # CI passes at once: the run waits for the person
    request = _request(auto_merge=False)
    key = request.run_key
    run = platform.submit(request)
    _suspended(platform, run, "in its wait for a human merge")
    (wait,) = _waits_of(platform, run)
    images_before = len(platform.state.read().get("images", []))
    pr = platform.state.read()["prs"][key]
    assert (wait.kind, wait.label, wait.pr_number) == ("merge", "merge", pr["number"])

    DurableCodeHost(platform.state).set_pr_state(pr["number"], "closed")
    answer = _deliver(
        receiver,
        "pull_request",
        {
            "action": "closed",
            "number": pr["number"],
            "repository": {"full_name": request.repository},
            "pull_request": {"number": pr["number"], "merged": False},
        },
    )
    assert answer.status_code == 202 and answer.json()["outcome"] == "pull_request"
    _finished(platform, run)

    report = platform.store.run(key)
    assert report is not None and report.outcome == "stopped"
    shared = platform.state.read()
    assert len(shared.get("images", [])) == images_before  # nothing was deployed
    assert branch_for(key) not in shared["branches"]  # the closed PR's branch is deleted
    merge_step = next(s for s in report.steps if s.step == "merge")
    assert merge_step.verdict == "closed"


def test_the_sweep_resumes_a_run_whose_ci_finished_without_a_webhook(platform: Platform) -> None:
    (platform.fakes / "ci-pending").write_text("")
    request = _request(auto_merge=True)
    key = request.run_key
    run = platform.submit(request)
    _suspended(platform, run, "in its CI wait")
    waits = platform.store.waits()
    host = DurableCodeHost(platform.state)
    resumer = PrefectRunResumer(waits)

    first = sweep_waits(waits, resumer, host)
    assert first.resumed == {} and str(run.id) in first.still_waiting  # CI still runs: it stays suspended

    (platform.fakes / "ci-pending").unlink()  # CI ends; no webhook is configured to say so
    swept = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "sweep"],
        cwd=REPO_ROOT,
        env=_env(platform.fakes),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert f"resumed {run.id} (condition)" in swept.stdout
    _finished(platform, run)

    report = platform.store.run(key)
    assert report is not None and report.outcome == "deployed"
    assert platform.state.read()["pr_creations"] == len(platform.state.read()["prs"])  # one PR per request
    assert _waits_of(platform, run) == []
