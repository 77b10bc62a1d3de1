"""Resuming runs suspended in a wait (``tasks/waiting.py``): ``PrefectRunResumer`` (the ``RunResumer`` port on
Prefect's ``resume_flow_run``) and ``sweep_waits``, the periodic pass behind ``promptship sweep``.

The webhook receiver resumes the runs a CI or ``pull_request`` event concerns. The sweep is for what no webhook
says: a polling-only setup (no receiver), an event that came while the run was still looking (just before it
suspended), and waits whose deadline passed — resumed so the run ends its wait as timed out itself, before
Prefect's own suspension timeout would fail it (that timeout is the deadline plus ``SUSPEND_MARGIN_S``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from promptship.domain.waits import ResumeWhy, RunWait, should_resume
from promptship.errors import PromptshipError, ServiceError
from promptship.ports import CodeHost
from promptship.store.waits import RunWaits

logger = logging.getLogger("promptship.resumer")

RunState = Literal["suspended", "active", "final", "unknown"]

# An event's resume meets a busy Prefect (SQLite Prefect answers 503 "database is locked" under a burst, after its
# client's own retries): tried again after these delays, then left to ``promptship sweep``.
RESUME_RETRY_DELAYS_S = (1.0, 3.0, 9.0)


class PrefectRunResumer:
    """``RunResumer`` on the Prefect API (``PREFECT_API_URL``), for the waits recorded in ``waits``."""

    def __init__(
        self,
        waits: RunWaits,
        *,
        retry_delays_s: tuple[float, ...] = RESUME_RETRY_DELAYS_S,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.waits = waits
        self.retry_delays_s = retry_delays_s
        self.sleep = sleep

    def resume_waiting(self, repository: str, *, sha: str | None = None, pr_number: int | None = None) -> list[str]:
        """Resume every run the event concerns; each one whose resume fails retryably is tried again after
        ``retry_delays_s``. One run's failure does not keep the others waiting: all are tried, then a
        ``ServiceError`` names those not resumed (the sweep resumes them later)."""
        resumed: list[str] = []
        failed: list[ServiceError] = []
        for wait in self.waits.waiting_for(repository, sha=sha, pr_number=pr_number):
            try:
                if self._resume_retrying(wait):
                    resumed.append(wait.flow_run_id)
            except ServiceError as exc:
                failed.append(exc)
        if failed:
            raise ServiceError(
                f"prefect: {len(failed)} waiting run(s) not resumed ({len(resumed)} resumed): "
                + "; ".join(str(e) for e in failed),
                retryable=all(e.retryable for e in failed),
            )
        return resumed

    def _resume_retrying(self, wait: RunWait) -> bool:
        for delay in self.retry_delays_s:
            try:
                return self.resume(wait, "event")
            except ServiceError as exc:
                if not exc.retryable:
                    raise
                logger.warning("resuming flow run %s failed (%s); again in %.0f s", wait.flow_run_id, exc, delay)
                self.sleep(delay)
        return self.resume(wait, "event")

    def resume(self, wait: RunWait, why: ResumeWhy) -> bool:
        """Resume ``wait``'s flow run; False when it is not suspended (it looks, runs, or is gone)."""
        from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
        from prefect.flow_runs import resume_flow_run

        try:
            resume_flow_run(uuid.UUID(wait.flow_run_id))
        except NotPausedError:
            return False
        except (FlowPauseTimeout, ObjectNotFound):
            self.waits.clear(wait.flow_run_id)  # Prefect failed it (suspended too long) or forgot it
            return False
        except RuntimeError as exc:
            if "not paused" in str(exc):  # another resumer (a second event, the sweep) was first
                return False
            raise ServiceError(f"prefect: resuming flow run {wait.flow_run_id} refused: {exc}") from None
        except Exception as exc:  # Prefect's client raises httpx and its own types: translate once, here
            raise ServiceError(
                f"prefect: resuming flow run {wait.flow_run_id} failed: {type(exc).__name__}", retryable=True
            ) from None
        self.waits.resumed(wait.flow_run_id, why)
        logger.info("resumed flow run %s (%s, %s of %s)", wait.flow_run_id, why, wait.label, wait.request_key)
        return True

    def state_of(self, flow_run_id: str) -> RunState:
        """What Prefect says of the flow run: suspended (paused), active (scheduled, pending, running), final."""
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(uuid.UUID(flow_run_id)).state
        except Exception:
            return "unknown"
        if state is None:
            return "unknown"
        if state.is_paused():
            return "suspended"
        return "final" if state.is_final() else "active"


def condition_met(host: CodeHost, wait: RunWait) -> bool:
    """One look, without waiting: does the code host already show what ``wait`` waits for?"""
    if wait.kind == "merge":
        assert wait.pr_number is not None
        return host.merge(wait.repository, wait.pr_number, auto_merge=False, timeout_s=0).verdict != "waiting"
    assert wait.sha is not None
    return host.wait_for_ci(wait.repository, wait.sha, timeout_s=0).verdict != "timed_out"


@dataclass
class SweepResult:
    """What one pass of the sweep did."""

    resumed: dict[str, ResumeWhy] = field(default_factory=dict)
    still_waiting: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def sweep_waits(
    waits: RunWaits,
    resumer: PrefectRunResumer,
    host: CodeHost,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SweepResult:
    """One pass over every recorded wait: a suspended run whose condition is met or whose deadline passed is
    resumed; a run Prefect shows final (it ended, or failed while suspended) loses its wait; a run that is active
    (looking before it suspends, or resumed and not yet past its wait) is left alone."""
    result = SweepResult()
    for wait in waits.all():
        state = resumer.state_of(wait.flow_run_id)
        if state == "final":
            waits.clear(wait.flow_run_id)
            result.cleared.append(wait.flow_run_id)
            continue
        if state != "suspended":
            result.still_waiting.append(wait.flow_run_id)
            continue
        try:
            met = wait.remaining_s(now()) > 0 and condition_met(host, wait)
            why = should_resume(wait, now=now(), condition_met=met)
            if why is not None and resumer.resume(wait, why):
                result.resumed[wait.flow_run_id] = why
            else:
                result.still_waiting.append(wait.flow_run_id)
        except PromptshipError as exc:  # one run's code host or Prefect hiccup does not stop the others
            result.errors[wait.flow_run_id] = f"{type(exc).__name__}: {exc}"
    return result
