"""Written back: the rollback reverted on the base branch, one status comment per request, the issue referenced.

The real flow and the real GitHubHost (PyGithub + git) on the local forge, whose CI runs the repository's
`make test`; the agent, LLM, cluster and health probe are scripted fakes (the rollback itself is shown on the
control plane by tests/cluster).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import FlowRunSort

from flows.dev_cycle import dev_cycle, resume_dev_cycle
from promptship.domain.request import DevRequest
from promptship.domain.writeback import REVERT_MARKER_PREFIX, STATUS_MARKER_PREFIX
from promptship.settings import Settings
from promptship.wiring import Ports, installed
from promptship_sandbox.fakes import FakeCluster, FakeCodeAgent, FakeHealthProbe, fake_services
from promptship_sandbox.forge import Forge, running_forge
from tests.github.conftest import MAKEFILE, NAME, OWNER, REPO, RecordingClock, client, make_host

pytestmark = [pytest.mark.writeback, pytest.mark.forge, pytest.mark.flow]

SEED_IMAGE = f"forge.local/{OWNER}/{NAME}/backend:seed"


class ProcessDeath(BaseException):
    """The worker dying mid-step (not an Exception: nothing in the flow may catch it)."""


class FixingAgent(FakeCodeAgent):
    """Also deletes BROKEN from the workspace: its change turns a red base branch green."""

    def result(self, handle: Any, *, timeout_s: float) -> Any:
        out = super().result(handle, timeout_s=timeout_s)
        task = self.conversations[handle.conversation_id]["task"]
        (Path(task.workspace) / "BROKEN").unlink(missing_ok=True)
        return out


class RepairingAgent(FakeCodeAgent):
    """Leaves BROKEN in place on its first try (CI goes red) and deletes it when asked to repair."""

    def result(self, handle: Any, *, timeout_s: float) -> Any:
        out = super().result(handle, timeout_s=timeout_s)
        conversation = self.conversations[handle.conversation_id]
        if len(conversation["instructions"]) > 1:
            (Path(conversation["task"].workspace) / "BROKEN").unlink(missing_ok=True)
        return out


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[Forge]:
    src = tmp_path / "src"
    (src / "backend").mkdir(parents=True)
    (src / "Makefile").write_text(MAKEFILE)
    (src / "backend" / "Dockerfile").write_text("FROM scratch\n")
    with running_forge(tmp_path / "forge") as f:
        f.seed_repository(OWNER, NAME, src)
        assert f.wait_idle(120)
        yield f


def _ports(forge: Forge, tmp_path: Path, **overrides: Any) -> Ports:
    settings = Settings(home=tmp_path / "home")
    settings.health.url = "http://127.0.0.1:9/health"
    cluster = overrides.pop("cluster", None) or FakeCluster()
    cluster.history.setdefault("demo/backend", [SEED_IMAGE])  # the version running before the change
    return fake_services(
        settings,
        code_host=make_host(forge, RecordingClock()),
        cluster=cluster,
        boundaries={"code_host": "protocol stand-in"},
        **overrides,
    )


@pytest.fixture
def run_on_forge(forge: Forge, tmp_path: Path, prefect_harness: None) -> Iterator[Any]:
    stack: list[Any] = []

    def install(**overrides: Any) -> Ports:
        ports = _ports(forge, tmp_path, **overrides)
        cm = installed(ports)
        cm.__enter__()
        stack.append(cm)
        return ports

    yield install
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _request(**kw: Any) -> DevRequest:
    return DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", repository=REPO, **kw)


def _tree(forge: Forge) -> str:
    return client(forge).get_repo(REPO).get_branch("main").commit.commit.tree.sha


def _reverts(forge: Forge) -> list[Any]:
    pulls = client(forge).get_repo(REPO).get_pulls(state="all")
    return [p for p in pulls if REVERT_MARKER_PREFIX in (p.body or "")]


def test_a_failed_health_gate_after_merge_is_reverted_by_a_merged_revert_pr(forge, run_on_forge):
    run_on_forge(health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))
    before = _tree(forge)

    report = dev_cycle(_request(auto_merge=True))

    assert report.outcome == "rolled_back" and report.revert_state == "merged"
    (revert,) = _reverts(forge)
    assert revert.merged and revert.html_url == report.revert_pr_url
    assert _tree(forge) == before  # the base branch says what is running again
    assert len(list(client(forge).get_repo(REPO).get_pulls(state="all"))) == 2


def test_the_revert_pr_body_carries_the_evidence(forge, run_on_forge):
    run_on_forge(health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))

    report = dev_cycle(_request(auto_merge=True))

    (revert,) = _reverts(forge)
    body = revert.body or ""
    assert "health gate: HTTP 503 (scripted)" in body  # the failing probes
    assert f"`{SEED_IMAGE}`" in body  # the image restored
    assert "time to restore | 0.0 s" in body
    original = next(p for p in client(forge).get_repo(REPO).get_pulls(state="all") if p.number != revert.number)
    assert original.html_url in body and original.merge_commit_sha in body
    assert report.run_key in body or "runs/flow-run/" in body  # a link to the run


def test_without_auto_merge_the_revert_pr_waits_for_a_person(forge, run_on_forge):
    run_on_forge(health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))
    repo = client(forge).get_repo(REPO)
    stop = threading.Event()

    def person_merges_the_first_pr() -> None:  # the reviewer merges the agent's PR once its CI is green
        while not stop.is_set():
            pulls = list(repo.get_pulls(state="open"))
            if pulls and pulls[0].mergeable:
                pulls[0].merge(merge_method="squash")
                return
            time.sleep(0.2)

    person = threading.Thread(target=person_merges_the_first_pr, daemon=True)
    person.start()
    try:
        report = dev_cycle(_request(auto_merge=False))
    finally:
        stop.set()
        person.join(10)

    assert report.outcome == "rolled_back" and report.revert_state == "open"
    (revert,) = _reverts(forge)
    assert revert.state == "open" and not revert.merged
    assert "waiting for a person" in "\n".join(c.body for c in repo.get_issue(1).get_comments())


def test_a_kill_during_the_write_back_then_resume_leaves_exactly_one_revert_pr(forge, run_on_forge):
    ports = run_on_forge(health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))
    host = ports.code_host
    real_upsert = host.upsert_comment
    died: list[bool] = []

    def dies_once(*args: Any, **kwargs: Any) -> None:
        if not died:  # after the revert PR was opened and merged, before its link is posted
            died.append(True)
            raise ProcessDeath()
        real_upsert(*args, **kwargs)

    host.upsert_comment = dies_once  # type: ignore[method-assign]
    request = _request(auto_merge=True)
    with pytest.raises(ProcessDeath):
        dev_cycle(request)
    assert len(_reverts(forge)) == 1

    with get_client(sync_client=True) as prefect:
        (crashed,) = [
            r
            for r in prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=50)
            if r.parameters.get("request", {}).get("prompt") == request.prompt
        ]
    report = resume_dev_cycle(str(crashed.id), force=True)

    assert report.outcome == "rolled_back" and report.revert_state == "merged"
    assert len(_reverts(forge)) == 1
    assert len(list(client(forge).get_repo(REPO).get_pulls(state="all"))) == 2


def test_the_original_pr_and_the_issue_get_one_comment_linking_the_revert(forge, run_on_forge):
    run_on_forge(health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))
    repo = client(forge).get_repo(REPO)
    issue = repo.create_issue(title="add /version", body="please")

    report = dev_cycle(_request(auto_merge=True, issue_number=issue.number))

    original = next(p for p in repo.get_pulls(state="all") if REVERT_MARKER_PREFIX not in (p.body or ""))
    for number in (original.number, issue.number):
        links = [c.body for c in repo.get_issue(number).get_comments() if report.revert_pr_url in c.body]
        assert len(links) == 1, number


def test_the_status_comment_is_one_comment_that_shows_each_stage(forge, run_on_forge):
    run_on_forge()
    repo = client(forge).get_repo(REPO)
    issue = repo.create_issue(title="add /version", body="please")
    request = _request(auto_merge=True, issue_number=issue.number)

    first = dev_cycle(request)
    second = dev_cycle(request)  # attempt 2: a section of its own in the same comment

    assert (first.outcome, second.outcome) == ("deployed", "already_done")
    statuses = [c for c in repo.get_issue(issue.number).get_comments() if STATUS_MARKER_PREFIX in c.body]
    assert len(statuses) == 1
    body = statuses[0].body
    for stage in ("started: class", "PR opened", "CI passed", "merge: merged", "rollout of", "**deployed**"):
        assert stage in body, stage
    assert "**Attempt 1**" in body and "**Attempt 2**" in body and "**already_done**" in body
    assert "cost so far: $" in body


def test_a_red_ci_round_and_the_repair_show_in_the_status_comment(forge, run_on_forge):
    forge.commit_files(OWNER, NAME, "main", {"BROKEN": "chat answers nothing"}, "break the base")
    assert forge.wait_idle(120)
    run_on_forge(agent=RepairingAgent())
    repo = client(forge).get_repo(REPO)
    issue = repo.create_issue(title="fix chat", body="please")

    report = dev_cycle(_request(auto_merge=True, issue_number=issue.number))

    assert report.outcome == "deployed"
    (status,) = [c for c in repo.get_issue(issue.number).get_comments() if STATUS_MARKER_PREFIX in c.body]
    for stage in ("CI failed (round 1)", "repair round 1: finished", "CI passed (round 2)", "**deployed**"):
        assert stage in status.body, stage


def test_the_pr_references_its_issue_and_says_fixes_only_when_asked(forge, run_on_forge):
    run_on_forge()
    repo = client(forge).get_repo(REPO)
    plain = repo.create_issue(title="one", body="x")
    closing = repo.create_issue(title="two", body="y")

    dev_cycle(_request(issue_number=plain.number, auto_merge=True))
    dev_cycle(_request(issue_number=closing.number, auto_merge=True, closes_issue=True))

    bodies = {p.body for p in repo.get_pulls(state="all")}
    assert any(f"Requested in #{plain.number}." in b and "Fixes" not in b for b in bodies)
    assert any(f"Fixes #{closing.number}" in b for b in bodies)


def test_a_revert_whose_ci_is_red_is_reported_and_not_merged(forge, run_on_forge):
    forge.commit_files(OWNER, NAME, "main", {"BROKEN": "the base is red"}, "a red base")
    assert forge.wait_idle(120)
    run_on_forge(agent=FixingAgent(), health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]))

    report = dev_cycle(_request(auto_merge=True))  # the change fixes the base; reverting it breaks it again

    assert report.outcome == "rolled_back" and report.revert_state == "ci_failed"
    (revert,) = _reverts(forge)
    assert revert.state == "open" and not revert.merged  # reported, never forced


def test_in_gitops_mode_the_application_repository_gets_the_revert_pr_too(forge, run_on_forge):
    gitops = FakeCluster(rollouts=["stalled"])
    gitops.history["demo/backend"] = [SEED_IMAGE]
    ports = run_on_forge(gitops=gitops)
    before = _tree(forge)

    report = dev_cycle(_request(auto_merge=True, deploy_mode="gitops"))

    assert report.outcome == "rolled_back" and report.revert_state == "merged"
    assert gitops.current_image(_request().deploy) == SEED_IMAGE  # the deploy repository's revert stays
    assert ports.cluster.rollout_count == 0  # type: ignore[attr-defined]
    assert len(_reverts(forge)) == 1 and _tree(forge) == before


def test_a_follow_up_on_the_open_pr_continues_the_same_conversation_and_deploys(forge, run_on_forge, tmp_path):
    ports = run_on_forge()
    ports.settings.pipeline.merge_timeout_s = 5  # nobody merges attempt 1: it ends "waiting" with its PR open
    repo = client(forge).get_repo(REPO)
    first = dev_cycle(_request(auto_merge=False))
    assert first.outcome == "waiting"
    (pr,) = list(repo.get_pulls(state="open"))
    head_before = pr.head.sha
    pr.create_issue_comment("Please keep the old /status route working too.")  # the PR's discussion

    follow_up = DevRequest(
        prompt="also add a /ready endpoint",
        repository=REPO,
        continues=first.run_key,
        source_pr=pr.number,
        comment_id=1,
        auto_merge=True,
    )
    report = dev_cycle(follow_up)

    assert report.outcome == "deployed" and report.run_key == first.run_key and report.attempt_number == 2
    (conversation,) = ports.agent.conversations.values()  # type: ignore[attr-defined]
    follow = conversation["instructions"][-1]
    assert "also add a /ready endpoint" in follow and "keep the old /status route" in follow
    assert conversation["runs"] == 2  # the agent worked again, in the same conversation
    pulls = list(repo.get_pulls(state="all"))
    assert len(pulls) == 1 and pulls[0].merged  # the same PR, now with the follow-up's commit, merged
    assert pulls[0].head.sha != head_before


def test_a_follow_up_gives_the_agent_the_review_comments_and_the_issues_comments(forge, run_on_forge):
    ports = run_on_forge()
    ports.settings.pipeline.merge_timeout_s = 5  # attempt 1 ends "waiting" with its PR open
    repo = client(forge).get_repo(REPO)
    issue = repo.create_issue(title="add /version", body="please")
    issue.create_comment("It should answer HEAD requests as well.")  # said on the issue the request came from
    first = dev_cycle(_request(auto_merge=False, issue_number=issue.number))
    assert first.outcome == "waiting"
    (pr,) = list(repo.get_pulls(state="open"))
    token = "ghp_" + "Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8Zx9"
    pr.create_review_comment(
        f"Name this VERSION, not VALUE (and never keep {token} in code)",
        repo.get_commit(pr.head.sha),
        "change_1.py",
        line=2,
        side="RIGHT",
    )

    follow_up = DevRequest(
        prompt="also add a /ready endpoint",
        repository=REPO,
        continues=first.run_key,
        source_pr=pr.number,
        comment_id=3,
        auto_merge=True,
    )
    report = dev_cycle(follow_up)

    assert report.outcome == "deployed" and report.attempt_number == 2
    (conversation,) = ports.agent.conversations.values()  # type: ignore[attr-defined]
    follow = conversation["instructions"][-1]
    assert f"`change_1.py` line 2, {OWNER}: Name this VERSION, not VALUE" in follow  # the review comment
    assert f"issue #{issue.number}" in follow and "answer HEAD requests as well" in follow  # the issue's comment
    assert token not in follow and "never keep" in follow  # redacted like a prompt, not dropped
    assert "started: class" not in follow  # our own status comment on the issue is not "what people said"


def test_a_follow_up_on_a_merged_pr_is_a_new_request_that_references_it(forge, run_on_forge):
    ports = run_on_forge()
    repo = client(forge).get_repo(REPO)
    first = dev_cycle(_request(auto_merge=True))
    (old,) = list(repo.get_pulls(state="all"))
    assert first.outcome == "deployed" and old.merged

    follow_up = DevRequest(
        prompt="now add a /ready endpoint",
        repository=REPO,
        parent=first.run_key,
        source_pr=old.number,
        comment_id=2,
        auto_merge=True,
    )
    report = dev_cycle(follow_up)

    assert report.outcome == "deployed" and report.run_key != first.run_key
    new = next(p for p in repo.get_pulls(state="all") if p.number != old.number)
    assert f"Follows up #{old.number}" in (new.body or "")
    assert new.base.ref == "main" and len(ports.agent.conversations) == 2  # type: ignore[attr-defined]


def test_the_branch_of_a_merged_run_is_deleted_and_a_later_attempt_does_not_bring_it_back(forge, run_on_forge):
    ports = run_on_forge()
    repo = client(forge).get_repo(REPO)
    request = _request(auto_merge=True)

    first = dev_cycle(request)
    assert first.outcome == "deployed"
    assert [b.name for b in repo.get_branches()] == ["main"]

    again = dev_cycle(request)  # attempt 2 finds the merged PR: no agent work, no push, no branch
    assert again.outcome == "already_done"
    assert [b.name for b in repo.get_branches()] == ["main"]
    (conversation,) = ports.agent.conversations.values()  # type: ignore[attr-defined]
    assert conversation["runs"] == 1


def test_the_pr_title_and_body_never_show_a_secret_from_the_prompt(forge, run_on_forge):
    """The PR text model echoes the request (as a real one may): the title is redacted like the body."""
    from promptship.domain.results import LLMCall, LLMReply
    from promptship_sandbox.fakes import FakeLLMGateway

    class EchoingLLM(FakeLLMGateway):
        def complete(self, call: LLMCall) -> LLMReply:
            reply = super().complete(call)
            request_line = next(m.content for m in call.messages if m.role == "user").splitlines()[0]
            return reply.model_copy(update={"content": f"{request_line}\n{request_line}"})

    run_on_forge(llm=EchoingLLM())
    token = "ghp_" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"
    report = dev_cycle(_request(auto_merge=True).model_copy(update={"prompt": f"Use {token} to call the API"}))

    assert report.outcome == "deployed"
    (pr,) = list(client(forge).get_repo(REPO).get_pulls(state="all"))
    assert token not in pr.title and token not in (pr.body or "")
    assert "Use" in pr.title  # the title is the model's line, redacted — not dropped
