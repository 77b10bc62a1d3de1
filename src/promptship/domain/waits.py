"""Waiting without holding a worker: what a suspended run waits for, and when it should go on — pure.

A run that waits longer than ``RunLimits.suspend_after_s`` for CI (``ci``), a human merge (``merge``) or the base
branch's image (``image``) records a ``RunWait`` and suspends; whatever sees the wait's condition met (a webhook
event, ``promptship sweep``) or its deadline passed resumes it, and the run looks again from the start.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WaitKind = Literal["ci", "merge", "image"]

# Prefect fails a suspended run its timeout passed; the sweep resumes it at its deadline, so Prefect's timeout is
# the deadline plus this margin (a few sweep intervals).
SUSPEND_MARGIN_S = 600.0


class RunWait(BaseModel):
    """One flow run's current wait."""

    model_config = ConfigDict(frozen=True)

    flow_run_id: str
    request_key: str
    attempt_id: str
    label: str = Field(description="The step label it waits in: wait_for_ci#1, merge, wait_for_image.")
    kind: WaitKind
    repository: str
    sha: str | None = Field(default=None, description="The commit whose CI it waits for (ci, image).")
    pr_number: int | None = Field(default=None, description="The PR it waits to be merged (merge).")
    deadline: datetime
    suspensions: int = 0
    suspended_at: datetime | None = None
    resumed_at: datetime | None = None

    def pause_key(self) -> str:
        """Prefect's key for this wait's next suspension: unique per suspension, since Prefect skips a suspend
        whose key already fired (a resumed run that must wait again needs a new one)."""
        return f"{self.label}:{self.suspensions}"

    def remaining_s(self, now: datetime) -> float:
        return max(0.0, (self.deadline - now).total_seconds())

    def suspend_timeout_s(self, now: datetime) -> int:
        """Prefect's timeout of the suspension: the wait's remaining time plus the margin."""
        return int(self.remaining_s(now) + SUSPEND_MARGIN_S)


def wait_deadline(started: datetime, timeout_s: float) -> datetime:
    return started + timedelta(seconds=timeout_s)


ResumeWhy = Literal["event", "condition", "deadline"]


def should_resume(wait: RunWait, *, now: datetime, condition_met: bool) -> ResumeWhy | None:
    """Whether the sweep resumes a suspended wait: its condition met (a webhook never came), or its deadline passed
    (the run then ends the wait as timed out itself)."""
    if condition_met:
        return "condition"
    if now >= wait.deadline:
        return "deadline"
    return None
