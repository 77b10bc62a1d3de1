"""The pure CI logic: verdict tables, backoff, rate-limit detection, log excerpts. No doubles.

(Retry-After parsing is shared by every adapter: tests/domain/test_retrying.py.)"""

from __future__ import annotations

from itertools import islice

import pytest

from promptship.domain.ci import (
    Backoff,
    CheckRunView,
    StatusView,
    SuiteView,
    ci_verdict,
    is_rate_limited,
    latest_statuses,
    log_excerpt,
    next_wait,
)

OK = CheckRunView("test", "completed", "success")
RED = CheckRunView("test", "completed", "failure")
RUNNING = CheckRunView("lint", "in_progress")
SKIPPED = CheckRunView("docs", "completed", "skipped")
TIMED_OUT = CheckRunView("e2e", "completed", "timed_out")
CANCELLED = CheckRunView("e2e", "completed", "cancelled")


@pytest.mark.parametrize(
    ("runs", "statuses", "suites", "expected", "failing"),
    [
        ([], [], [], "pending", []),
        ([OK], [], [], "passed", []),
        ([OK, SKIPPED], [], [], "passed", []),
        ([OK, RUNNING], [], [], "pending", []),
        ([RED, RUNNING], [], [], "failed", ["test"]),  # fail fast
        ([TIMED_OUT], [], [], "failed", ["e2e"]),
        ([CANCELLED], [], [], "failed", ["e2e"]),
        ([], [StatusView("ci/x", "success")], [], "passed", []),
        ([], [StatusView("ci/x", "pending")], [], "pending", []),
        ([], [StatusView("ci/x", "error")], [], "failed", ["ci/x"]),
        ([OK], [StatusView("ci/x", "failure")], [], "failed", ["ci/x"]),
        # newest first: a later success of the same context replaces the earlier failure
        ([], [StatusView("ci/x", "success"), StatusView("ci/x", "failure")], [], "passed", []),
        ([OK], [], [SuiteView("in_progress")], "pending", []),
        ([OK], [], [SuiteView("completed", "success")], "passed", []),
        ([], [], [SuiteView("completed", "failure", app="ci")], "failed", ["ci"]),
        ([], [StatusView("ci/x", "success")], [SuiteView("queued")], "pending", []),
    ],
)
def test_ci_verdict_table(runs, statuses, suites, expected, failing):
    assessment = ci_verdict(runs, statuses, suites)
    assert assessment.state == expected
    assert [c.name for c in assessment.failing] == failing
    assert assessment.final == (expected != "pending")


def test_required_checks_keep_it_pending_until_they_report():
    assert ci_verdict([OK], [], required=["lint"]).state == "pending"
    assert ci_verdict([OK, CheckRunView("lint", "completed", "success")], [], required=["lint"]).state == "passed"


def test_a_repository_without_ci_can_pass_when_allowed():
    assert ci_verdict([], [], require_any=False).state == "passed"


def test_latest_statuses_keeps_the_first_per_context():
    got = latest_statuses([StatusView("a", "success"), StatusView("b", "pending"), StatusView("a", "failure")])
    assert [(s.context, s.state) for s in got] == [("a", "success"), ("b", "pending")]


def test_backoff_grows_to_its_cap():
    assert list(islice(Backoff(2, 2, 10).delays(), 5)) == [2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("planned", "remaining", "retry_after", "expected"),
    [(5, 100, None, 5), (5, 100, 30, 30), (5, 3, None, 3), (5, 10, 60, 10), (5, -1, None, 0)],
)
def test_next_wait(planned, remaining, retry_after, expected):
    assert next_wait(planned, remaining, retry_after) == expected


@pytest.mark.parametrize(
    ("status", "message", "headers", "expected"),
    [
        (403, "You have exceeded a secondary rate limit", {}, True),
        (403, "whatever", {"Retry-After": "3"}, True),
        (403, "API rate limit exceeded", {"x-ratelimit-remaining": "0"}, True),
        (403, "Resource not accessible by integration", {}, False),
        (429, "", {}, True),
        (404, "rate limit", {}, False),
    ],
)
def test_is_rate_limited(status, message, headers, expected):
    assert is_rate_limited(status, message, headers) is expected


def test_log_excerpt_centres_on_the_failure():
    log = "\n".join(
        [f"setup line {i}" for i in range(200)]
        + ["FAILED tests/test_chat.py::test_reply"]
        + [f"teardown {i}" for i in range(100)]
    )
    excerpt = log_excerpt(log, max_lines=20)
    assert "FAILED tests/test_chat.py::test_reply" in excerpt
    assert "setup line 0" not in excerpt and len(excerpt.splitlines()) <= 20


def test_log_excerpt_without_a_marker_is_the_tail():
    log = "\n".join(f"line {i}" for i in range(100))
    assert log_excerpt(log, max_lines=3) == "line 97\nline 98\nline 99"
    assert log_excerpt("") == ""
