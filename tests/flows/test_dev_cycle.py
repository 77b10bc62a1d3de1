"""The dev_cycle flow end to end with scripted fakes: outcomes, not call lists."""

from __future__ import annotations

import uuid

import pytest

from flows.dev_cycle import dev_cycle
from promptship.domain.request import DevRequest
from promptship_sandbox.fakes import FakeCluster, FakeCodeHost, FakeHealthProbe

pytestmark = pytest.mark.flow


def _request(**kw: object) -> DevRequest:
    # a unique prompt per test: the run key (and so every cache key) is per request
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", **kw)  # type: ignore[arg-type]


def test_happy_path_deploys_and_records_every_step(make_services):
    services = make_services()
    report = dev_cycle(_request(auto_merge=True))
    assert report.outcome == "deployed"
    steps = [s.step for s in report.steps]
    assert steps == [
        "route",
        "generate_code",
        "compile_check",
        "open_pull_request",
        "wait_for_ci#1",
        "merge",
        "wait_for_image",
        "roll_out",
        "check_health",
        "report",
    ]
    assert services.code_host.pr_creations == 1
    assert report.image and services.cluster.current_image(_request().deploy) == report.image
    stored = services.sink.run(report.run_key)
    assert stored is not None and stored.outcome == "deployed"
    assert {s.step for s in services.sink.steps(report.run_key)} == set(steps)


def test_second_run_of_same_request_opens_no_second_pr_and_deploys_once(make_services):
    """Re-submitting a request whose attempt finished starts attempt 2, which finds the PR, the merge and the
    rollout of attempt 1 and so ends ``already_done`` (the issue's semantics; it ended "deployed" before)."""
    services = make_services()
    request = _request(auto_merge=True)
    first = dev_cycle(request)
    second = dev_cycle(request)
    assert (first.outcome, second.outcome) == ("deployed", "already_done")
    assert (first.attempt_number, second.attempt_number) == (1, 2)
    assert first.attempt_id != second.attempt_id and first.run_key == second.run_key
    assert services.code_host.pr_creations == 1
    assert services.cluster.rollout_count == 1
    assert len(services.agent.conversations) == 1


def test_ci_red_then_repair_green(make_services):
    services = make_services(code_host=FakeCodeHost(ci=["failed", "passed"]))
    report = dev_cycle(_request(auto_merge=True))
    assert report.outcome == "deployed"
    steps = [s.step for s in report.steps]
    assert "repair#1" in steps and "wait_for_ci#2" in steps
    conv = next(iter(services.agent.conversations.values()))
    assert "E   assert 1 == 2" in conv["instructions"][-1]


def test_ci_red_after_all_repairs_stops(make_services):
    make_services(code_host=FakeCodeHost(ci=["failed", "failed", "failed"]))
    report = dev_cycle(_request(auto_merge=True))
    assert report.outcome == "stopped"
    assert [s.verdict for s in report.steps if s.step.startswith("wait_for_ci")] == ["failed"] * 3


def test_rollout_stalled_rolls_back(make_services):
    cluster = FakeCluster(rollouts=["complete", "stalled"])
    services = make_services(cluster=cluster)
    first = dev_cycle(_request(auto_merge=True))
    second = dev_cycle(_request(auto_merge=True))
    assert first.outcome == "deployed"
    assert second.outcome == "rolled_back"
    assert services.cluster.current_image(_request().deploy) == first.image


def test_health_503_rolls_back(make_services):
    services = make_services(health=FakeHealthProbe(verdicts=["healthy", "unhealthy", "healthy"]))
    first = dev_cycle(_request(auto_merge=True))
    second = dev_cycle(_request(auto_merge=True))
    assert (first.outcome, second.outcome) == ("deployed", "rolled_back")
    assert services.cluster.current_image(_request().deploy) == first.image
    assert [s.verdict for s in second.steps if s.step.startswith("check_health")] == ["unhealthy", "healthy"]


def test_gitops_request_is_deployed_by_the_gitops_deployer_only(make_services):
    push_cluster, gitops = FakeCluster(), FakeCluster(rollouts=["complete", "stalled"])
    services = make_services(cluster=push_cluster, gitops=gitops)
    first = dev_cycle(_request(auto_merge=True, deploy_mode="gitops"))
    second = dev_cycle(_request(auto_merge=True, deploy_mode="gitops"))
    assert (first.outcome, second.outcome) == ("deployed", "rolled_back")
    assert gitops.current_image(_request().deploy) == first.image  # the revert restored the first image
    assert push_cluster.rollout_count == 0  # exactly one deployer per environment
    assert services.gitops is gitops


def test_gitops_request_without_a_gitops_repository_fails_clearly(make_services):
    from promptship.errors import ConfigError

    cluster = FakeCluster()
    services = make_services(cluster=cluster)
    request = _request(auto_merge=True, deploy_mode="gitops")
    with pytest.raises(ConfigError, match="PROMPTSHIP_KUBE__GITOPS_REPO_URL"):
        dev_cycle(request)
    assert cluster.rollout_count == 0
    assert services.sink.run(request.run_key).outcome == "failed"
