"""Two identities: the *request* (what to do, keyed by the request key) and the *attempt* (one execution of it).

The request key keys every idempotent side effect — branch, agent conversation, PR marker, deploy annotation —
so that any attempt finds what an earlier one did. The attempt keys what belongs to one execution: step
records, the run report, KPIs, the ledger's budget and the step result cache. Its id is fixed before the flow
body runs and stays the same across Prefect retries of the flow run and ``promptship resume``.

Which attempt a flow run belongs to (``choose_attempt``):

- a flow run already bound to an attempt (a Prefect retry of the same flow run, a resumed run) keeps it;
- a scheduled flow run is the attempt of its occurrence (the date of its expected start time): a new attempt
  every day, never another day's results;
- otherwise the request's newest attempt is continued while it is unfinished (crashed, failed, cancelled,
  still marked running) and a new one starts once it finished (deployed, rolled back, stopped, waiting,
  already done).

A request marked ``recurring`` makes each occurrence a new *request* instead (the occurrence is part of its
key): a new branch and PR each day, what a daily canary wants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

AttemptStatus = Literal["running", "ended"]

# Outcomes after which re-submitting the request starts a new attempt. Any other end (failed, cancelled, a
# crash that left no outcome) is continued by the next submission or resume.
FINISHED_OUTCOMES = frozenset({"deployed", "rolled_back", "stopped", "waiting", "already_done"})


class Attempt(BaseModel):
    """One execution of a request."""

    model_config = ConfigDict(frozen=True)

    id: str
    request_key: str
    number: int
    occurrence: str | None = None
    status: AttemptStatus = "running"
    outcome: str | None = None
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status == "ended" and self.outcome in FINISHED_OUTCOMES


def occurrence_of(expected_start: datetime) -> str:
    """The occurrence a scheduled flow run stands for: the UTC date of its expected start, ``YYYYMMDD``."""
    from datetime import UTC

    moment = expected_start if expected_start.tzinfo else expected_start.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d")


def attempt_id_for(request_key: str, number: int, occurrence: str | None = None) -> str:
    """``<request key>-<occurrence>`` for a scheduled occurrence, else ``<request key>-a<number>``."""
    return f"{request_key}-{occurrence}" if occurrence else f"{request_key}-a{number}"


Choice = tuple[Literal["continue", "new"], str]


def choose_attempt(
    *,
    request_key: str,
    bound: Attempt | None,
    latest: Attempt | None,
    occurrence: str | None,
    existing_occurrence: Attempt | None,
) -> Choice:
    """Which attempt a flow run works on: ``("continue", id)`` or ``("new", id)`` (see the module docstring).

    ``bound``: the attempt this flow run is already bound to; ``latest``: the request's newest attempt;
    ``existing_occurrence``: the attempt of ``occurrence`` if one exists.
    """
    if bound is not None:
        return "continue", bound.id
    next_number = (latest.number + 1) if latest is not None else 1
    if occurrence is not None:
        if existing_occurrence is not None:
            return "continue", existing_occurrence.id
        return "new", attempt_id_for(request_key, next_number, occurrence)
    if latest is not None and not latest.finished:
        return "continue", latest.id
    return "new", attempt_id_for(request_key, next_number)
