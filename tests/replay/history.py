"""A generated month of recorded calls and outcomes, written through the store's own APIs (``Store.record_step``
/ ``record_run``, ``CostLedger.settle``), with everything a test needs to know computed here, by construction,
not by the code under test.

Two policies were in force: weeks 1–2 routed ``tests`` and ``complex_code`` to gpt-4o, weeks 3–4 both to mistral
(local). ``tests`` succeeds 29/30 on either model; ``complex_code`` 28/30 on gpt-4o and 15/30 on mistral. Four
``docs`` attempts (too few to judge). One call of the month carried a secret (``repair`` step, kept local).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from promptship.domain.replay import RecordedDecision
from promptship.domain.report import RunReport, StepFacts, StepRecord
from promptship.domain.results import Usage
from promptship.domain.routing import RoutingPolicy
from promptship.store import Store
from promptship.store.ledger import CostLedger

PRICES = {  # USD per token (input, output), as in the seed's policy; local models cost nothing here
    "gpt-4o": (2.5e-6, 10e-6),
    "claude-3.5-sonnet": (3e-6, 15e-6),
    "mistral": (0.0, 0.0),
    "llama3": (0.0, 0.0),
}
WEEKS_1_2 = RoutingPolicy.from_yaml("classes: {tests: gpt-4o, complex_code: gpt-4o}")
WEEKS_3_4 = RoutingPolicy.from_yaml("classes: {tests: mistral, complex_code: mistral}")
# (class, model, policy, attempts, successes)
PLAN = [
    ("tests", "gpt-4o", WEEKS_1_2, 30, 29),
    ("complex_code", "gpt-4o", WEEKS_1_2, 30, 28),
    ("docs", "claude-3.5-sonnet", WEEKS_1_2, 4, 4),
    ("tests", "mistral", WEEKS_3_4, 30, 29),
    ("complex_code", "mistral", WEEKS_3_4, 30, 15),
]
START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


@dataclass
class Call:
    attempt: str
    klass: str
    model: str
    mode: str
    prompt: int
    completion: int
    cost: float
    day: str
    sensitive: bool = False


@dataclass
class History:
    calls: list[Call] = field(default_factory=list)
    attempts: dict[tuple[str, str], list[bool]] = field(default_factory=dict)


def _cost(model: str, prompt: int, completion: int) -> float:
    i, o = PRICES[model]
    return prompt * i + completion * o


def write_month(store: Store, ledger: CostLedger) -> History:
    """Write the month into ``store``/``ledger``; returns what was written, for the tests' own arithmetic."""
    history = History()
    n = 0
    for klass, model, policy, attempts, successes in PLAN:
        h = policy.fingerprint()
        ledger.remember_policy(h, policy.to_yaml())
        week_offset = 0 if policy is WEEKS_1_2 else 14
        for i in range(attempts):
            n += 1
            ok = i < successes
            history.attempts.setdefault((klass, model), []).append(ok)
            at = START + timedelta(days=week_offset + i % 14, minutes=n)
            attempt = f"req{n:04d}-a1"
            key = f"req{n:04d}"
            mode = policy.spec(model).mode
            _steps(store, key, attempt, at, klass, model, mode, ok)
            # the agent's calls (class stated by the run's route, no caller) and the PR text (docs class)
            for step, call_class, call_model, caller, p, c in [
                ("agent", klass, model, None, 1000 + 37 * i, 150 + 11 * i),
                ("open_pull_request", "docs", policy.classes["docs"], "open_pull_request", 400 + i, 90 + i),
            ]:
                call_mode = policy.spec(call_model).mode
                source = "local" if call_mode == "local" else "list"
                cost = _cost(call_model, p, c)
                ledger.clock = lambda at=at: at
                ledger.settle(
                    None,
                    run_key=attempt,
                    step=step,
                    model=call_model,
                    mode=call_mode,
                    usage=Usage(prompt_tokens=p, completion_tokens=c, cost_usd=cost, cost_missing=source == "list"),
                    decision=RecordedDecision(
                        task_class=call_class,  # type: ignore[arg-type]
                        class_source="caller",
                        caller=caller,
                        price_source=source,  # type: ignore[arg-type]
                        policy_hash=h,
                    ),
                )
                history.calls.append(
                    Call(attempt, call_class, call_model, call_mode, p, c, cost, at.date().isoformat())
                )
            if klass == "complex_code" and model == "gpt-4o" and i == 3:
                # the month's one sensitive call: a repair prompt that carried a secret, kept local
                ledger.settle(
                    None,
                    run_key=attempt,
                    step="repair",
                    model="llama3",
                    mode="local",
                    usage=Usage(prompt_tokens=800, completion_tokens=120, cost_usd=0.0),
                    decision=RecordedDecision(
                        task_class="sensitive",
                        class_source="rule",
                        class_rule="asks to build or change code",
                        sensitive=True,
                        gate_kinds=("secret:github_token",),
                        caller="repair",
                        price_source="local",
                        policy_hash=h,
                    ),
                )
                history.calls.append(
                    Call(attempt, "sensitive", "llama3", "local", 800, 120, 0.0, at.date().isoformat(), True)
                )
    return history


def _steps(store: Store, key: str, attempt: str, at: datetime, klass: str, model: str, mode: str, ok: bool) -> None:
    t = at
    records: list[StepRecord] = []

    def add(step: str, name: str, verdict: str, **facts: object) -> None:
        nonlocal t
        records.append(
            StepRecord(
                run_key=key,
                attempt_id=attempt,
                step=step,
                name=name,  # type: ignore[arg-type]
                round=1 if name == "wait_for_ci" else None,
                started_at=t,
                ended_at=t + timedelta(seconds=30),
                verdict=verdict,
                model=model if name in ("route", "generate_code") else None,
                mode=mode if name in ("route", "generate_code") else None,
                facts=StepFacts(**facts),  # type: ignore[arg-type]
            )
        )
        t += timedelta(seconds=31)

    add("route", "route", "routed", task_class=klass, sensitive=False)
    add("generate_code", "generate_code", "finished", head_sha="abc")
    add("compile_check", "compile_check", "compiled", compiled=True)
    add("wait_for_ci#1", "wait_for_ci", "passed" if ok else "failed")
    if ok:
        add("merge", "merge", "merged")
        add("roll_out", "roll_out", "complete")
        add("check_health", "check_health", "healthy")
    for r in records:
        store.record_step(r)
    store.record_run(
        RunReport(
            run_key=key,
            attempt_id=attempt,
            repository="demo/chat-app",
            prompt_redacted="(synthetic)",
            requester="test",
            outcome="deployed" if ok else "failed",
            started_at=at,
            ended_at=t,
            steps=tuple(records),
        )
    )
