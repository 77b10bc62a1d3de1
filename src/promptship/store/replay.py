"""What ``domain.replay`` reads from the store: the ledger's calls, the policies by hash, run budgets, and each
attempt's outcome with the class and model its route chose."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Literal, cast

from sqlalchemy import Engine, func, select

from promptship.domain.kpi import run_facts
from promptship.domain.replay import AttemptOutcome, PriceSource, RecordedCall, RecordedDecision, recorded_policy
from promptship.domain.report import RunReport, StepRecord
from promptship.domain.request import TaskClass
from promptship.domain.routing import RoutingPolicy
from promptship.store.db import Store, _step
from promptship.store.ledger import LLMCallRow, LLMRunRow, RoutingPolicyRow
from promptship.store.tables import RunRow, StepRow


def recorded_calls(engine: Engine, *, since: date | None = None) -> list[RecordedCall]:
    """Every LLM call in the ledger (from ``since``, a ledger day), oldest first."""
    query = select(LLMCallRow.__table__).order_by(LLMCallRow.at, LLMCallRow.id)
    if since is not None:
        query = query.where(LLMCallRow.day >= since.isoformat())
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out: list[RecordedCall] = []
    for r in rows:
        m = r._mapping
        decision = None
        if m["policy_hash"] is not None and m["task_class"] is not None:
            decision = RecordedDecision(
                task_class=cast(TaskClass, m["task_class"]),
                class_source=m["class_source"],
                class_rule=m["class_rule"],
                sensitive=m["gate_verdict"] == "sensitive",
                gate_kinds=tuple(m["gate_kinds"] or ()),
                forced_local=bool(m["forced_local"]),
                caller=m["route_caller"],
                price_source=cast(PriceSource, m["price_source"] or "list"),
                local_rate_per_1k_usd=float(m["local_rate_per_1k_usd"] or 0.0),
                policy_hash=m["policy_hash"],
                decided_by="exploration" if m["decided_by"] == "exploration" else "policy",
                explored_from=m["explored_from"],
                explore_seq=m["explore_seq"],
            )
        out.append(
            RecordedCall(
                id=m["id"],
                run_key=m["run_key"],
                step=m["step"],
                day=m["day"],
                at=m["at"],
                model=m["model"],
                mode=cast(Literal["local", "cloud"], m["mode"]),
                prompt_tokens=int(m["prompt_tokens"] or 0),
                completion_tokens=int(m["completion_tokens"] or 0),
                cost_usd=float(m["cost_usd"] or 0.0),
                fallback_used=bool(m["fallback_used"]),
                decision=decision,
            )
        )
    return out


def recorded_policies(engine: Engine) -> dict[str, RoutingPolicy]:
    """The policies that decided calls, by hash."""
    with engine.connect() as conn:
        rows = conn.execute(select(RoutingPolicyRow.hash, RoutingPolicyRow.policy_yaml)).all()
    return {h: recorded_policy(text) for h, text in rows}


def run_budgets(engine: Engine) -> dict[str, float | None]:
    """Each ledger run's cap (None: no cap)."""
    with engine.connect() as conn:
        rows = conn.execute(select(LLMRunRow.run_key, LLMRunRow.budget_usd)).all()
    return {k: (None if b is None or b < 0 else float(b)) for k, b in rows}


def attempt_outcomes(store: Store) -> list[AttemptOutcome]:
    """One outcome per recorded attempt whose route step says class and model; its cost is the ledger's."""
    with store.session() as s:
        runs = s.scalars(select(RunRow).order_by(RunRow.started_at)).all()
        steps = s.scalars(select(StepRow)).all()
        costs = dict(
            s.execute(select(LLMCallRow.run_key, func.sum(LLMCallRow.cost_usd)).group_by(LLMCallRow.run_key)).all()
        )
    by_attempt: dict[str, list[StepRecord]] = defaultdict(list)
    for r in steps:
        by_attempt[r.attempt_id].append(_step(r))
    out: list[AttemptOutcome] = []
    for run in runs:
        records = by_attempt.get(run.attempt_id, [])
        route = next((r for r in records if r.name == "route"), None)
        if route is None or route.model is None or route.facts.task_class is None:
            continue
        facts = run_facts(RunReport.model_validate(run.report), records)
        ci = sorted((r for r in records if r.name == "wait_for_ci"), key=lambda r: (r.round or 0, r.started_at))
        ledger_cost = costs.get(run.attempt_id)
        out.append(
            AttemptOutcome(
                attempt_id=run.attempt_id,
                task_class=route.facts.task_class,
                model=route.model,
                compiled=facts.compiled,
                first_ci_passed=ci[0].verdict == "passed" if ci else None,
                repair_rounds=sum(1 for r in records if r.name == "repair"),
                merged=facts.merged,
                deploy_attempted=facts.deploy_attempted,
                deployed=facts.deployed,
                rolled_back=facts.rolled_back,
                cost_usd=float(ledger_cost) if ledger_cost is not None else facts.cost_usd,
            )
        )
    return out
