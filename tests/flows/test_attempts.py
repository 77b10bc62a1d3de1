"""Request key vs attempt: scheduled days, code versions, one attempt at a time, and KPIs fed by typed facts."""

from __future__ import annotations

import importlib
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Running, Scheduled

from flows.dev_cycle import dev_cycle, resume_dev_cycle
from promptship.domain.kpi import kpi_inputs
from promptship.domain.request import DevRequest
from promptship.errors import AttemptInProgress, CodeHostError
from promptship_sandbox.fakes import FakeCodeHost, FakeHealthProbe, Faults

pytestmark = pytest.mark.flow


def _request(**kw: object) -> DevRequest:
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", **kw)  # type: ignore[arg-type]


def _scheduled_run(request: DevRequest, day: datetime):
    """A flow run as Prefect's scheduler creates it (its tag, its expected start), run here in-process."""
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(
            dev_cycle,
            parameters={"request": request.model_dump(mode="json")},
            tags=["auto-scheduled", "promptship"],
            state=Scheduled(scheduled_time=day),
        )
    return run_flow(dev_cycle, flow_run=flow_run, parameters={"request": request})


def test_two_scheduled_days_are_two_attempts_with_their_own_records_and_one_pr(make_services):
    services = make_services()
    request = _request(auto_merge=True)

    day1 = _scheduled_run(request, datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    day2 = _scheduled_run(request, datetime(2026, 12, 1, 6, 0, tzinfo=UTC))

    assert (day1.attempt_id, day2.attempt_id) == (f"{request.run_key}-20261130", f"{request.run_key}-20261201")
    assert day1.outcome == "deployed" and day2.outcome == "already_done"
    assert services.code_host.pr_creations == 1 and services.cluster.rollout_count == 1
    # each attempt has its own step records: day 2 re-ran (and re-recorded) every step instead of replaying day 1
    first = {s.step: s for s in services.sink.attempt_steps(day1.attempt_id)}
    second = {s.step: s for s in services.sink.attempt_steps(day2.attempt_id)}
    assert set(first) == set(second)
    assert all(second[name].started_at > first[name].ended_at for name in first if name != "report")
    assert second["open_pull_request"].facts.found and not first["open_pull_request"].facts.found
    # and their own KPIs: two attempts, the merge and the deploy counted once for the request
    facts = [f for f in services.sink.run_facts() if f.run_key == request.run_key]
    assert sorted(f.attempt_id for f in facts) == sorted([day1.attempt_id, day2.attempt_id])
    assert [f.deploy_attempted for f in sorted(facts, key=lambda f: f.attempt_id)] == [True, False]


def test_a_recurring_request_is_a_new_request_each_day(make_services):
    services = make_services()
    request = _request(auto_merge=True, recurring=True)

    day1 = _scheduled_run(request, datetime(2026, 11, 30, 6, 0, tzinfo=UTC))
    day2 = _scheduled_run(request, datetime(2026, 12, 1, 6, 0, tzinfo=UTC))

    assert day1.run_key != day2.run_key  # the occurrence is part of the request key
    assert (day1.outcome, day2.outcome) == ("deployed", "deployed")
    assert services.code_host.pr_creations == 2 and len(services.agent.conversations) == 2


def _versioned_agent(directory: Path, version: int):
    """A code agent whose class lives in a module file of its own, so the test can change its code."""
    module = directory / "versioned_agent_mod.py"
    module.write_text(
        "from promptship_sandbox.fakes import FakeCodeAgent\n\n\n"
        f"class VersionedAgent(FakeCodeAgent):\n    VERSION = {version}\n"
    )
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    sys.modules.pop("versioned_agent_mod", None)
    return importlib.import_module("versioned_agent_mod").VersionedAgent


def test_a_step_whose_code_changed_does_not_return_its_cached_result(make_services, tmp_path: Path):
    agent_class = _versioned_agent(tmp_path, 1)
    faults = Faults()
    faults.add("merge", CodeHostError("403 Forbidden: token lacks the contents:write scope", status=403))
    services = make_services(agent=agent_class(), code_host=FakeCodeHost(faults=faults))
    request = _request(auto_merge=True)

    state = dev_cycle(request, return_state=True)
    assert state.is_failed()
    before = {s.step: s for s in services.sink.steps(request.run_key)}

    # the agent adapter's code changes (an upgrade) before the failed attempt is resumed
    _versioned_agent(tmp_path, 2)
    report = resume_dev_cycle(str(state.state_details.flow_run_id))

    assert report.outcome == "deployed" and report.attempt_id == before["route"].attempt_id
    after = {s.step: s for s in report.steps}
    # generate_code uses the agent: its old cached result was not returned, the step ran again ...
    assert after["generate_code"].started_at > before["generate_code"].ended_at
    # ... and found its conversation instead of starting the agent again
    assert after["generate_code"].facts.found is True
    (conversation,) = services.agent.conversations.values()
    assert conversation["runs"] == 1
    # steps whose code did not change came from the cache
    assert after["compile_check"].started_at == before["compile_check"].started_at
    assert after["route"].started_at == before["route"].started_at
    assert services.code_host.pr_creations == 1 and services.cluster.rollout_count == 1


def test_a_second_submission_while_an_attempt_runs_is_refused_and_the_issue_told(make_services):
    services = make_services()
    request = _request(auto_merge=True, issue_number=7)
    with get_client(sync_client=True) as client:  # another flow run, alive, holds the request
        other = client.create_flow_run(dev_cycle, parameters={"request": request.model_dump(mode="json")})
        client.set_flow_run_state(other.id, Running(), force=True)
    services.sink.begin_attempt(request.run_key, flow_run_id=str(other.id))

    with pytest.raises(AttemptInProgress, match="already being worked on"):
        dev_cycle(request)

    assert services.code_host.pr_creations == 0 and len(services.agent.conversations) == 0
    ((repository, number, body),) = services.code_host.comments
    assert (repository, number) == (request.repository, 7) and str(other.id) in body


def test_a_crashed_holder_whose_lease_expired_is_taken_over(make_services):
    services = make_services()
    request = _request(auto_merge=True)
    with get_client(sync_client=True) as client:
        other = client.create_flow_run(dev_cycle, parameters={"request": request.model_dump(mode="json")})
        client.set_flow_run_state(other.id, Running(), force=True)  # SIGKILLed: Prefect still says Running
    first = services.sink.begin_attempt(request.run_key, flow_run_id=str(other.id), lease_ttl_s=0.001)

    report = dev_cycle(request)

    assert report.outcome == "deployed"
    assert report.attempt_id == first.id  # the unfinished attempt was continued, not a new one started


def test_every_input_the_kpis_read_is_written_by_some_step(make_services):
    """Runs the real flow through a repair and a rollback; the inputs come from RunFacts' typed metadata."""
    services = make_services(
        code_host=FakeCodeHost(ci=["failed", "passed", "passed"]),
        health=FakeHealthProbe(verdicts=["healthy", "unhealthy", "healthy"]),
    )
    repaired = dev_cycle(_request(auto_merge=True))
    rolled_back = dev_cycle(_request(auto_merge=True))
    assert (repaired.outcome, rolled_back.outcome) == ("deployed", "rolled_back")

    records = [*services.sink.attempt_steps(repaired.attempt_id), *services.sink.attempt_steps(rolled_back.attempt_id)]
    inputs = kpi_inputs()
    assert len(inputs) >= 15
    missing = []
    for step, fact in inputs:
        written = [
            getattr(r, fact) if fact in type(r).model_fields else getattr(r.facts, fact)
            for r in records
            if r.name == step
        ]
        if not any(value is not None for value in written):
            missing.append(f"{step}.{fact}")
    assert missing == [], f"KPI inputs no step writes: {missing}"


def test_a_run_is_named_for_what_it_is_and_tagged_with_repository_and_outcome(make_services):
    make_services()
    token = "ghp_" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"
    request = _request(auto_merge=True, issue_number=5).model_copy(
        update={"prompt": f"Add GET /version, deploy with {token} ({uuid.uuid4().hex[:6]})"}
    )

    state = dev_cycle(request, return_state=True)

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
    assert run.name.startswith("chat-app #5: Add GET /version, deploy with ")
    assert token not in run.name
    assert {"repo:demo/chat-app", "outcome:deployed"} <= set(run.tags)


def test_a_follow_up_while_an_attempt_runs_is_queued_behind_it_and_says_so(make_services):
    import threading
    import time

    services = make_services()
    services.settings.pipeline.merge_timeout_s = 60  # how long a follow-up may wait in the queue
    first = dev_cycle(_request(auto_merge=False, issue_number=8))  # ends "waiting": its PR stays open
    with get_client(sync_client=True) as client:  # attempt 2 of the same request is running elsewhere
        other = client.create_flow_run(dev_cycle, parameters={"request": {"prompt": "x" * 5}})
        client.set_flow_run_state(other.id, Running(), force=True)
    active = services.sink.begin_attempt(first.run_key, flow_run_id=str(other.id))
    pr_number = services.code_host.find_pull_request(first.repository, first.run_key).number

    follow_up = DevRequest(
        prompt="also add a /ready endpoint", continues=first.run_key, source_pr=pr_number, auto_merge=True
    )
    done: list[object] = []
    waiter = threading.Thread(target=lambda: done.append(dev_cycle(follow_up)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("queued" in b for (_, n, b) in services.code_host.comments):
        time.sleep(0.2)
    assert done == []  # still waiting behind the active attempt ...
    (status,) = [b for (_, n, b) in services.code_host.comments if n == pr_number]
    assert "A follow-up is queued behind the active attempt" in status and str(other.id) in status

    services.sink.end_attempt(active.id, "waiting", holder=str(other.id))  # ... until that attempt ends
    waiter.join(60)
    (report,) = done
    assert report.outcome == "deployed" and report.run_key == first.run_key  # type: ignore[attr-defined]
    assert report.attempt_number == 3  # type: ignore[attr-defined]


def test_another_store_never_gets_this_stores_cached_step_results(make_services, tmp_path):
    """Attempt ids repeat across stores (KEY-a1 in a reset database, another test): Prefect's result storage
    outlives them, so the cache key also names the attempt's start — a fresh store runs every step itself."""
    from promptship.settings import Settings
    from promptship.wiring import installed
    from promptship_sandbox.fakes import fake_services

    first = make_services()
    request = _request(auto_merge=True)
    assert dev_cycle(request).outcome == "deployed" and first.code_host.pr_creations == 1

    settings = Settings(home=tmp_path / "another-home")
    settings.health.url = "http://127.0.0.1:9/health"
    other = fake_services(settings)
    with installed(other):
        again = dev_cycle(request)

    assert again.attempt_id == f"{request.run_key}-a1"  # the same id, in another store
    assert again.outcome == "deployed"
    assert other.code_host.pr_creations == 1 and other.cluster.rollout_count == 1  # its own PR and rollout


def test_the_attempt_of_a_flow_run_is_found_by_its_exact_id_among_many(tmp_path: Path) -> None:
    from promptship.store import Store, make_engine

    store = Store(make_engine(f"sqlite:///{tmp_path / 'store.db'}"))
    store.create_schema()
    runs = [str(uuid.uuid4()) for _ in range(3)]
    first = store.begin_attempt("req-one", flow_run_id=runs[0])
    store.end_attempt(first.id, "failed", holder=runs[0])
    continued = store.begin_attempt("req-one", flow_run_id=runs[1])  # the unfinished attempt goes on
    other = store.begin_attempt("req-two", flow_run_id=runs[2])

    assert continued.id == first.id
    found = [store.attempt_of_flow_run(run) for run in runs]
    assert [a.id if a else None for a in found] == [first.id, first.id, other.id]
    assert store.attempt_of_flow_run(runs[0][:8]) is None  # a prefix of a known id is not that id
    assert store.attempt_of_flow_run(str(uuid.uuid4())) is None
