"""The allowlist follows the GitHub App: ``installation`` / ``installation_repositories`` events (GitHub's own
example payloads, and the forge's) take a repository off the allowlist and put it back — only if configured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promptship.domain.webhooks import InstallationChange, WebhookPolicy, decide
from tests.webhook.conftest import REPO, SECRET, Receiver, make_settings

pytestmark = pytest.mark.webhook

OTHER = "Codertocat/Space"


def _repos(*names: str) -> list[dict[str, Any]]:
    return [
        {"id": i, "node_id": f"R{i}", "name": n.split("/")[1], "full_name": n, "private": False}
        for i, n in enumerate(names, 1)
    ]


@pytest.mark.parametrize(
    ("event", "action", "key", "expected"),
    [
        ("installation_repositories", "removed", "repositories_removed", InstallationChange(removed=(REPO,))),
        ("installation_repositories", "added", "repositories_added", InstallationChange(added=(REPO,))),
        ("installation", "deleted", "repositories", InstallationChange(removed=(REPO,))),
        ("installation", "created", "repositories", InstallationChange(added=(REPO,))),
        ("installation", "suspend", "repositories", InstallationChange(removed=(REPO,))),
        ("installation", "unsuspend", "repositories", InstallationChange(added=(REPO,))),
    ],
)
def test_installation_events_become_allowlist_changes(
    examples: Callable[..., dict[str, Any]], event: str, action: str, key: str, expected: InstallationChange
):
    payload = examples(event, action)
    payload[key] = _repos(REPO)
    for other in ("repositories_added", "repositories_removed"):
        if other != key and other in payload:
            payload[other] = []
    decision = decide(event, payload, "d1", WebhookPolicy.of([REPO], ["OWNER"], "promptship"))
    assert decision.kind == "installation", decision.reason
    assert decision.installation is not None
    assert (decision.installation.added, decision.installation.removed) == (expected.added, expected.removed)
    assert decision.installation.installation_id == payload["installation"]["id"]


@pytest.mark.parametrize(
    ("changes", "allowed"),
    [
        ([], {REPO}),
        ([InstallationChange(removed=(REPO,))], set()),
        ([InstallationChange(removed=(REPO.upper(),)), InstallationChange(added=(REPO,))], {REPO}),
        ([InstallationChange(added=(OTHER,))], {REPO}),  # installed, but not configured: still not allowed
    ],
)
def test_the_policy_is_configured_minus_uninstalled(changes: list[InstallationChange], allowed: set[str]):
    policy = WebhookPolicy.of([REPO], ["OWNER"], "promptship")
    for change in changes:
        policy = policy.after(change)
    assert {r for r in (REPO, OTHER) if policy.repository_allowed(r)} == allowed


def test_a_repository_removed_from_the_app_starts_nothing_until_added_again(
    start_receiver: Callable[..., Receiver],
    examples: Callable[..., dict[str, Any]],
    labeled: dict[str, Any],
):
    receiver = start_receiver()
    removed = examples("installation_repositories", "removed")
    removed["repositories_removed"] = _repos(REPO)
    assert receiver.post("installation_repositories", removed).json()["outcome"] == "installation"
    assert receiver.post("issues", labeled).status_code == 403
    assert receiver.starter.triggers == []

    restarted = start_receiver()  # the same store: the removal is remembered
    assert restarted.post("issues", labeled).status_code == 403

    added = examples("installation_repositories", "added")
    added["repositories_added"] = _repos(REPO)
    added["repositories_removed"] = []
    assert restarted.post("installation_repositories", added).status_code == 202
    assert restarted.post("issues", labeled).json()["outcome"] == "accepted"
    assert restarted.receiver.wait_idle(10)
    assert [t.repository for t in restarted.starter.triggers] == [REPO]


@pytest.mark.forge
def test_the_forges_installation_events_validate_and_drive_the_receiver(
    tmp_path: Path,
    start_receiver: Callable[..., Receiver],
    webhook_validator: Callable[[str, dict[str, Any]], list[str]],
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from promptship_sandbox.forge import forge_github, running_forge

    owner, name = "demo", "app-hooks"
    repo_name = f"{owner}/{name}"
    public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    receiver = start_receiver(make_settings(allowed_repositories=[repo_name]))
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.md").write_text("hooks\n")
    with running_forge(tmp_path / "forge", owner_login=owner, run_ci=False) as forge:
        forge.seed_repository(owner, name, source)
        forge.configure_webhook(f"{receiver.url}/github/webhook", SECRET)
        forge.register_app(7, public, slug="promptship")
        installation = forge.install_app(7, owner, [repo_name])
        forge.change_installation_repositories(installation, remove=[repo_name])
        repo = forge_github(forge).get_repo(repo_name)
        repo.create_issue(title="while removed", labels=["promptship"])
        assert forge.wait_idle(60)
        forge.change_installation_repositories(installation, add=[repo_name])
        repo.create_issue(title="after it was added again", labels=["promptship"])
        assert forge.wait_idle(60)
        assert receiver.receiver.wait_idle(10)
        deliveries = [(d.event, d.payload.get("action"), d.status) for d in forge.deliveries]
        schemas = {
            ("installation", "created"): "webhook-installation-created",
            ("installation_repositories", "removed"): "webhook-installation-repositories-removed",
            ("installation_repositories", "added"): "webhook-installation-repositories-added",
        }
        for d in forge.deliveries:
            schema = schemas.get((d.event, d.payload.get("action")))
            if schema:
                assert webhook_validator(schema, d.payload) == [], (schema, d.payload)
    labelled = [status for event, action, status in deliveries if (event, action) == ("issues", "labeled")]
    assert labelled == [403, 202], deliveries
    assert [t.prompt for t in receiver.starter.triggers] == ["after it was added again"]
