"""The LLM cost ledger, in the one store (same ``Base`` as ``store.tables``).

Tables:
- ``llm_calls``: one row per LLM call — run, step, repository, ledger day, model, local/cloud, tokens, cost in
  USD as the provider reported it (``cost_missing`` when a cloud provider did not say: the cost is then the
  list-price estimate, never 0);
- ``llm_reservations``: money set aside *before* a call. A reservation is taken under a lock (SQLite:
  ``BEGIN IMMEDIATE``; Postgres: ``SELECT … FOR UPDATE`` on ``llm_budget_lock``), and open reservations count
  as spent, so concurrent runs cannot all pass the same remaining budget. After the call it is settled (the
  call's row replaces it) or released;
- ``llm_runs``: each run's budget and repository; ``llm_access_keys``: the SHA-256 of each API key (never the
  key itself): per-run keys minted for the code agent, and apps' keys naming their caller (the chat app's).

Everything lives in the database, so a restart keeps the day's spend.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from promptship.domain.costs import BudgetCheck, check_budget, ledger_day, zone
from promptship.domain.replay import RecordedDecision
from promptship.domain.results import LLMMode, RouteDecision, RunAccess, Usage
from promptship.errors import AccessKeyRevoked
from promptship.store.tables import Base, RunRow

GroupBy = Literal["step", "run", "day", "repository", "model", "mode"]


class LLMCallRow(Base):
    """One LLM call and what it cost."""

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    cost_missing: Mapped[bool] = mapped_column(Boolean, default=False)
    fallback_used: Mapped[bool] = mapped_column(Boolean, default=False)
    route_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # send → last byte, retries included
    # What replay needs to decide and price the call again (migration 0008; NULL on older rows): never text.
    task_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    class_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # rule | caller
    class_rule: Mapped[str | None] = mapped_column(String(80), nullable=True)  # the rule's name, not its match
    gate_verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)  # clean | sensitive
    gate_kinds: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # kind:subtype, never values
    forced_local: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    route_caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    price_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # provider | list | local | estimate
    local_rate_per_1k_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    policy_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Exploration (migration 0010; NULL: decided by the policy): who chose the model, the policy's own choice of an
    # explored call, and the call's number in the key of the exploration draw.
    decided_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # policy | exploration
    explored_from: Mapped[str | None] = mapped_column(String(200), nullable=True)
    explore_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RoutingPolicyRow(Base):
    """A routing policy that decided calls, by the SHA-256 of its YAML (``RoutingPolicy.fingerprint``)."""

    __tablename__ = "routing_policies"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_yaml: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LLMReservationRow(Base):
    """Money set aside for a call in flight: counted as spent until settled or released."""

    __tablename__ = "llm_reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    amount_usd: Mapped[float] = mapped_column(Float)
    created_epoch: Mapped[float] = mapped_column(Float, index=True)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    exploration: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # for an explored call (0010)


class LLMRunRow(Base):
    """A run's LLM budget and repository."""

    __tablename__ = "llm_runs"

    run_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    repository: Mapped[str | None] = mapped_column(String(200), nullable=True)
    budget_usd: Mapped[float] = mapped_column(Float)


class LLMAccessKeyRow(Base):
    """An API key of the gateway service, by its SHA-256 (the key itself is never stored): a run's key with
    its pinned ``decision``, or an app's key with its ``caller`` (migration 0007)."""

    __tablename__ = "llm_access_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_key: Mapped[str] = mapped_column(String(64), index=True)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    budget_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LLMBudgetLockRow(Base):
    """One row locked with SELECT … FOR UPDATE around every reservation (databases other than SQLite)."""

    __tablename__ = "llm_budget_lock"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)


LEDGER_TABLES: list[Table] = [
    LLMCallRow.__table__,  # type: ignore[list-item]
    LLMReservationRow.__table__,  # type: ignore[list-item]
    LLMRunRow.__table__,  # type: ignore[list-item]
    LLMAccessKeyRow.__table__,  # type: ignore[list-item]
    LLMBudgetLockRow.__table__,  # type: ignore[list-item]
    RoutingPolicyRow.__table__,  # type: ignore[list-item]
]


@dataclass(frozen=True)
class Reservation:
    """The outcome of ``CostLedger.reserve``: an id to settle or release when ``check.ok``."""

    check: BudgetCheck
    id: str | None = None
    mode: LLMMode = "local"


def _decision_columns(d: RecordedDecision | None) -> dict[str, Any]:
    if d is None:
        return {}
    return {
        "task_class": d.task_class,
        "class_source": d.class_source,
        "class_rule": (d.class_rule or "")[:80] or None,
        "gate_verdict": "sensitive" if d.sensitive else "clean",
        "gate_kinds": list(d.gate_kinds),
        "forced_local": d.forced_local,
        "route_caller": d.caller,
        "price_source": d.price_source,
        "local_rate_per_1k_usd": d.local_rate_per_1k_usd,
        "policy_hash": d.policy_hash,
        "decided_by": d.decided_by,
        "explored_from": d.explored_from,
        "explore_seq": d.explore_seq,
    }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class CostLedger:
    """Costs per call, budgets enforced before each call, aggregates per step, run, day and repository."""

    def __init__(
        self,
        engine: Engine,
        *,
        timezone: str = "UTC",
        cloud_daily_usd: float | None = None,
        run_default_usd: float | None = None,
        display_currency: str = "USD",
        usd_to_display_rate: float = 1.0,
        reservation_ttl_s: float = 900.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        zone(timezone)  # fail early, naming the setting
        self.engine = engine
        self.timezone = timezone
        self.cloud_daily_usd = cloud_daily_usd
        self.run_default_usd = run_default_usd
        self.display_currency = display_currency
        self.usd_to_display_rate = usd_to_display_rate
        self.reservation_ttl_s = reservation_ttl_s
        self.clock = clock

    def create_schema(self) -> None:
        """Bring the store to the newest migration (the ledger's tables are in migration 0001)."""
        from promptship.store.migrate import upgrade

        upgrade(self.engine)

    def today(self) -> str:
        return ledger_day(self.clock(), self.timezone)

    # ---- runs and keys ----------------------------------------------------------------------------------
    def open_run(self, run_key: str, *, budget_usd: float | None = None, repository: str | None = None) -> None:
        """Remember a run's budget (and repository); later calls keep the values not given again."""
        with self.engine.begin() as conn:
            row = conn.execute(select(LLMRunRow).where(LLMRunRow.run_key == run_key)).first()
            if row is None:
                budget = budget_usd if budget_usd is not None else self.run_default_usd
                try:
                    conn.execute(
                        insert(LLMRunRow).values(
                            run_key=run_key, repository=repository, budget_usd=budget if budget is not None else -1.0
                        )
                    )
                    return
                except IntegrityError:
                    pass
            values: dict[str, Any] = {}
            if budget_usd is not None:
                values["budget_usd"] = budget_usd
            if repository is not None:
                values["repository"] = repository
            if values:
                conn.execute(update(LLMRunRow).where(LLMRunRow.run_key == run_key).values(**values))

    def run_budget_usd(self, run_key: str) -> float | None:
        """The run's cap (None: no cap)."""
        with self.engine.connect() as conn:
            budget = conn.execute(select(LLMRunRow.budget_usd).where(LLMRunRow.run_key == run_key)).scalar()
        if budget is None:
            return self.run_default_usd
        return None if budget < 0 else budget

    def add_access_key(self, key: str, run_key: str, decision: RouteDecision, budget_usd: float) -> None:
        """Store the hash of a per-run key (the key itself is returned to the caller only)."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(LLMAccessKeyRow).values(
                    key_hash=hash_key(key),
                    run_key=run_key,
                    decision=decision.model_dump(mode="json"),
                    budget_usd=budget_usd,
                    created_at=self.clock(),
                )
            )

    def expire_access_keys(self, run_key: str) -> int:
        """Forget every per-run key of ``run_key`` (its attempt ended): the gateway answers 401 to them from now
        on. Returns how many there were."""
        with self.engine.begin() as conn:
            # apps' keys (a caller, no attempt) are not the attempt's: they stay
            result = conn.execute(
                delete(LLMAccessKeyRow).where(LLMAccessKeyRow.run_key == run_key, LLMAccessKeyRow.caller.is_(None))
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def add_caller_key(self, key: str, caller: str, run_key: str, budget_usd: float | None = None) -> None:
        """Store the hash of an app's key for ``caller``; its calls are recorded under ``run_key`` (opened here
        with ``budget_usd`` as its cap, None: no cap of its own — the day's cloud cap still applies)."""
        self.open_run(run_key, budget_usd=budget_usd if budget_usd is not None else -1.0)
        with self.engine.begin() as conn:
            conn.execute(
                insert(LLMAccessKeyRow).values(
                    key_hash=hash_key(key),
                    run_key=run_key,
                    decision=None,
                    caller=caller,
                    budget_usd=budget_usd if budget_usd is not None else -1.0,
                    created_at=self.clock(),
                )
            )

    def access_for(self, key: str) -> RunAccess | None:
        """What a key stands for (a run's pinned route, or an app's caller), or None for an unknown key."""
        with self.engine.connect() as conn:
            row = conn.execute(select(LLMAccessKeyRow).where(LLMAccessKeyRow.key_hash == hash_key(key))).first()
        if row is None:
            return None
        decision = RouteDecision.model_validate(row.decision) if row.decision is not None else None
        return RunAccess(
            run_key=row.run_key,
            decision=decision,
            caller=row.caller,
            budget_usd=row.budget_usd,
            key_hash=row.key_hash,
        )

    # ---- reservations -----------------------------------------------------------------------------------
    def reserve(
        self,
        run_key: str,
        mode: LLMMode,
        estimate_usd: float,
        *,
        exploration_cap_usd: float | None = None,
        key_hash: str | None = None,
    ) -> Reservation:
        """Set ``estimate_usd`` aside for a call of ``run_key`` if it fits the run's cap and (cloud) the day's.
        ``exploration_cap_usd``: the call is an explored one, and must also fit the day's exploration budget
        (explored calls recorded today plus open reservations for explored calls). ``key_hash``: the call came
        with a gateway key (``RunAccess.key_hash``), which must still stand — else ``AccessKeyRevoked``, nothing
        reserved. This is what makes the gateway service's key cache safe: every call takes a reservation before
        anything is sent, so a key expired by any process is refused here even when a cache still knew it.

        Atomic: the key check, the sums and the insert happen under one database lock."""
        day = self.today()
        now = time.time()
        with self.engine.connect() as conn:
            self._lock(conn)
            try:
                run_cap, run_spent, day_spent, key_stands = self._caps_and_spent(
                    conn, run_key, day, mode, now, key_hash
                )
                if not key_stands:
                    conn.rollback()
                    raise AccessKeyRevoked("the API key stands for no run any more (its attempt ended) or never did")
                check = check_budget(
                    mode=mode,
                    estimate_usd=estimate_usd,
                    run_spent_usd=run_spent,
                    run_cap_usd=run_cap,
                    day_cloud_spent_usd=day_spent,
                    day_cloud_cap_usd=self.cloud_daily_usd,
                )
                if check.ok and exploration_cap_usd is not None:
                    explored = self._explored_spent(conn, day=day, now=now)
                    if explored + estimate_usd > exploration_cap_usd + 1e-12:
                        check = BudgetCheck(
                            ok=False,
                            estimate_usd=estimate_usd,
                            scope="exploration",
                            limit_usd=exploration_cap_usd,
                            spent_usd=explored,
                        )
                if not check.ok:
                    conn.rollback()
                    return Reservation(check=check, mode=mode)
                rid = str(uuid.uuid4())
                conn.execute(
                    _INSERT_RESERVATION,
                    {
                        "id": rid,
                        "run_key": run_key,
                        "day": day,
                        "mode": mode,
                        "amount_usd": estimate_usd,
                        "created_epoch": now,
                        "state": "open",
                        "exploration": True if exploration_cap_usd is not None else None,
                    },
                )
                conn.commit()
                return Reservation(check=check, id=rid, mode=mode)
            except BaseException:
                conn.rollback()
                raise

    def release(self, reservation: Reservation) -> None:
        """Give back what a reservation set aside (the call failed or was not made)."""
        if reservation.id is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(LLMReservationRow)
                .where(LLMReservationRow.id == reservation.id, LLMReservationRow.state == "open")
                .values(state="released")
            )

    def settle(
        self,
        reservation: Reservation | None,
        *,
        run_key: str,
        step: str,
        model: str,
        mode: LLMMode,
        usage: Usage,
        fallback_used: bool = False,
        route_reason: str | None = None,
        latency_ms: float | None = None,
        decision: RecordedDecision | None = None,
    ) -> None:
        """Record a finished call (tokens, cost, latency, and ``decision``: what replay needs) and close its
        reservation, in one transaction."""
        moment = self.clock()
        with self.engine.begin() as conn:
            # statements built once, values as parameters (building them for every call cost ~0.5 ms)
            repository = conn.execute(_RUN_REPOSITORY, {"run_key": run_key}).scalar()
            conn.execute(
                _INSERT_CALL,
                {
                    "run_key": run_key,
                    "step": step,
                    "repository": repository,
                    "day": ledger_day(moment, self.timezone),
                    "at": moment,
                    "model": model,
                    "mode": mode,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "cost_usd": usage.cost_usd,
                    "cost_missing": usage.cost_missing,
                    "fallback_used": fallback_used,
                    "route_reason": (route_reason or "")[:500] or None,
                    "latency_ms": latency_ms,
                    **_decision_columns(decision),
                },
            )
            if reservation is not None and reservation.id is not None:
                conn.execute(_CLOSE_RESERVATION, {"rid": reservation.id})

    def remember_policy(self, policy_hash: str, policy_yaml: str) -> None:
        """Keep a routing policy under its hash (once; later calls with the same hash change nothing)."""
        with self.engine.begin() as conn:
            if conn.execute(select(RoutingPolicyRow.hash).where(RoutingPolicyRow.hash == policy_hash)).first():
                return
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(RoutingPolicyRow).values(
                            hash=policy_hash, policy_yaml=policy_yaml, recorded_at=self.clock()
                        )
                    )
            except IntegrityError:
                pass  # another process kept it first

    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "sqlite":
            # A write lock from the first statement: no other connection can reserve until we commit.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        lock = select(LLMBudgetLockRow).where(LLMBudgetLockRow.name == "ledger").with_for_update()
        if conn.execute(lock).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(LLMBudgetLockRow).values(name="ledger"))
            except IntegrityError:
                pass
            conn.execute(lock)

    def _caps_and_spent(
        self, conn: Connection, run_key: str, day: str, mode: LLMMode, now: float, key_hash: str | None = None
    ) -> tuple[float | None, float, float, bool]:
        """The run's cap, what the run has spent and (a cloud call) what the cloud has spent today, recorded
        calls and open reservations both, and whether ``key_hash`` (if given) still stands: one prepared
        statement (five statements built anew for every call were ~0.5 ms of SQLAlchemy on the path of every
        LLM call)."""
        params: dict[str, Any] = {"run_key": run_key, "day": day, "cutoff": now - self.reservation_ttl_s}
        if key_hash is not None:
            params["key_hash"] = key_hash
        statement = _sums_statement(mode == "cloud", key_hash is not None)
        row: tuple[Any, ...] = tuple(conn.execute(statement, params).one())
        cap = self.run_default_usd if row[0] is None else (None if row[0] < 0 else float(row[0]))
        run_spent = float(row[1] or 0.0) + float(row[2] or 0.0)
        day_spent = float(row[3] or 0.0) + float(row[4] or 0.0) if mode == "cloud" else 0.0
        key_stands = key_hash is None or bool(row[-1])
        return cap, run_spent, day_spent, key_stands

    def _explored_spent(self, conn: Connection, *, day: str, now: float) -> float:
        calls = select(func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0)).where(
            LLMCallRow.day == day, LLMCallRow.decided_by == "exploration"
        )
        held = select(func.coalesce(func.sum(LLMReservationRow.amount_usd), 0.0)).where(
            LLMReservationRow.state == "open",
            LLMReservationRow.created_epoch > now - self.reservation_ttl_s,
            LLMReservationRow.day == day,
            LLMReservationRow.exploration.is_(True),
        )
        return float(conn.execute(calls).scalar() or 0.0) + float(conn.execute(held).scalar() or 0.0)

    # ---- reading ----------------------------------------------------------------------------------------
    def step_calls(self, run_key: str, step: str) -> int:
        """How many calls of ``step`` the run has recorded (an explored call's number in its draw's key)."""
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(LLMCallRow)
            value = conn.execute(query.where(LLMCallRow.run_key == run_key, LLMCallRow.step == step)).scalar()
        return int(value or 0)

    def explored_spend_usd(self, day: str | None = None) -> float:
        """What explored calls recorded on ``day`` (default: today) cost."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0)).where(
                    LLMCallRow.day == (day or self.today()), LLMCallRow.decided_by == "exploration"
                )
            ).scalar()
        return round(float(value or 0.0), 10)

    def run_cost_usd(self, run_key: str) -> float:
        """What the run's finished calls cost (reservations in flight not included)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0)).where(LLMCallRow.run_key == run_key)
            ).scalar()
        return round(float(value or 0.0), 10)

    def run_usage(self, run_key: str) -> Usage:
        """Tokens and cost of a run's calls; ``cost_missing`` if any cloud call reported no cost."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    func.coalesce(func.sum(LLMCallRow.prompt_tokens), 0),
                    func.coalesce(func.sum(LLMCallRow.completion_tokens), 0),
                    func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0),
                    func.coalesce(func.max(LLMCallRow.cost_missing), False),
                ).where(LLMCallRow.run_key == run_key)
            ).one()
        return Usage(
            prompt_tokens=int(row[0]),
            completion_tokens=int(row[1]),
            cost_usd=round(float(row[2]), 10),
            cost_missing=bool(row[3]),
        )

    def day_spend_usd(self, day: str | None = None, *, mode: LLMMode | None = "cloud") -> float:
        """Recorded spend of a ledger day (default: today), cloud only unless ``mode`` is None."""
        with self.engine.connect() as conn:
            query = select(func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0)).where(
                LLMCallRow.day == (day or self.today())
            )
            if mode is not None:
                query = query.where(LLMCallRow.mode == mode)
            value = conn.execute(query).scalar()
        return round(float(value or 0.0), 10)

    def totals(self, by: GroupBy, *, run_key: str | None = None, day: str | None = None) -> dict[str, float]:
        """Recorded cost in USD grouped by step, run, day, repository, model or mode. A call's repository is
        the one given to ``open_run``, else the one of the run's report in the store (``runs``)."""
        column: Any = {
            "step": LLMCallRow.step,
            "run": LLMCallRow.run_key,
            "day": LLMCallRow.day,
            "repository": func.coalesce(LLMCallRow.repository, RunRow.repository),
            "model": LLMCallRow.model,
            "mode": LLMCallRow.mode,
        }[by]
        query = select(column, func.sum(LLMCallRow.cost_usd))
        if by == "repository":
            query = query.select_from(LLMCallRow).outerjoin(RunRow, RunRow.attempt_id == LLMCallRow.run_key)
        query = query.group_by(column)
        if run_key is not None:
            query = query.where(LLMCallRow.run_key == run_key)
        if day is not None:
            query = query.where(LLMCallRow.day == day)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {str(k) if k is not None else "(none)": round(float(v or 0.0), 10) for k, v in rows}

    def missing_cost_calls(self, run_key: str | None = None) -> int:
        """How many cloud calls reported no cost (their cost is a list-price estimate)."""
        query = select(func.count()).select_from(LLMCallRow).where(LLMCallRow.cost_missing.is_(True))
        if run_key is not None:
            query = query.where(LLMCallRow.run_key == run_key)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def in_display(self, usd: float) -> str:
        """``usd`` shown in the display currency, e.g. '9.20 EUR'."""
        return f"{usd * self.usd_to_display_rate:.2f} {self.display_currency}"


@functools.cache
def _sums_statement(with_day: bool, with_key: bool = False) -> Select[*tuple[Any, ...]]:
    """The run's cap, the run's recorded and held spend and, ``with_day``, the day's cloud spend (the same two),
    for ``run_key``, ``day`` and ``cutoff`` (reservations older than the TTL no longer count); ``with_key``, last,
    how many access keys have the hash ``key_hash`` (0 or 1). Built once."""
    run_key, day, cutoff = bindparam("run_key"), bindparam("day"), bindparam("cutoff")
    open_held = (LLMReservationRow.state == "open", LLMReservationRow.created_epoch > cutoff)
    calls = select(func.coalesce(func.sum(LLMCallRow.cost_usd), 0.0))
    held = select(func.coalesce(func.sum(LLMReservationRow.amount_usd), 0.0)).where(*open_held)
    parts: list[Any] = [
        select(LLMRunRow.budget_usd).where(LLMRunRow.run_key == run_key).scalar_subquery(),
        calls.where(LLMCallRow.run_key == run_key).scalar_subquery(),
        held.where(LLMReservationRow.run_key == run_key).scalar_subquery(),
    ]
    if with_day:
        parts.append(calls.where(LLMCallRow.day == day, LLMCallRow.mode == "cloud").scalar_subquery())
        parts.append(held.where(LLMReservationRow.day == day, LLMReservationRow.mode == "cloud").scalar_subquery())
    if with_key:
        key = select(func.count()).select_from(LLMAccessKeyRow)
        parts.append(key.where(LLMAccessKeyRow.key_hash == bindparam("key_hash")).scalar_subquery())
    return select(*parts)


# what ``reserve`` and ``settle`` run, built once (the values are parameters)
_INSERT_RESERVATION: Insert = insert(LLMReservationRow)
_RUN_REPOSITORY: Select[Any] = select(LLMRunRow.repository).where(LLMRunRow.run_key == bindparam("run_key"))
_INSERT_CALL: Insert = insert(LLMCallRow)
_CLOSE_RESERVATION = update(LLMReservationRow).where(LLMReservationRow.id == bindparam("rid")).values(state="settled")
