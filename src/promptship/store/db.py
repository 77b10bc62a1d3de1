"""The store: idempotent writes keyed by run key (+ step)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from promptship.domain.kpi import RunFacts, run_facts
from promptship.domain.report import RunReport, StepRecord
from promptship.store.tables import RunRow, StepRow


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so concurrent runs do not trip on locks."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: durable across process crashes; only a power loss may drop the last commit.
            # It halves the ledger's cost per LLM call (two commits each).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _step(r: StepRow) -> StepRecord:
    return StepRecord(
        run_key=r.run_key,
        step=r.step,
        started_at=_utc(r.started_at),
        ended_at=_utc(r.ended_at),
        verdict=r.verdict,
        model=r.model,
        mode=r.mode,
        route_reason=r.route_reason,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        cost_usd=r.cost_usd,
        cost_missing=r.cost_missing,
        error=r.error,
        detail=r.detail or {},
    )


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Store:
    """The one local store. Implements the ``MetricsSink`` port."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Bring the schema to the newest migration (Alembic; creates the database when new)."""
        from promptship.store.migrate import upgrade

        upgrade(self.engine)

    def session(self) -> Session:
        return self._sessions()

    # MetricsSink
    def record_step(self, record: StepRecord) -> None:
        """Insert or replace the record of (run_key, step)."""
        with self._sessions.begin() as s:
            s.merge(
                StepRow(
                    run_key=record.run_key,
                    step=record.step,
                    started_at=record.started_at,
                    ended_at=record.ended_at,
                    verdict=record.verdict,
                    model=record.model,
                    mode=record.mode,
                    route_reason=record.route_reason,
                    prompt_tokens=record.prompt_tokens,
                    completion_tokens=record.completion_tokens,
                    cost_usd=record.cost_usd,
                    cost_missing=record.cost_missing,
                    error=record.error,
                    detail=dict(record.detail),
                )
            )

    def record_run(self, report: RunReport) -> None:
        """Insert or replace the report of a run."""
        with self._sessions.begin() as s:
            s.merge(
                RunRow(
                    run_key=report.run_key,
                    repository=report.repository,
                    requester=report.requester,
                    prompt_redacted=report.prompt_redacted,
                    outcome=report.outcome,
                    started_at=report.started_at,
                    ended_at=report.ended_at,
                    pr_url=report.pr_url,
                    image=report.image,
                    compiled=report.compiled,
                    total_cost_usd=report.total_cost_usd,
                    flow_run_id=report.flow_run_id,
                    report=report.model_dump(mode="json"),
                )
            )

    def steps(self, run_key: str) -> list[StepRecord]:
        with self.session() as s:
            rows = s.scalars(select(StepRow).where(StepRow.run_key == run_key)).all()
        return [_step(r) for r in rows]

    def run(self, run_key: str) -> RunReport | None:
        with self.session() as s:
            row = s.get(RunRow, run_key)
        return RunReport.model_validate(row.report) if row else None

    def run_facts(self) -> list[RunFacts]:
        """One ``RunFacts`` per recorded run, folded from its step rows (the input of the KPIs)."""
        with self.session() as s:
            runs = s.scalars(select(RunRow).order_by(RunRow.started_at)).all()
            steps = s.scalars(select(StepRow)).all()
        by_run: dict[str, list[StepRecord]] = {}
        for r in steps:
            by_run.setdefault(r.run_key, []).append(_step(r))
        return [run_facts(RunReport.model_validate(r.report), by_run.get(r.run_key, [])) for r in runs]

    def runs(self) -> list[RunReport]:
        with self.session() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.started_at)).all()
        return [RunReport.model_validate(r.report) for r in rows]
