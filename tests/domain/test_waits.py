"""Waits of suspended runs and the pull_request events that end them: tables, no doubles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promptship.domain.waits import SUSPEND_MARGIN_S, RunWait, should_resume, wait_deadline
from promptship.domain.webhooks import WebhookPolicy, decide

POLICY = WebhookPolicy.of(["Acme/App"], ["OWNER"], "promptship")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _wait(**changes: Any) -> RunWait:
    base: dict[str, Any] = dict(
        flow_run_id="f",
        request_key="k",
        attempt_id="k-a1",
        label="wait_for_ci#1",
        kind="ci",
        repository="acme/app",
        sha="a" * 40,
        deadline=wait_deadline(T0, 600),
    )
    return RunWait(**{**base, **changes})


@pytest.mark.parametrize(
    ("now", "met", "expected"),
    [
        (T0 + timedelta(seconds=10), False, None),
        (T0 + timedelta(seconds=10), True, "condition"),
        (T0 + timedelta(seconds=600), False, "deadline"),
        (T0 + timedelta(seconds=900), True, "condition"),
    ],
)
def test_the_sweep_resumes_a_wait_met_or_past_its_deadline(now: datetime, met: bool, expected: str | None) -> None:
    assert should_resume(_wait(), now=now, condition_met=met) == expected


def test_each_suspension_of_a_wait_has_its_own_pause_key_and_prefect_outlives_the_deadline() -> None:
    first, again = _wait(suspensions=1), _wait(suspensions=2)
    assert first.pause_key() != again.pause_key()
    assert first.suspend_timeout_s(T0) == int(600 + SUSPEND_MARGIN_S)
    assert first.remaining_s(T0 + timedelta(hours=1)) == 0.0


def _pr(action: str, merged: bool, repo: str = "acme/app") -> dict[str, Any]:
    return {
        "action": action,
        "number": 12,
        "repository": {"full_name": repo},
        "pull_request": {"number": 12, "merged": merged},
        "sender": {"login": "bob", "type": "User"},
    }


@pytest.mark.parametrize(
    ("payload", "kind", "merged"),
    [
        (_pr("closed", merged=True), "pull_request", True),
        (_pr("closed", merged=False), "pull_request", False),
        (_pr("opened", merged=False), "ignore", None),
        (_pr("synchronize", merged=False), "ignore", None),
        (_pr("closed", merged=True, repo="other/repo"), "forbidden", None),
    ],
)
def test_a_closed_pull_request_ends_merge_waits(payload: dict[str, Any], kind: str, merged: bool | None) -> None:
    decision = decide("pull_request", payload, "d-1", POLICY)
    assert decision.kind == kind
    if merged is not None:
        assert decision.pull_request is not None
        assert (decision.pull_request.number, decision.pull_request.merged) == (12, merged)
