"""What a verified GitHub delivery asks for: a table of payload shapes, no doubles."""

from __future__ import annotations

from typing import Any

import pytest

from promptship.domain.webhooks import WebhookPolicy, command_prompt, decide

POLICY = WebhookPolicy.of(["Acme/App"], ["OWNER", "MEMBER", "COLLABORATOR"], "promptship")
SHA = "a" * 40


def _issue(association: str = "OWNER", **extra: Any) -> dict[str, Any]:
    return {
        "number": 7,
        "title": "Add /health",
        "body": "Return 200.",
        "author_association": association,
        "user": {"login": "alice"},
        **extra,
    }


def labeled(label: str = "promptship", association: str = "OWNER", repo: str = "acme/app") -> dict[str, Any]:
    return {
        "action": "labeled",
        "label": {"name": label},
        "issue": _issue(association),
        "repository": {"full_name": repo},
        "sender": {"login": "maintainer", "type": "User"},
    }


def comment(
    body: str, association: str = "MEMBER", action: str = "created", sender_type: str = "User"
) -> dict[str, Any]:
    return {
        "action": action,
        "issue": _issue("NONE"),
        "comment": {"body": body, "author_association": association, "user": {"login": "bob"}},
        "repository": {"full_name": "Acme/App"},
        "sender": {"login": "bob", "type": sender_type},
    }


@pytest.mark.parametrize(
    ("event", "payload", "kind"),
    [
        ("issues", labeled(), "trigger"),
        ("issues", labeled(repo="ACME/APP"), "trigger"),  # owner/name compare case-insensitively
        ("issues", labeled(label="bug"), "ignore"),
        ("issues", labeled(association="CONTRIBUTOR"), "refuse"),
        ("issues", labeled(repo="acme/other"), "forbidden"),
        ("issues", {**labeled(), "action": "opened"}, "ignore"),
        ("issue_comment", comment("/promptship add dark mode"), "trigger"),
        ("issue_comment", comment("  /promptship\tadd dark mode  "), "trigger"),
        ("issue_comment", comment("/promptship add dark mode", association="COLLABORATOR"), "trigger"),
        ("issue_comment", comment("/promptship add dark mode", association="NONE"), "refuse"),
        ("issue_comment", comment("/promptship add dark mode", association="FIRST_TIMER"), "refuse"),
        ("issue_comment", comment("/promptship"), "refuse"),  # nothing to build: a hint
        ("issue_comment", comment("/promptship x"), "refuse"),  # too short for a DevRequest
        ("issue_comment", comment("please /promptship add dark mode"), "ignore"),
        ("issue_comment", comment("/promptshipping add dark mode"), "ignore"),
        ("issue_comment", comment("/promptship add dark mode", action="edited"), "ignore"),
        ("issue_comment", comment("/promptship add dark mode", sender_type="Bot"), "ignore"),
        (
            "check_suite",
            {"action": "completed", "check_suite": {"head_sha": SHA}, "repository": {"full_name": "Acme/App"}},
            "ci",
        ),
        (
            "check_run",
            {"action": "created", "check_run": {"head_sha": SHA}, "repository": {"full_name": "Acme/App"}},
            "ci",
        ),
        ("status", {"sha": SHA, "state": "success", "repository": {"full_name": "Acme/App"}}, "ci"),
        ("status", {"state": "success", "repository": {"full_name": "Acme/App"}}, "ignore"),
        ("check_suite", {"check_suite": {"head_sha": SHA}, "repository": {"full_name": "x/y"}}, "forbidden"),
        ("push", {"repository": {"full_name": "Acme/App"}}, "ignore"),
        ("push", {"repository": {"full_name": "x/y"}}, "ignore"),  # unhandled events need no allowlist
        ("issues", {"action": "labeled", "label": {"name": "promptship"}}, "ignore"),  # no repository
        ("issues", {"action": "labeled", "repository": {"full_name": "Acme/App"}}, "ignore"),  # no issue
    ],
)
def test_decide(event: str, payload: dict[str, Any], kind: str) -> None:
    assert decide(event, payload, "delivery-1", POLICY).kind == kind


def test_a_trigger_carries_what_the_dev_cycle_needs() -> None:
    decision = decide("issue_comment", comment("/promptship add dark mode"), "d-42", POLICY)
    assert decision.trigger is not None
    request = decision.trigger.to_request()
    assert (request.prompt, request.repository, request.issue_number, request.requester, request.delivery_id) == (
        "add dark mode",
        "Acme/App",
        7,
        "bob",
        "d-42",
    )


def test_a_labelled_issue_uses_its_title_and_body_and_its_author() -> None:
    decision = decide("issues", labeled(), "d", POLICY)
    assert decision.trigger is not None
    assert (decision.trigger.prompt, decision.trigger.requester) == ("Add /health\n\nReturn 200.", "alice")


def test_a_refusal_names_the_association_and_the_issue() -> None:
    decision = decide("issue_comment", comment("/promptship add dark mode", association="NONE"), "d", POLICY)
    assert decision.comment_on == 7
    assert decision.comment is not None and "NONE" in decision.comment and "@bob" in decision.comment
    assert decision.trigger is None


def test_ci_signal_names_repository_and_sha() -> None:
    payload = {"action": "completed", "check_suite": {"head_sha": SHA}, "repository": {"full_name": "Acme/App"}}
    decision = decide("check_suite", payload, "d-9", POLICY)
    assert decision.ci is not None
    assert (decision.ci.repository, decision.ci.sha, decision.ci.action, decision.ci.delivery_id) == (
        "Acme/App",
        SHA,
        "completed",
        "d-9",
    )


@pytest.mark.parametrize(
    ("body", "prompt"),
    [
        ("/promptship do it", "do it"),
        ("/promptship\n\nmulti\nline", "multi\nline"),
        ("/promptship", ""),
        ("/PROMPTSHIP do it", None),
        ("/promptshipx", None),
        ("", None),
        (None, None),
    ],
)
def test_command_prompt(body: str | None, prompt: str | None) -> None:
    assert command_prompt(body) == prompt


KEY = "0123456789abcdef"


def _pr_comment(body: str, *, state: str = "open", merged_at: str | None = None, marker: bool = True) -> dict[str, Any]:
    """A comment on a pull request (GitHub sends it as an issue with a ``pull_request`` object)."""
    payload = comment(body)
    payload["comment"]["id"] = 991
    pr_body = f"Adds /health.\n\n<!-- promptship-run-key: {KEY} -->\n" if marker else "a person's PR"
    payload["issue"] = {
        **_issue("NONE", state=state),
        "number": 12,
        "body": pr_body,
        "pull_request": {"url": "https://api.github.com/repos/acme/app/pulls/12", "merged_at": merged_at},
    }
    return payload


@pytest.mark.parametrize(
    ("payload", "continues", "parent"),
    [
        (_pr_comment("/promptship also add /ready"), KEY, None),  # open PR: the same request goes on
        (_pr_comment("/promptship also add /ready", state="closed", merged_at="2026-12-01T10:00:00Z"), None, KEY),
        (_pr_comment("/promptship also add /ready", state="closed"), None, KEY),  # closed unmerged: new request
        (_pr_comment("/promptship also add /ready", marker=False), None, None),  # not our PR: a request of its own
    ],
)
def test_a_comment_on_a_promptship_pr_follows_its_request_up(payload, continues, parent) -> None:
    decision = decide("issue_comment", payload, "d-1", POLICY)
    assert decision.kind == "trigger" and decision.trigger is not None
    request = decision.trigger.to_request()
    assert (request.continues, request.parent) == (continues, parent)
    if continues:
        assert request.run_key == KEY and request.source_pr == 12 and request.comment_id == 991
    elif parent:
        assert request.run_key != KEY  # a new request, its key derived from the parent's and the comment's
        assert request.run_key == decision.trigger.to_request().run_key


def test_an_edited_follow_up_command_starts_nothing() -> None:
    payload = _pr_comment("/promptship also add /ready")
    payload["action"] = "edited"
    assert decide("issue_comment", payload, "d-2", POLICY).kind == "ignore"


@pytest.mark.parametrize(
    ("payload", "control", "key"),
    [
        (comment("/promptship stop"), "stop", None),  # on an issue: the receiver looks its request up
        (comment("/promptship RETRY "), "retry", None),
        (_pr_comment("/promptship stop"), "stop", KEY),  # on a PR promptship opened: its marker names it
        (_pr_comment("/promptship retry", marker=False), "retry", None),
    ],
)
def test_stop_and_retry_are_controls_of_the_request(payload, control, key) -> None:
    decision = decide("issue_comment", payload, "d-3", POLICY)
    assert (decision.kind, decision.control, decision.request_key) == ("control", control, key)
    assert decision.comment_on == payload["issue"]["number"] and decision.trigger is None


def test_a_control_needs_write_access_like_any_command() -> None:
    assert decide("issue_comment", comment("/promptship stop", association="NONE"), "d-4", POLICY).kind == "refuse"
