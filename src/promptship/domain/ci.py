"""CI verdicts and polling schedules — pure functions, no I/O.

``ci_verdict`` combines the three ways CI reports on a commit (check runs, check suites, commit statuses)
into one state; the GitHub adapter only fetches them and loops with an injected clock. How long a
rate-limited answer asks us to wait is read by ``promptship.domain.retrying.retry_after_s``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from promptship.domain.results import CheckOutcome

CIState = Literal["pending", "passed", "failed"]
CheckState = Literal["pending", "success", "failure", "neutral", "skipped", "cancelled", "error"]

_RUN_CONCLUSIONS: dict[str, CheckState] = {
    "success": "success",
    "neutral": "neutral",
    "skipped": "skipped",
    "failure": "failure",
    "timed_out": "failure",
    "action_required": "failure",
    "startup_failure": "failure",
    "cancelled": "cancelled",
    "stale": "pending",
}
_STATUS_STATES: dict[str, CheckState] = {
    "success": "success",
    "failure": "failure",
    "error": "error",
    "pending": "pending",
}
FAILING: frozenset[str] = frozenset({"failure", "error", "cancelled"})


@dataclass(frozen=True)
class CheckRunView:
    """What matters of one check run."""

    name: str
    status: str  # queued | in_progress | completed | waiting | requested | pending
    conclusion: str | None = None
    id: int | None = None
    url: str = ""
    summary: str = ""


@dataclass(frozen=True)
class StatusView:
    """One commit status (the latest of its context)."""

    context: str
    state: str  # error | failure | pending | success
    target_url: str = ""
    description: str = ""


@dataclass(frozen=True)
class SuiteView:
    """One check suite: a CI app announced it will report on the commit."""

    status: str
    conclusion: str | None = None
    app: str = ""
    runs: int = 0


@dataclass(frozen=True)
class CIAssessment:
    state: CIState
    checks: tuple[CheckOutcome, ...]
    reason: str = ""

    @property
    def final(self) -> bool:
        return self.state != "pending"

    @property
    def failing(self) -> tuple[CheckOutcome, ...]:
        return tuple(c for c in self.checks if c.state in FAILING)


def run_state(run: CheckRunView) -> CheckState:
    if run.status != "completed":
        return "pending"
    return _RUN_CONCLUSIONS.get(run.conclusion or "", "pending")


def latest_statuses(statuses: Iterable[StatusView]) -> list[StatusView]:
    """The first status seen per context (GitHub lists statuses newest first)."""
    seen: dict[str, StatusView] = {}
    for s in statuses:
        seen.setdefault(s.context, s)
    return list(seen.values())


def ci_verdict(
    check_runs: Sequence[CheckRunView],
    statuses: Sequence[StatusView],
    suites: Sequence[SuiteView] = (),
    *,
    required: Sequence[str] = (),
    require_any: bool = True,
) -> CIAssessment:
    """One state for a commit.

    - failed: any check run or latest status failed, errored or was cancelled (fail fast);
    - pending: something still runs, a suite is announced but has not finished, a ``required`` check has not
      reported yet, or (``require_any``) nothing at all has reported;
    - passed: otherwise.
    """
    checks: list[CheckOutcome] = []
    for run in check_runs:
        checks.append(CheckOutcome(name=run.name, state=run_state(run), url=run.url, log_excerpt=run.summary))
    for status in latest_statuses(statuses):
        state = _STATUS_STATES.get(status.state, "pending")
        checks.append(
            CheckOutcome(
                name=status.context,
                state=state,
                url=status.target_url,
                log_excerpt=status.description if state in FAILING else "",
            )
        )
    reported = {c.name for c in checks}
    if any(c.state in FAILING for c in checks):
        names = ", ".join(c.name for c in checks if c.state in FAILING)
        return CIAssessment("failed", tuple(checks), f"failing: {names}")
    suite_failed = [
        s
        for s in suites
        if s.status == "completed" and s.conclusion in ("failure", "timed_out", "cancelled", "startup_failure")
    ]
    if suite_failed and not check_runs:
        checks.append(CheckOutcome(name=suite_failed[0].app or "check suite", state="failure"))
        return CIAssessment("failed", tuple(checks), "a check suite failed without check runs")
    if any(c.state == "pending" for c in checks):
        return CIAssessment("pending", tuple(checks), "checks still running")
    if any(s.status != "completed" for s in suites):
        return CIAssessment("pending", tuple(checks), "a check suite has not completed")
    missing = [name for name in required if name not in reported]
    if missing:
        return CIAssessment("pending", tuple(checks), f"required checks not reported: {', '.join(missing)}")
    if require_any and not checks:
        return CIAssessment("pending", (), "no check has reported yet")
    return CIAssessment("passed", tuple(checks), "all checks passed")


@dataclass(frozen=True)
class Backoff:
    """Poll delays: ``initial_s`` growing by ``factor`` up to ``max_s``."""

    initial_s: float = 2.0
    factor: float = 1.5
    max_s: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.factor)


def next_wait(planned_s: float, remaining_s: float, retry_after_s: float | None = None) -> float:
    """How long to wait before the next poll: the plan, stretched to honour Retry-After, capped by the deadline."""
    wait = max(planned_s, retry_after_s or 0.0)
    return max(0.0, min(wait, remaining_s))


def is_rate_limited(status: int, message: str, headers: Mapping[str, str]) -> bool:
    """A 403/429 that is a (primary or secondary) rate limit, not a permission problem."""
    if status == 429:
        return True
    if status != 403:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    return "retry-after" in lowered or lowered.get("x-ratelimit-remaining") == "0" or "rate limit" in message.lower()


_FAILURE_LINE = re.compile(
    r"(FAIL|Error|ERROR|error:|Traceback|assert|AssertionError|\bE\s{2,}|failed|exit code [1-9]|\*\*\*)"
)


def log_excerpt(log: str, *, max_lines: int = 40, max_chars: int = 4000) -> str:
    """The part of a job log that explains a failure: lines around the first failure marker, else the tail."""
    lines = log.rstrip("\n").splitlines()
    if not lines:
        return ""
    hits = [i for i, line in enumerate(lines) if _FAILURE_LINE.search(line)]
    if hits:
        start = max(0, hits[0] - 5)
        chosen = lines[start : start + max_lines]
        if hits[-1] >= start + max_lines:  # the summary at the end usually names every failure
            tail = lines[-min(10, max_lines // 3) :]
            chosen = chosen[: max_lines - len(tail) - 1] + ["..."] + tail
    else:
        chosen = lines[-max_lines:]
    text = "\n".join(chosen)
    return text[-max_chars:]
