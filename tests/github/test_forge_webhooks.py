"""The forge's signed webhooks, received by promptship's own receiver (``promptship.servers.webhook``),
with the GitHubHost adapter on both ends: CI waits woken by check_suite, runs started from issues."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from promptship.domain.webhooks import WebhookTrigger
from promptship.settings import GitHubSettings, Settings
from promptship.store.webhooks import InProcessCIWakeups
from promptship_sandbox.forge import Forge, running_forge
from promptship_sandbox.specs import json_schema_of
from tests.github.conftest import NAME, OWNER, REPO, RecordingClock, client, make_host, make_source

pytestmark = pytest.mark.forge

SECRET = "forge-webhook-test-secret"


@dataclass
class Starts:
    triggers: list[WebhookTrigger] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, trigger: WebhookTrigger) -> str:
        with self.lock:
            self.triggers.append(trigger)
            return f"run-{len(self.triggers)}"


@dataclass
class Wired:
    forge: Forge
    starts: Starts
    wakeups: InProcessCIWakeups
    receiver: object


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[Wired]:
    from promptship.servers.webhook import create_app, running_asgi
    from promptship.store import make_engine
    from promptship.store.webhooks import WebhookDeliveries

    starts, wakeups = Starts(), InProcessCIWakeups()
    settings = Settings(github=GitHubSettings(webhook_secret=SecretStr(SECRET), allowed_repositories=[REPO]))
    with running_forge(tmp_path / "forge", webhook_secret=SECRET) as forge:
        forge.seed_repository(OWNER, NAME, make_source(tmp_path))
        assert forge.wait_idle(120)
        commenter = make_host(forge, RecordingClock())
        app = create_app(
            settings,
            starts,
            deliveries=WebhookDeliveries(make_engine(f"sqlite:///{tmp_path / 'store.db'}")),
            commenter=commenter,
            wakeups=wakeups,
        )
        serving = running_asgi(app)
        url = serving.__enter__()
        try:
            forge.configure_webhook(f"{url}/github/webhook", SECRET)
            yield Wired(forge, starts, wakeups, app.state.receiver)
        finally:
            forge.configure_webhook(None, None)
            serving.__exit__(None, None, None)


def _settle(w: Wired) -> None:
    assert w.forge.wait_idle(120)
    assert w.receiver.wait_idle(30)  # type: ignore[attr-defined]


def test_ci_wait_ends_on_the_receivers_wake_up_without_polling(wired: Wired):
    clock = RecordingClock()
    host = make_host(wired.forge, clock, wakeups=wired.wakeups, webhook_fallback_s=120)
    sha = wired.forge.commit_files(OWNER, NAME, "feature", {"greeting.txt": "hi\n"}, "greeting")
    result = host.wait_for_ci(REPO, sha, timeout_s=600)
    _settle(wired)
    assert result.verdict == "passed"
    assert clock.sleeps == []  # woken by webhook events, never by the poll schedule
    assert {s.event for s in wired.wakeups.signals if s.sha == sha} >= {"check_suite", "check_run", "status"}
    assert all(d.status < 300 for d in wired.forge.deliveries), [(d.event, d.status) for d in wired.forge.deliveries]


def test_a_labelled_issue_by_the_owner_starts_one_run(wired: Wired):
    issue = (
        client(wired.forge)
        .get_repo(REPO)
        .create_issue(title="Add a /health endpoint", body="It should answer 200.", labels=["promptship"])
    )
    _settle(wired)
    assert [(t.repository, t.issue_number) for t in wired.starts.triggers] == [(REPO, issue.number)]


def test_a_command_by_someone_without_access_starts_nothing_and_gets_a_comment(wired: Wired):
    stranger = wired.forge.add_user("stranger")
    repo = client(wired.forge).get_repo(REPO)
    issue = repo.create_issue(title="question", body="just asking")
    _settle(wired)
    client(wired.forge, stranger).get_repo(REPO).get_issue(issue.number).create_comment("/promptship delete all data")
    _settle(wired)
    assert wired.starts.triggers == []
    comments = [c for c in repo.get_issue(issue.number).get_comments() if c.user.login == OWNER]
    assert len(comments) == 1


def test_every_delivery_matches_githubs_webhook_schemas(wired: Wired, tmp_path: Path):
    import jsonschema

    from promptship_sandbox import specs
    from tests.conftest import require

    require("@octokit/openapi-webhooks", specs.webhooks_openapi_path().is_file(), "run `make specs`")
    document = json_schema_of(specs.load_webhooks_openapi())
    assert isinstance(document, dict)
    schemas = document["components"]["schemas"]

    host = make_host(wired.forge, RecordingClock())
    ws = Path(host.prepare_workspace(REPO, "main", "promptship/k2", str(tmp_path / "ws")))
    (ws / "greeting.txt").write_text("hi\n")
    host.push_branch(REPO, str(ws), "promptship/k2")
    pr = host.find_or_create_pull_request(
        REPO, run_key="k2", branch="promptship/k2", base_branch="main", title="t", body="b"
    )
    (ws / "greeting.txt").write_text("hi again\n")
    sha = host.push_branch(REPO, str(ws), "promptship/k2")
    assert host.wait_for_ci(REPO, sha, timeout_s=600).verdict == "passed"
    repo = client(wired.forge).get_repo(REPO)
    issue = repo.create_issue(title="x", body="y", labels=["promptship"])
    issue.create_comment("/promptship add a footer")
    assert host.merge(REPO, pr.number, auto_merge=True, timeout_s=60).verdict == "merged"
    _settle(wired)

    problems, seen = [], set()
    for d in wired.forge.deliveries:
        name = f"webhook-{d.event.replace('_', '-')}" + (f"-{d.action.replace('_', '-')}" if d.action else "")
        seen.add(name)
        assert name in schemas, name
        root = {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
        for error in jsonschema.Draft7Validator(root).iter_errors(d.payload):
            problems.append(f"{name} {list(error.absolute_path)}: {error.message[:200]}")
    assert not problems, "\n".join(sorted(set(problems))[:60])
    assert {
        "webhook-issues-opened",
        "webhook-issues-labeled",
        "webhook-issue-comment-created",
        "webhook-pull-request-opened",
        "webhook-pull-request-synchronize",
        "webhook-pull-request-closed",
        "webhook-check-run-created",
        "webhook-check-run-completed",
        "webhook-check-suite-completed",
        "webhook-status",
    } <= seen
