"""Fair under load, for real: dev-cycle runs as flow-run processes of a process worker on a Prefect server of
its own, with a per-repository limit of 1 and a global limit of 2 (each repository's work queue and the work pool:
``promptship.adapters.prefect_queues``), on the durable fakes (``promptship_sandbox.durable_fakes``). The worker
itself runs at most 2 flow runs at once: fewer than one repository's burst.

- A burst on one repository does not starve another: B's one run ends while A's first run still works and A's
  other two wait behind it — queued on the server, with no flow-run process (read from ``/proc`` under the
  worker), so the worker's own cap is never filled by them; A never has more than one run working at a time (read
  from the store's attempt intervals), and every run deploys with one PR. B is started the way the UI form, a
  schedule and the event trigger start runs (in the deployment's own queue): it moves itself to its
  repository's queue first.
- ``/metrics`` counts each repository's runs that are queued, running and waiting (suspended) while they are; a
  suspended run holds no place (the next run of its repository works while it waits), and takes one again when
  it is resumed.
- A run whose process was killed gives its place back as soon as it shows Crashed.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from promptship.adapters.prefect_queues import moved_run, submit_dev_cycle
from promptship.bench.processes import DEV_CYCLE, ProcessPlatform, process_platform
from promptship.domain.fairness import repository_queue_name
from promptship.domain.report import RunReport
from promptship.domain.request import DevRequest
from promptship.servers.metrics import Census, metrics_endpoint, prefect_run_census
from promptship.servers.resumer import PrefectRunResumer, sweep_waits
from promptship.servers.webhook import running_asgi
from promptship.settings import Settings
from promptship.store import Store
from promptship_sandbox import credentials
from promptship_sandbox.durable_fakes import DurableCodeHost, JsonState, durable_services
from promptship_sandbox.prefect_server import live_descendants
from tests.flows.test_processes import read_run, run_state

pytestmark = pytest.mark.flow

PER_REPOSITORY = 1
GLOBAL = 2
WORKER_LIMIT = 2  # the worker's own cap on flow-run processes (prefect.yaml's deployments had 25)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPlatform]:
    """A ``prefect server start`` of our own, a process work pool with the dev-cycle deployment and one worker
    (at most ``WORKER_LIMIT`` runs at once) whose runs have the limits above and suspend after 1 s of waiting."""
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

    tmp = tmp_path_factory.mktemp("fairness")
    worker_env = {
        "PROMPTSHIP_RUNS__PER_REPOSITORY_LIMIT": str(PER_REPOSITORY),
        "PROMPTSHIP_RUNS__GLOBAL_LIMIT": str(GLOBAL),
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "1",  # a CI wait longer than 1 s suspends the run
    }
    with running_prefect_server(tmp / "prefect") as server, using_prefect(server):
        with process_platform(tmp, server.env(), worker_env=worker_env, worker_limit=WORKER_LIMIT) as platform:
            yield platform


def _store(platform: ProcessPlatform) -> Store:
    store = durable_services(platform.fakes).sink
    assert isinstance(store, Store)
    return store


def _repository(team: str) -> str:
    return f"{team}-{uuid.uuid4().hex[:6]}/app"


def _request(repository: str) -> DevRequest:
    return DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", repository=repository, auto_merge=True)


def _submit(platform: ProcessPlatform, request: DevRequest) -> uuid.UUID:
    """A run in its repository's work queue, as the webhook receiver's starter makes it."""
    with get_client(sync_client=True) as client:
        return submit_dev_cycle(
            client,
            platform.deployment_ids[DEV_CYCLE],
            platform.pool,
            {"request": request.model_dump(mode="json")},
            request.repository,
            per_repository_limit=PER_REPOSITORY,
            global_limit=GLOBAL,
        )


def _submit_to_deployment(platform: ProcessPlatform, request: DevRequest) -> uuid.UUID:
    """A run in the deployment's own work queue, as the UI form, a schedule or the event trigger makes it."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            platform.deployment_ids[DEV_CYCLE], parameters={"request": request.model_dump(mode="json")}
        )
    return run.id


def _held(platform: ProcessPlatform) -> set[str]:
    """The flow runs that have a live process under the worker (each flow-run process carries its run's id)."""
    out: set[str] = set()
    for pid in live_descendants(platform.worker.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        out |= {v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"PREFECT__FLOW_RUN_ID=")}
    return out


def _state_type(run_id: uuid.UUID) -> str:
    state = read_run(run_id).state
    return state.type.value if state else ""


def _runs_of_queue(platform: ProcessPlatform, repository: str, types: tuple[str, ...]) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkQueueFilter,
        WorkQueueFilterName,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types]))
            ),
            work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=[repository_queue_name(repository)])),
        )


def _working(platform: ProcessPlatform, repository: str) -> int:
    """Runs of the repository's work queue that count against its limit (Pending or Running)."""
    return len(_runs_of_queue(platform, repository, ("PENDING", "RUNNING")))


def _until(platform: ProcessPlatform, what: str, condition: Callable[[], bool], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert platform.worker.poll() is None, f"the worker exited: {platform._log_tail()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{platform._log_tail()}")
        time.sleep(0.2)


def _reports(platform: ProcessPlatform, requests: list[DevRequest]) -> list[RunReport]:
    store = _store(platform)
    reports = [store.run(r.run_key) for r in requests]
    assert all(r is not None for r in reports)
    return [r for r in reports if r is not None]


def _most_at_once(reports: list[RunReport]) -> int:
    """The most attempts that were working at the same moment (each from its start to its report)."""
    edges = sorted([(r.started_at, 1) for r in reports] + [(r.ended_at, -1) for r in reports])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _deployed_once(platform: ProcessPlatform, requests: list[DevRequest]) -> None:
    """Every request deployed, with a PR of its own and its image rolled out exactly once."""
    state = JsonState(platform.fakes).read()
    assert [r.outcome for r in _reports(platform, requests)] == ["deployed"] * len(requests)
    prs = [state["prs"][r.run_key]["number"] for r in requests]
    assert len(set(prs)) == len(requests)  # one PR per request, none shared
    rolled = [state["rolled"][r.run_key]["image"] for r in requests]
    assert [state["images"].count(image) for image in rolled] == [1] * len(requests)


def test_a_busy_repository_does_not_starve_another_and_never_runs_over_its_limit(platform: ProcessPlatform) -> None:
    fakes = platform.fakes
    (fakes / "ci-pending").unlink(missing_ok=True)  # CI passes at once: nothing suspends here
    busy, quiet = _repository("team-a"), _repository("team-b")
    a = [_request(busy) for _ in range(WORKER_LIMIT + 1)]  # waiting in their processes, they would fill the worker
    # B's prompt carries a credential (as one typed into the UI form may): it must not reach Prefect in clear
    token = credentials.github_token()
    b = [_request(quiet).model_copy(update={"prompt": f"Add GET /version; the CI token is {token}"})]
    before = JsonState(fakes).read().get("pr_creations", 0)
    # A's first run takes A's place and keeps it (held inside its agent) until B is done
    hold = fakes / f"hold-agent-{a[0].run_key}"
    hold.write_text("")
    held: set[str] = set()  # every flow run seen with a process while B runs
    try:
        ids_a = [_submit(platform, a[0])]
        _until(platform, "A's first run to work in its agent", lambda: (fakes / f"at-agent-{a[0].run_key}").exists())
        ids_a += [_submit(platform, r) for r in a[1:]]  # the rest of A's burst, all of it ahead of B
        # B as the UI form (or a schedule, or the event trigger) starts it: in the deployment's own queue
        (entry_b,) = [_submit_to_deployment(platform, r) for r in b]

        def b_done() -> bool:
            held.update(_held(platform))
            with get_client(sync_client=True) as client:
                moved = moved_run(client, entry_b)
            return moved is not None and run_state(moved) == "Completed"

        _until(platform, "B's run to complete while A works", b_done, timeout_s=600)
        store = _store(platform)
        assert [store.run(r.run_key) for r in a] == [None] * len(a)  # none of A's runs has ended: queued behind
        assert [_state_type(i) for i in ids_a[1:]] == ["SCHEDULED"] * (len(a) - 1)  # queued on the server
    finally:
        hold.unlink(missing_ok=True)
    # the queued runs held no process (the worker's cap of 2 was never theirs to fill), the working one did
    assert held & {str(i) for i in ids_a[1:]} == set()
    assert str(ids_a[0]) in held
    # B's entry run ended at once, naming the run it moved to; that one ran in B's queue
    (moved_b,) = _runs_of_queue(platform, quiet, ("COMPLETED",))
    entry = read_run(entry_b).state
    assert entry is not None and entry.name == "Completed" and str(moved_b.id) in (entry.message or "")
    with get_client(sync_client=True) as client:
        assert moved_run(client, entry_b) == moved_b.id
    # the credential the "UI form" gave is in Prefect's parameters of neither run: both hold the sealed form
    for run_id in (entry_b, moved_b.id):
        parameters = read_run(run_id).parameters
        assert parameters["request"].get("sealed"), parameters
        assert token not in json.dumps(parameters)
    _until(platform, "A's runs to complete", lambda: all(run_state(i) == "Completed" for i in ids_a), timeout_s=600)

    reports_a, (report_b,) = _reports(platform, a), _reports(platform, b)
    assert report_b.ended_at < min(r.ended_at for r in reports_a)
    assert _most_at_once(reports_a) <= PER_REPOSITORY
    assert _most_at_once([*reports_a, report_b]) <= GLOBAL
    _deployed_once(platform, a + b)
    assert JsonState(fakes).read()["pr_creations"] - before == len(a + b)
    # the limits are Prefect's, at the configured sizes, and every place came back
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(platform.pool).concurrency_limit == GLOBAL
        for repository in (busy, quiet):
            queue = client.read_work_queue_by_name(repository_queue_name(repository), work_pool_name=platform.pool)
            assert queue.concurrency_limit == PER_REPOSITORY, repository
            assert _working(platform, repository) == 0, repository


@pytest.fixture
def metrics_url(tmp_path: Path) -> Iterator[str]:
    """``/metrics`` served over HTTP. Its server thread does not inherit this test's Prefect settings (a context
    variable), so its census is read under them, as a metrics process reads its own ``PREFECT_API_URL``."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    api = get_current_settings().api.url

    async def census() -> Census:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            return await prefect_run_census()

    app = Starlette(routes=[Route("/metrics", metrics_endpoint(Settings(home=tmp_path / "home"), census))])
    with running_asgi(app) as url:
        yield url


def _census(url: str) -> dict[tuple[str, str], float]:
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert "promptship_runs" in families  # the KPIs are still served beside the census
    family: Any = families.get("promptship_runs_by_state")
    samples = family.samples if family is not None else []
    return {(s.labels["repository"], s.labels["state"]): s.value for s in samples}


def _of(census: dict[tuple[str, str], float], repository: str) -> dict[str, float]:
    return {state: n for (repo, state), n in census.items() if repo == repository}


def test_metrics_count_queued_running_and_waiting_runs_and_a_suspended_run_holds_no_slot(
    platform: ProcessPlatform, metrics_url: str
) -> None:
    fakes = platform.fakes
    repository = _repository("team-m")
    requests = [_request(repository) for _ in range(4)]
    (fakes / "ci-pending").write_text("")
    (fakes / "at-agent").unlink(missing_ok=True)
    try:
        # 1: the first run reaches its CI wait and suspends (waiting): it gives its slot back
        first = _submit(platform, requests[0])
        _until(platform, "the first run to suspend", lambda: run_state(first) == "Suspended")
        # 2: so the second run of the same repository (limit 1) gets the slot and works: held inside the agent
        (fakes / "hold-agent").write_text("")
        second = _submit(platform, requests[1])
        _until(platform, "the second run to work in the agent", lambda: (fakes / "at-agent").exists())
        # 3: two more runs of the repository stay scheduled on the server, with no process: queued
        rest = [_submit(platform, r) for r in requests[2:]]
        time.sleep(3)  # several of the worker's polls (every 1 s): still queued, not running
        assert [_state_type(i) for i in rest] == ["SCHEDULED", "SCHEDULED"]
        assert _held(platform) & {str(i) for i in rest} == set()
        assert _of(_census(metrics_url), repository) == {"queued": 2, "running": 1, "waiting": 1}
        assert _working(platform, repository) == 1
    finally:
        (fakes / "hold-agent").unlink(missing_ok=True)
        (fakes / "ci-pending").unlink(missing_ok=True)
    # CI is green now: the working runs go on one by one; the sweep resumes the suspended one, which queues again
    # (Prefect makes a resumed suspended run Scheduled again, in its repository's queue)
    working = [second, *rest]
    _until(
        platform, "the three unsuspended runs to complete", lambda: all(run_state(i) == "Completed" for i in working)
    )
    store = _store(platform)
    swept = sweep_waits(store.waits(), PrefectRunResumer(store.waits()), DurableCodeHost(JsonState(fakes)))
    assert str(first) in swept.resumed
    _until(platform, "the resumed run to complete", lambda: run_state(first) == "Completed")
    assert _of(_census(metrics_url), repository) == {}  # nothing of it is live any more
    _deployed_once(platform, requests)
    assert _working(platform, repository) == 0  # the resumed run gave back the place it took again


def test_a_crashed_runs_place_comes_back_when_it_shows_crashed(platform: ProcessPlatform) -> None:
    """The slot-lease test of the old mechanism, restated: a queue counts only Pending and Running runs, so a run
    whose process died gives its place back once Prefect shows it Crashed — the worker reports it at once; a run
    whose worker died too stays Running until ``promptship sweep`` marks it Crashed (``flows/sweep.py``)."""
    fakes = platform.fakes
    (fakes / "ci-pending").unlink(missing_ok=True)
    (fakes / "at-agent").unlink(missing_ok=True)
    repository = _repository("team-c")
    crashed, after = _request(repository), _request(repository)
    (fakes / "hold-agent").write_text("")
    try:
        first = _submit(platform, crashed)
        _until(platform, "the first run to work in the agent", lambda: (fakes / "at-agent").exists())
        pid = int((fakes / "at-agent").read_text())
        second = _submit(platform, after)  # queued behind the working run
        time.sleep(2)
        assert _state_type(second) == "SCHEDULED"
        os.kill(pid, signal.SIGKILL)  # the flow-run process dies in the middle of its work
    finally:
        (fakes / "hold-agent").unlink(missing_ok=True)
    _until(platform, "the killed run to show Crashed", lambda: getattr(read_run(first).state, "name", "") == "Crashed")
    _until(platform, "the next run of the repository to complete", lambda: run_state(second) == "Completed")
    _deployed_once(platform, [after])
    assert _working(platform, repository) == 0
