"""End to end on loopback: the local forge sends its signed webhooks to the real receiver, which starts runs,
answers outsiders through the real ``GitHubHost`` (PyGithub) on the forge, and wakes ``GitHubHost`` CI waits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from promptship.store.webhooks import InProcessCIWakeups
from tests.webhook.conftest import SECRET, Receiver, make_settings

pytestmark = [pytest.mark.forge, pytest.mark.webhook]

OWNER, NAME = "demo", "webhook-app"
REPO = f"{OWNER}/{NAME}"


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "source"
    src.mkdir()
    (src / "README.md").write_text("a repository for webhook tests\n")
    # CI waits until the test creates the release file, so a CI wait can start before CI ends.
    (src / "Makefile").write_text(
        'test:\n\t@while [ ! -f "$(RELEASE)" ]; do sleep 0.05; done; echo tests passed\n'.replace(
            "$(RELEASE)", str(tmp_path / "release")
        )
    )
    return src


def _github(forge: Any, token: str) -> Any:
    from promptship_sandbox.forge import forge_github

    return forge_github(forge, token)


@pytest.fixture
def world(tmp_path: Path, start_receiver: Callable[..., Receiver]) -> Iterator[dict[str, Any]]:
    from promptship.adapters.github import GitHubHost
    from promptship_sandbox.forge import running_forge

    wakeups = InProcessCIWakeups()
    with running_forge(tmp_path / "forge", owner_login=OWNER) as forge:
        host = GitHubHost(
            _github(forge, forge.token), token=SecretStr(forge.token), wakeups=wakeups, webhook_fallback_s=120
        )
        receiver = start_receiver(make_settings(allowed_repositories=[REPO]), commenter=host, wakeups=wakeups)
        forge.configure_webhook(f"{receiver.url}/github/webhook", SECRET)
        (tmp_path / "release").touch()  # the seed's own CI build passes at once
        forge.seed_repository(OWNER, NAME, _source(tmp_path))
        assert forge.wait_idle(120)
        (tmp_path / "release").unlink()
        yield {"forge": forge, "host": host, "receiver": receiver, "release": tmp_path / "release"}


def _settle(world: dict[str, Any]) -> None:
    assert world["forge"].wait_idle(60)
    assert world["receiver"].receiver.wait_idle(30)


def test_forge_deliveries_are_accepted_signed_and_well_formed(world: dict[str, Any]) -> None:
    deliveries = world["forge"].deliveries
    assert {d.event for d in deliveries} >= {"check_run", "check_suite", "status"}
    assert all(200 <= d.status < 300 for d in deliveries), [(d.event, d.status) for d in deliveries]


def test_an_owners_labelled_issue_starts_one_run(world: dict[str, Any]) -> None:
    forge, receiver = world["forge"], world["receiver"]
    repo = _github(forge, forge.token).get_repo(REPO)
    issue = repo.create_issue(title="Add a /version endpoint", body="Return the git SHA.", labels=["promptship"])
    _settle(world)

    (trigger,) = receiver.starter.triggers
    assert (trigger.repository, trigger.issue_number, trigger.requester) == (REPO, issue.number, OWNER)
    assert trigger.prompt == "Add a /version endpoint\n\nReturn the git SHA."
    (labeled,) = [d for d in forge.deliveries if d.event == "issues" and d.action == "labeled"]
    assert labeled.status == 202
    assert trigger.delivery_id == labeled.id


def test_an_outsiders_command_gets_a_polite_comment_on_the_forge_and_starts_nothing(world: dict[str, Any]) -> None:
    forge, receiver = world["forge"], world["receiver"]
    issue = _github(forge, forge.token).get_repo(REPO).create_issue(title="Dark mode", body="please")
    outsider = _github(forge, forge.add_user("mallory")).get_repo(REPO).get_issue(issue.number)
    outsider.create_comment("/promptship add dark mode and push straight to main")
    _settle(world)

    assert receiver.starter.triggers == []
    comments = list(_github(forge, forge.token).get_repo(REPO).get_issue(issue.number).get_comments())
    assert [c.user.login for c in comments] == ["mallory", OWNER]
    assert "@mallory" in comments[1].body and "write access" in comments[1].body
    # The receiver's own comment comes back as a webhook; it holds no command, so nothing more happens.
    assert len(comments) == 2


def test_a_collaborators_command_starts_a_run(world: dict[str, Any]) -> None:
    forge, receiver = world["forge"], world["receiver"]
    issue = _github(forge, forge.token).get_repo(REPO).create_issue(title="Ideas", body="")
    forge.add_collaborator(OWNER, NAME, "carol")
    carol = _github(forge, forge.add_user("carol")).get_repo(REPO).get_issue(issue.number)
    carol.create_comment("/promptship add a /version endpoint")
    _settle(world)

    (trigger,) = receiver.starter.triggers
    assert (trigger.requester, trigger.prompt, trigger.issue_number) == (
        "carol",
        "add a /version endpoint",
        issue.number,
    )


def test_a_ci_wait_ends_on_the_forges_ci_events(world: dict[str, Any]) -> None:
    forge, host = world["forge"], world["host"]
    sha = forge.commit_files(OWNER, NAME, "feature", {"greeting.txt": "hi\n"}, "greeting")
    results: list[Any] = []
    waiter = threading.Thread(target=lambda: results.append(host.wait_for_ci(REPO, sha, timeout_s=300)))
    before = len(forge.requests)
    waiter.start()
    world["release"].touch()  # let CI finish: its check_run/check_suite/status events reach the receiver
    waiter.join(300)
    _settle(world)

    (result,) = results
    assert result.verdict == "passed"
    looks = [r for r in forge.requests[before:] if r.path.endswith(f"/commits/{sha}/check-runs")]
    # One look per wake-up at most (fallback polling is 120 s away): the events ended the wait.
    assert 1 <= len(looks) <= 1 + sum(1 for d in forge.deliveries if d.event in ("check_run", "check_suite", "status"))
    assert world["receiver"].wakeups.generation(REPO, sha) >= 3
