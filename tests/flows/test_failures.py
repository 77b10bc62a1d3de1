"""Service errors, crashes and resume: the flow on a real Prefect server, outcomes read back from its API."""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Running

from flows.dev_cycle import dev_cycle, resume_dev_cycle
from promptship.domain.request import DevRequest
from promptship.errors import CodeHostError, InvalidRequest
from promptship_sandbox.fakes import FakeCodeHost, Faults, transient

pytestmark = pytest.mark.flow


class ProcessDeath(BaseException):
    """Stands for the worker process dying mid-step (not an Exception: nothing in the flow may catch it)."""


def _request(**kw: object) -> DevRequest:
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", **kw)  # type: ignore[arg-type]


def _task_runs(flow_run_id: UUID) -> dict[str, TaskRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0]: r for r in runs}


def _flow_run_of(request: DevRequest) -> FlowRun:
    """The newest dev-cycle flow run whose request parameter is ``request``."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=200)
    for run in runs:
        if run.parameters.get("request", {}).get("prompt") == request.prompt:
            return run
    raise AssertionError("no flow run for this request")


def test_retryable_service_error_is_retried_and_the_run_deploys(make_services):
    faults = Faults()
    faults.add("wait_for_ci", transient(CodeHostError))
    services = make_services(code_host=FakeCodeHost(faults=faults))
    request = _request(auto_merge=True)

    state = dev_cycle(request, return_state=True)

    report = state.result()
    assert report.outcome == "deployed"
    assert [s.step for s in report.steps].count("wait_for_ci#1") == 1
    assert [s.step for s in services.sink.steps(report.run_key)].count("wait_for_ci#1") == 1
    runs = _task_runs(state.state_details.flow_run_id)
    assert runs["wait_for_ci"].run_count == 2  # failed once, retried, completed
    assert runs["wait_for_ci"].state is not None and runs["wait_for_ci"].state.is_completed()
    assert services.code_host.pr_creations == 1 and services.cluster.rollout_count == 1


def test_non_retryable_service_error_fails_the_run_and_records_it(make_services):
    faults = Faults()
    faults.add("merge", CodeHostError("403 Forbidden: token lacks the contents:write scope", status=403))
    services = make_services(code_host=FakeCodeHost(faults=faults))
    request = _request(auto_merge=True)

    state = dev_cycle(request, return_state=True)

    assert state.is_failed()
    stored = services.sink.run(request.run_key)
    assert stored is not None and stored.outcome == "failed"
    assert stored.steps[-1].step == "report"
    assert (stored.steps[-1].error or "").startswith("after wait_for_ci#1: CodeHostError: 403 Forbidden")
    recorded = {s.step for s in services.sink.steps(request.run_key)}
    assert "merge" not in recorded and "roll_out" not in recorded
    # nothing past the failing step happened, and the failing step was not retried
    assert services.cluster.rollout_count == 0 and services.code_host.pr_creations == 1
    assert _task_runs(state.state_details.flow_run_id)["merge"].run_count == 1


def test_crash_after_the_pr_then_resume_opens_no_second_pr_and_does_not_rerun_the_agent(make_services):
    faults = Faults()
    faults.add("merge", ProcessDeath())
    services = make_services(code_host=FakeCodeHost(faults=faults))
    request = _request(auto_merge=True)

    with pytest.raises(ProcessDeath):
        dev_cycle(request)

    crashed = _flow_run_of(request)
    assert crashed.state is not None and crashed.state.is_crashed()
    assert services.code_host.pr_creations == 1 and services.cluster.rollout_count == 0

    report = resume_dev_cycle(str(crashed.id))

    assert report.outcome == "deployed"
    assert services.code_host.pr_creations == 1
    (conversation,) = services.agent.conversations.values()
    assert conversation["runs"] == 1  # the agent worked once; the resumed run took its result from the cache
    assert services.cluster.rollout_count == 1
    assert report.flow_run_id != str(crashed.id)


def test_resume_refuses_a_run_that_may_still_be_running(make_services):
    make_services()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(dev_cycle, parameters={"request": _request().model_dump(mode="json")})
        client.set_flow_run_state(run.id, Running(), force=True)
    with pytest.raises(InvalidRequest, match="--force"):
        resume_dev_cycle(str(run.id))
    with pytest.raises(InvalidRequest, match="not a UUID"):
        resume_dev_cycle("not-a-run")
