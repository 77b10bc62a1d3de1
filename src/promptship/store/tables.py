"""Table definitions of the store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class StepRow(Base):
    """One step of one attempt; (attempt_id, step) is unique, so a retried step replaces its row."""

    __tablename__ = "steps"

    attempt_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(32), nullable=True)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    route_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    cost_missing: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    facts: Mapped[dict] = mapped_column(JSON, default=dict)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class RunRow(Base):
    """The report of one attempt (its latest state)."""

    __tablename__ = "runs"

    attempt_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    attempt_number: Mapped[int] = mapped_column(Integer, default=1)
    repository: Mapped[str] = mapped_column(String(200), index=True)
    requester: Mapped[str] = mapped_column(String(200))
    prompt_redacted: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pr_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    image: Mapped[str | None] = mapped_column(String(500), nullable=True)
    compiled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    total_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    report: Mapped[dict] = mapped_column(JSON)


class AttemptRow(Base):
    """One execution of a request (``domain/attempt.py``), with the lease that lets only one run at a time."""

    __tablename__ = "attempts"

    attempt_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int] = mapped_column(Integer)
    occurrence: Mapped[str | None] = mapped_column(String(16), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    flow_run_ids: Mapped[list] = mapped_column(JSON, default=list)


class RequestLeaseRow(Base):
    """Who runs a request now: at most one flow run per request key holds an unexpired lease."""

    __tablename__ = "request_leases"

    run_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt_id: Mapped[str] = mapped_column(String(80))
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RequestRow(Base):
    """The request behind a request key — in its sealed form (prompt redacted, ``sealed`` naming the encrypted
    request in ``sealed_requests``) — and where it came from, so `/promptship stop` and `/promptship retry` on an
    issue or PR find it."""

    __tablename__ = "requests"

    run_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    repository: Mapped[str] = mapped_column(String(200))
    issue_number: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    source_pr: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    request: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SealedRequestRow(Base):
    """A request whose prompt Prefect must not hold, encrypted (``promptship.store.sealing``), under its id."""

    __tablename__ = "sealed_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_key: Mapped[str] = mapped_column(String(64), index=True)
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunWaitRow(Base):
    """What a suspended flow run waits for (CI of a commit, a human merge of a PR, the base branch's image), so the
    webhook receiver and ``promptship sweep`` find the run to resume. One row per flow run: its current wait."""

    __tablename__ = "run_waits"

    flow_run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_key: Mapped[str] = mapped_column(String(64))
    attempt_id: Mapped[str] = mapped_column(String(80))
    label: Mapped[str] = mapped_column(String(64), doc="The step label the run waits in (wait_for_ci#1, merge).")
    kind: Mapped[str] = mapped_column(String(16))
    repository: Mapped[str] = mapped_column(String(200), index=True)
    sha: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    pr_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    suspensions: Mapped[int] = mapped_column(Integer, default=0)
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resumed_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
