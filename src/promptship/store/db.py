"""The store: idempotent writes keyed by attempt (+ step); attempts and the one-at-a-time lease per request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, create_engine, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from promptship.domain.attempt import Attempt, attempt_id_for, choose_attempt
from promptship.domain.kpi import RunFacts, run_facts
from promptship.domain.report import RunReport, StepFacts, StepRecord
from promptship.domain.request import DevRequest, sealed_form
from promptship.errors import AttemptInProgress, ConfigError, InvalidRequest
from promptship.store.sealing import PromptCipher
from promptship.store.tables import AttemptRow, RequestLeaseRow, RequestRow, RunRow, SealedRequestRow, StepRow
from promptship.store.waits import RunWaits


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
            # a deleted row (an expired key's hash, a replaced sealed request) is overwritten, not left on a free
            # page of the file or the WAL, where a copy of the file would still show it (docs/SECURITY.md)
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _step(r: StepRow) -> StepRecord:
    return StepRecord(
        run_key=r.run_key,
        attempt_id=r.attempt_id,
        step=r.step,
        name=r.name,  # type: ignore[arg-type]  # written from the StepName literal
        round=r.round,
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
        facts=StepFacts.model_validate(r.facts or {}),
        detail=r.detail or {},
    )


def _release_lease(run_key: str, holder: str) -> Any:
    """The statement that gives up ``holder``'s lease on a request (nothing when someone else holds it)."""
    return (
        update(RequestLeaseRow)
        .where(RequestLeaseRow.run_key == run_key, RequestLeaseRow.holder == holder)
        .values(holder=None, expires_at=None)
    )


def _attempt(r: AttemptRow) -> Attempt:
    return Attempt(
        id=r.attempt_id,
        request_key=r.run_key,
        number=r.number,
        occurrence=r.occurrence,
        status=r.status,  # type: ignore[arg-type]
        outcome=r.outcome,
        started_at=_utc(r.started_at),
        ended_at=_utc(r.ended_at) if r.ended_at else None,
    )


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Store:
    """The one local store. Implements the ``MetricsSink`` port.

    ``cipher`` seals prompts (``promptship.store.sealing``); without it the store can do everything but keep or
    read a request's prompt.
    """

    def __init__(self, engine: Engine, cipher: PromptCipher | None = None):
        self.engine = engine
        self.cipher = cipher
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Bring the schema to the newest migration (Alembic; creates the database when new), then seal the plain
        prompts a store from before migration 0006 kept (only a store opened with its key can)."""
        from promptship.store.migrate import upgrade

        upgrade(self.engine)
        if self.cipher is not None:
            self._seal_plain_requests()

    def _seal_plain_requests(self) -> None:
        # in SQL: every process opens the store, and reading every request it ever kept grew each start-up
        unsealed = RequestRow.request["sealed"].as_string().is_(None)
        with self._sessions.begin() as s:
            plain = [
                r for r in s.scalars(select(RequestRow).where(unsealed)).all() if not (r.request or {}).get("sealed")
            ]
        for row in plain:
            self.remember_request(row.run_key, DevRequest.model_validate(row.request))

    def session(self) -> Session:
        return self._sessions()

    def waits(self) -> RunWaits:
        """What suspended flow runs wait for (``run_waits``), in this store."""
        return RunWaits(self.engine)

    # MetricsSink
    def record_step(self, record: StepRecord) -> None:
        """Insert or replace the record of (attempt, step)."""
        with self._sessions.begin() as s:
            s.merge(
                StepRow(
                    attempt_id=record.attempt_id or attempt_id_for(record.run_key, 1),
                    run_key=record.run_key,
                    step=record.step,
                    name=record.name,
                    round=record.round,
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
                    facts=record.facts.model_dump(mode="json", exclude_none=True),
                    detail=dict(record.detail),
                )
            )

    def record_run(self, report: RunReport) -> None:
        """Insert or replace the report of an attempt."""
        with self._sessions.begin() as s:
            s.merge(
                RunRow(
                    attempt_id=report.attempt_id or attempt_id_for(report.run_key, 1),
                    run_key=report.run_key,
                    attempt_number=report.attempt_number,
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

    def attempt_steps(self, attempt_id: str) -> list[StepRecord]:
        """The step records of one attempt, in the order they started."""
        with self.session() as s:
            rows = s.scalars(select(StepRow).where(StepRow.attempt_id == attempt_id)).all()
        return sorted((_step(r) for r in rows), key=lambda r: r.started_at)

    def steps(self, run_key: str) -> list[StepRecord]:
        """The step records of the newest attempt of a request."""
        latest = self.latest_attempt(run_key)
        return self.attempt_steps(latest.id if latest else attempt_id_for(run_key, 1))

    def attempt_report(self, attempt_id: str) -> RunReport | None:
        with self.session() as s:
            row = s.get(RunRow, attempt_id)
        return RunReport.model_validate(row.report) if row else None

    def run(self, run_key: str) -> RunReport | None:
        """The report of the newest attempt of a request that has one."""
        with self.session() as s:
            rows = s.scalars(select(RunRow).where(RunRow.run_key == run_key)).all()
        if not rows:
            return None
        newest = max(rows, key=lambda r: (r.attempt_number, _utc(r.started_at)))
        return RunReport.model_validate(newest.report)

    def run_facts(self) -> list[RunFacts]:
        """One ``RunFacts`` per recorded attempt, folded from its step rows (the input of the KPIs)."""
        with self.session() as s:
            runs = s.scalars(select(RunRow).order_by(RunRow.started_at)).all()
            steps = s.scalars(select(StepRow)).all()
        by_attempt: dict[str, list[StepRecord]] = {}
        for r in steps:
            by_attempt.setdefault(r.attempt_id, []).append(_step(r))
        return [run_facts(RunReport.model_validate(r.report), by_attempt.get(r.attempt_id, [])) for r in runs]

    def runs(self) -> list[RunReport]:
        with self.session() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.started_at)).all()
        return [RunReport.model_validate(r.report) for r in rows]

    # Attempts (domain/attempt.py)
    def attempts(self, run_key: str) -> list[Attempt]:
        """Every attempt of a request, oldest first."""
        with self.session() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.run_key == run_key)).all()
        return sorted((_attempt(r) for r in rows), key=lambda a: a.number)

    def latest_attempt(self, run_key: str) -> Attempt | None:
        found = self.attempts(run_key)
        return found[-1] if found else None

    def attempt(self, attempt_id: str) -> Attempt | None:
        with self.session() as s:
            row = s.get(AttemptRow, attempt_id)
        return _attempt(row) if row else None

    def attempt_of_flow_run(self, flow_run_id: str) -> Attempt | None:
        """The attempt a flow run worked on (its id is kept on the attempt)."""
        # the JSON list's text narrows the rows in the database (flow-run ids are UUIDs, so a substring match is
        # exact enough to filter); the membership test below decides
        with self.session() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.flow_run_ids.cast(String).contains(flow_run_id))).all()
        for row in rows:
            if flow_run_id in (row.flow_run_ids or []):
                return _attempt(row)
        return None

    def begin_attempt(
        self,
        run_key: str,
        *,
        flow_run_id: str,
        occurrence: str | None = None,
        attempt_id: str | None = None,
        lease_ttl_s: float = 120.0,
        holder_alive: Callable[[str], bool] = lambda _holder: True,
        now: datetime | None = None,
    ) -> Attempt:
        """Take the request's lease for ``flow_run_id`` and bind it to its attempt (continued or new).

        Raises AttemptInProgress when another flow run holds an unexpired lease and ``holder_alive`` says it
        still runs. ``attempt_id`` (resume) continues that attempt of this request.
        """
        now = now or datetime.now(UTC)
        self._acquire_lease(run_key, flow_run_id, lease_ttl_s, holder_alive, now)
        with self._sessions.begin() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.run_key == run_key)).all()
            known = {r.attempt_id: r for r in rows}
            if attempt_id is not None and attempt_id not in known:
                self._release(run_key, flow_run_id)
                raise InvalidRequest(f"attempt {attempt_id} is not an attempt of request {run_key}")
            bound = (
                known.get(attempt_id)
                if attempt_id
                else next((r for r in rows if flow_run_id in (r.flow_run_ids or [])), None)
            )
            latest = max(rows, key=lambda r: r.number) if rows else None
            occ = next((r for r in rows if occurrence and r.occurrence == occurrence), None)
            choice, chosen = choose_attempt(
                request_key=run_key,
                bound=_attempt(bound) if bound else None,
                latest=_attempt(latest) if latest else None,
                occurrence=occurrence,
                existing_occurrence=_attempt(occ) if occ else None,
            )
            if choice == "new":
                row = AttemptRow(
                    attempt_id=chosen,
                    run_key=run_key,
                    number=(latest.number + 1) if latest else 1,
                    occurrence=occurrence,
                    status="running",
                    outcome=None,
                    started_at=now,
                    ended_at=None,
                    flow_run_ids=[flow_run_id],
                )
                s.add(row)
            else:
                row = known[chosen]
                row.status = "running"
                row.ended_at = None
                if flow_run_id not in (row.flow_run_ids or []):
                    row.flow_run_ids = [*(row.flow_run_ids or []), flow_run_id]
            s.execute(update(RequestLeaseRow).where(RequestLeaseRow.run_key == run_key).values(attempt_id=chosen))
            s.flush()
            return _attempt(row)

    def _acquire_lease(
        self, run_key: str, holder: str, ttl_s: float, holder_alive: Callable[[str], bool], now: datetime
    ) -> None:
        expires = now + timedelta(seconds=ttl_s)
        for _ in range(10):
            with self.session() as s:
                lease = s.get(RequestLeaseRow, run_key)
                current = (lease.holder, lease.expires_at, lease.attempt_id) if lease else None
            if current is None:
                try:
                    with self._sessions.begin() as s:
                        s.execute(
                            insert(RequestLeaseRow).values(
                                run_key=run_key, attempt_id="", holder=holder, expires_at=expires
                            )
                        )
                    return
                except IntegrityError:
                    continue  # another flow run inserted it first: look again
            old_holder, old_expires, old_attempt = current
            free = (
                old_holder is None
                or old_holder == holder
                or old_expires is None
                or _utc(old_expires) <= now
                or not holder_alive(old_holder)
            )
            if not free:
                assert old_expires is not None
                raise AttemptInProgress(
                    f"request {run_key} is already being worked on: attempt {old_attempt} in flow run {old_holder} "
                    f"(lease until {_utc(old_expires):%H:%M:%S} UTC). Wait for it to end, or resume that run.",
                    attempt_id=old_attempt,
                    holder=old_holder,
                )
            with self._sessions.begin() as s:
                condition = (
                    RequestLeaseRow.holder.is_(None) if old_holder is None else RequestLeaseRow.holder == old_holder
                )
                result = s.execute(
                    update(RequestLeaseRow)
                    .where(RequestLeaseRow.run_key == run_key, condition)
                    .values(holder=holder, expires_at=expires)
                )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return
        raise AttemptInProgress(f"request {run_key}: could not take its lease (contended)", attempt_id="", holder=None)

    def _release(self, run_key: str, holder: str) -> None:
        with self._sessions.begin() as s:
            s.execute(_release_lease(run_key, holder))

    # Sealed prompts
    def seal(self, request: DevRequest) -> DevRequest:
        """Keep ``request`` encrypted and return its sealed form (prompt redacted, ``sealed`` = its id): what may
        go into Prefect. A request already sealed is returned as it is."""
        if request.sealed is not None:
            return request
        if self.cipher is None:
            raise ConfigError("this store was opened without its prompt key, so it cannot keep a prompt")
        sealed_id, token = self.cipher.seal(request)
        try:
            with self._sessions.begin() as s:
                s.add(
                    SealedRequestRow(
                        id=sealed_id, request_key=request.run_key, token=token, created_at=datetime.now(UTC)
                    )
                )
        except IntegrityError:
            pass  # the same request was sealed before (its id is its digest)
        return sealed_form(request, sealed_id)

    def unseal(self, request: DevRequest) -> DevRequest:
        """The request a sealed form stands for (a request that is not sealed is returned as it is). Raises
        InvalidRequest when this store does not have it."""
        if request.sealed is None:
            return request
        if self.cipher is None:
            raise ConfigError("this store was opened without its prompt key, so it cannot read a sealed prompt")
        with self.session() as s:
            row = s.get(SealedRequestRow, request.sealed)
        if row is None:
            raise InvalidRequest(
                f"request: its prompt (sealed {request.sealed}) is not in this store — the run was started against "
                "another promptship store (PROMPTSHIP_DATABASE_URL)"
            )
        return self.cipher.open(row.token)

    # Requests (what /promptship stop and retry look up)
    def remember_request(self, run_key: str, request: DevRequest) -> None:
        """Keep the request behind ``run_key`` and where it came from (issue, PR) — sealed: the row holds the
        redacted prompt and the sealed id, never the prompt itself."""
        request = self.seal(request)
        with self._sessions.begin() as s:
            s.merge(
                RequestRow(
                    run_key=run_key,
                    repository=request.repository.lower(),
                    issue_number=request.issue_number,
                    source_pr=request.source_pr,
                    request=request.model_dump(mode="json"),
                    updated_at=datetime.now(UTC),
                )
            )

    def request_of(self, repository: str, number: int, run_key: str | None = None) -> tuple[str, DevRequest] | None:
        """The request ``run_key`` names, else the newest request started from issue/PR ``number`` — in its sealed
        form, which is what a new start needs (``unseal`` reads the prompt back)."""
        with self.session() as s:
            if run_key is not None:
                row = s.get(RequestRow, run_key)
                rows = [row] if row is not None else []
            else:
                rows = list(
                    s.scalars(
                        select(RequestRow).where(
                            RequestRow.repository == repository.lower(),
                            (RequestRow.issue_number == number) | (RequestRow.source_pr == number),
                        )
                    ).all()
                )
        if not rows:
            return None
        newest = max(rows, key=lambda r: _utc(r.updated_at))
        return newest.run_key, DevRequest.model_validate(newest.request)

    def lease_holder(self, run_key: str, *, now: datetime | None = None) -> str | None:
        """The flow run holding the request's unexpired lease, if any."""
        now = now or datetime.now(UTC)
        with self.session() as s:
            lease = s.get(RequestLeaseRow, run_key)
        if lease is None or lease.holder is None or lease.expires_at is None or _utc(lease.expires_at) <= now:
            return None
        return lease.holder

    def renew_lease(self, run_key: str, holder: str, ttl_s: float) -> bool:
        """Extend ``holder``'s lease; False when it no longer holds it."""
        with self._sessions.begin() as s:
            result = s.execute(
                update(RequestLeaseRow)
                .where(RequestLeaseRow.run_key == run_key, RequestLeaseRow.holder == holder)
                .values(expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s))
            )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def end_attempt(self, attempt_id: str, outcome: str, *, holder: str | None) -> None:
        """Record how the attempt ended and release the request's lease held by ``holder``."""
        with self._sessions.begin() as s:
            row = s.get(AttemptRow, attempt_id)
            if row is None:
                return
            row.status, row.outcome, row.ended_at = "ended", outcome, datetime.now(UTC)
            if holder is not None:
                s.execute(_release_lease(row.run_key, holder))
