"""Counterfactual replay and routing learned from outcomes — pure.

What the ledger keeps of each LLM call (``RecordedDecision`` at settle time, ``RecordedCall`` when read back) is
enough to decide the call again under another routing policy and to price it again from its tokens; never the
prompt, never a matched value. From it:

- ``replay``: every recorded call decided again (``routing.route_class``) and priced again (the policy's own
  prices; a cloud model the policy does not price: LiteLLM's local cost map, handed in as a ``Pricer``). Without
  a candidate policy each call is replayed under the policy that recorded it (by hash): the self-check, which
  must come out exact. Calls that cannot be decided again (recorded before migration 0008, a fallback or an
  over-budget reroute, a cost that was an estimate) are reported as unknowable, not guessed.
- explored calls (``routing.explore_route``: the exploration setting sent them to a candidate): under the
  recording policy the self-check re-derives the exploration (the draw from the call's key, the candidate, the
  model the policy itself would have chosen) and re-prices them; they are also reported apart (``explored``).
  Under a candidate policy they are decided by its routing like any call: its own exploration is not simulated
  (which calls it would take depends on its budget at that moment).
- ``privacy_violations``: a candidate that would send a sensitive call to the cloud is refused, naming the rule.
- ``outcome_table`` / ``suggest_policy``: per task class × model, how attempts ended, with Wilson intervals, and
  the cheapest model per class whose lower bound meets a floor (sensitive ⇒ local never changes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from promptship.domain.request import TaskClass
from promptship.domain.routing import TASK_CLASSES, RoutingPolicy, exploration_key, explore_route, route_class
from promptship.errors import ConfigError, SensitiveDataBlocked

PriceSource = Literal["provider", "list", "local", "estimate"]
"""How a recorded cost was made: the provider's own figure (OpenRouter ``usage.cost``), the policy's list price
(a cloud call without a reported cost), the local price (policy prices + the local per-1k rate), or the budget
estimate of a stream that reported no usage (no tokens: cannot be priced again)."""

UNKNOWABLE_BEFORE_0008 = "unknowable (recorded before 0008)"
UNKNOWABLE_FALLBACK = "unknowable (fallback or over-budget reroute: the first choice failed or was refused)"
UNKNOWABLE_ESTIMATE = "unknowable (cost was an estimate: the stream reported no tokens)"
UNKNOWABLE_NO_POLICY = "unknowable (the recording policy is not in the store)"

CANNOT_KNOW = (
    "Replay re-decides and re-prices the calls that were made; it cannot know how a different model would have "
    "answered (tokens, success, repair rounds): the recorded token counts are priced at the other model's prices "
    "and outcomes are not invented."
)


class RecordedDecision(BaseModel):
    """What the gateway records with a call so that replay can decide and price it again (no text, no values)."""

    model_config = ConfigDict(frozen=True)

    task_class: TaskClass
    class_source: Literal["rule", "caller"] | None = None
    class_rule: str | None = None
    sensitive: bool = False
    gate_kinds: tuple[str, ...] = Field(default=(), description="kind:subtype of what the gate found (never values).")
    forced_local: bool = False
    caller: str | None = Field(default=None, description="The caller the policy's ``callers`` was asked about.")
    price_source: PriceSource = "list"
    local_rate_per_1k_usd: float = 0.0
    policy_hash: str
    decided_by: Literal["policy", "exploration"] = Field(
        default="policy", description="The policy's own choice, or the exploration setting's candidate."
    )
    explored_from: str | None = Field(default=None, description="An explored call: the policy's own choice.")
    explore_seq: int | None = Field(default=None, description="An explored call: its number in the draw's key.")


class RecordedCall(BaseModel):
    """One ``llm_calls`` row as replay reads it; the decision fields are None for rows from before 0008."""

    model_config = ConfigDict(frozen=True)

    id: int
    run_key: str = Field(description="The ledger's run: the attempt id.")
    step: str
    day: str
    at: datetime
    model: str
    mode: Literal["local", "cloud"]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    fallback_used: bool = False
    decision: RecordedDecision | None = None


Pricer = Callable[[str, int, int], float | None]
"""(LiteLLM model, prompt tokens, completion tokens) → USD from LiteLLM's local cost map, None if unknown."""


def no_pricer(_model: str, _prompt: int, _completion: int) -> float | None:
    return None


# --- policies -----------------------------------------------------------------------------------------------

_REFUSED_KEYS = {
    "classifier": "the classifier",
    "class_rules": "the classifier",
    "rules": "the classifier",
    "gate": "the gate",
    "gate_rules": "the gate",
    "detectors": "the gate",
    "secret_rules": "the gate",
    "allow_values": "the gate",
}


def load_candidate_policy(text: str) -> RoutingPolicy:
    """A policy file for replay: the routing format; a change to the classifier or gate rules is refused (no text
    is kept to classify or scan again). The local-only checks are left to ``privacy_violations``, which names the
    rule against the recorded calls."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file does not parse: {exc}") from None
    if isinstance(data, dict):
        touched = sorted({what for key, what in _REFUSED_KEYS.items() if key in data})
        if touched:
            raise ConfigError(
                f"replay refuses a policy that changes {' and '.join(touched)} "
                f"({', '.join(k for k in _REFUSED_KEYS if k in data)}): no prompt text is kept to classify or scan "
                "again; replay evaluates models, prices, the class mapping, callers and fallbacks only"
            )
    return RoutingPolicy.from_yaml(text, privacy=False)


def recorded_policy(text: str) -> RoutingPolicy:
    """A policy as the ledger kept it (``RoutingPolicy.to_yaml``), rebuilt exactly — not laid over the seed's
    table as ``from_yaml`` would, which brings back model groups the recording policy did not have."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError("a recorded routing policy must be a whole exported policy (models, classes, …)")
    models = {name: {"name": name, **spec} for name, spec in data["models"].items()}
    return RoutingPolicy.model_validate({**data, "models": models}).validated()


class PrivacyViolation(BaseModel):
    """A rule of a candidate policy that would send recorded sensitive calls to the cloud."""

    rule: str
    calls: int


def privacy_violations(policy: RoutingPolicy, calls: Iterable[RecordedCall]) -> list[PrivacyViolation]:
    """The rules that would send a sensitive (or local-only) call to the cloud, with how many recorded calls each
    would send. The sensitive class's group must be local whatever the history holds."""
    sensitive_group = policy.classes["sensitive"]
    counts: dict[str, int] = {}
    sens_rule = f"classes.sensitive: {sensitive_group} (cloud)"
    if not policy.is_local(sensitive_group):
        counts[sens_rule] = 0
    for caller, group in policy.callers.items():
        if not policy.is_local(group):
            counts.setdefault(f"callers.{caller}: {group} (cloud)", 0)
    for call in calls:
        d = call.decision
        if d is None or not (d.sensitive or d.forced_local or d.task_class == "sensitive"):
            continue
        own = policy.callers.get(d.caller or "")
        if own is not None and not policy.is_local(own):
            counts[f"callers.{d.caller}: {own} (cloud)"] += 1
        elif (d.sensitive or d.task_class == "sensitive") and not policy.is_local(sensitive_group):
            counts[sens_rule] += 1
    return [PrivacyViolation(rule=r, calls=n) for r, n in counts.items()]


# --- pricing ------------------------------------------------------------------------------------------------


def price_call(
    policy: RoutingPolicy, group: str, prompt: int, completion: int, local_rate_per_1k_usd: float, pricer: Pricer
) -> tuple[float, str]:
    """USD for ``prompt``/``completion`` tokens on ``group`` under ``policy`` and where the price came from:
    the policy's prices (plus the local per-1k rate for a local group), or LiteLLM's map for a cloud group the
    policy gives no price."""
    spec = policy.spec(group)
    listed = prompt * spec.input_cost_per_token + completion * spec.output_cost_per_token
    if spec.local:
        return listed + (prompt + completion) * local_rate_per_1k_usd / 1000, "policy"
    if spec.input_cost_per_token == 0 and spec.output_cost_per_token == 0:
        mapped = pricer(spec.litellm_model, prompt, completion)
        if mapped is not None:
            return mapped, "litellm"
        return 0.0, "unpriced"
    return listed, "policy"


# --- replay -------------------------------------------------------------------------------------------------


class ReplayedCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    run_key: str
    day: str
    task_class: str
    model_then: str
    mode_then: str
    model_now: str | None
    mode_now: str | None
    cost_then_usd: float
    cost_now_usd: float
    repriced_usd: float | None = Field(default=None, description="Then-model re-priced from tokens (self-check).")
    price_source: str | None
    unknowable: str | None = None


class CellCost(BaseModel):
    calls: int = 0
    cost_then_usd: float = 0.0
    cost_now_usd: float = 0.0


class ReplayReport(BaseModel):
    """What ``promptship replay`` prints (``--json``: this object)."""

    policy: str = Field(description="'recording' (each call under the policy that recorded it) or the file.")
    calls: int
    cost_recorded_usd: float
    cost_replayed_usd: float
    moved_to_cloud: int
    moved_to_local: int
    models_changed: int
    self_check: Literal["ok", "failed", "not applicable"]
    self_check_detail: list[str] = Field(default_factory=list)
    provider_priced: dict[str, int | float] = Field(
        default_factory=dict,
        description="Calls priced by the provider itself: their count, recorded cost and cost at list price. "
        "Kept at the provider's figure while the model stays; re-priced at list price when it changes.",
    )
    unknowable: dict[str, int] = Field(default_factory=dict, description="Reason → calls (recorded cost kept).")
    explored: dict[str, int | float] = Field(
        default_factory=dict,
        description="Calls the exploration setting sent to a candidate: count and recorded cost (also counted in "
        "the totals). The self-check re-derives their exploration; a candidate policy decides them by its routing.",
    )
    per_day: dict[str, CellCost] = Field(default_factory=dict)
    per_class_model: dict[str, CellCost] = Field(default_factory=dict, description="'class × then → now'.")
    runs_over_budget: list[dict[str, Any]] = Field(default_factory=list)
    refused: list[PrivacyViolation] = Field(default_factory=list)
    cannot_know: str = CANNOT_KNOW


def _cents(x: float) -> int:
    return round(x * 100)


def replay(
    calls: Sequence[RecordedCall],
    policies: Mapping[str, RoutingPolicy],
    *,
    candidate: RoutingPolicy | None = None,
    candidate_name: str = "recording",
    run_budgets: Mapping[str, float | None] | None = None,
    pricer: Pricer = no_pricer,
) -> ReplayReport:
    """Replay ``calls`` under ``candidate`` (None: each under its recording policy, from ``policies`` by hash).

    Refuses (``refused`` non-empty, nothing else computed) a candidate that would send a sensitive call to the
    cloud. Each knowable call's model is decided again from its class, gate verdict, forced-local flag and caller
    (never copied), and priced again from its tokens (never copied); the self-check requires, under the
    recording policies, the same model for every knowable call and the same cost for every list- or
    local-priced one (exact to 1e-9 USD)."""
    if candidate is not None:
        refused = privacy_violations(candidate, calls)
        if refused:
            return ReplayReport(
                policy=candidate_name,
                calls=len(calls),
                cost_recorded_usd=round(sum(c.cost_usd for c in calls), 10),
                cost_replayed_usd=0.0,
                moved_to_cloud=0,
                moved_to_local=0,
                models_changed=0,
                self_check="not applicable",
                refused=refused,
            )
    out: list[ReplayedCall] = []
    mismatches: list[str] = []
    provider = {"calls": 0, "cost_recorded_usd": 0.0, "cost_at_list_usd": 0.0}
    for call in calls:
        out.append(_replay_one(call, policies, candidate, pricer, mismatches, provider))
    explored = [c for c in calls if c.decision is not None and c.decision.decided_by == "exploration"]
    report = ReplayReport(
        policy=candidate_name,
        calls=len(calls),
        cost_recorded_usd=round(sum(r.cost_then_usd for r in out), 10),
        cost_replayed_usd=round(sum(r.cost_now_usd for r in out), 10),
        moved_to_cloud=sum(1 for r in out if r.mode_then == "local" and r.mode_now == "cloud"),
        moved_to_local=sum(1 for r in out if r.mode_then == "cloud" and r.mode_now == "local"),
        models_changed=sum(1 for r in out if r.model_now is not None and r.model_now != r.model_then),
        self_check="not applicable" if candidate is not None else ("failed" if mismatches else "ok"),
        self_check_detail=mismatches[:20],
        provider_priced={k: round(v, 10) if isinstance(v, float) else v for k, v in provider.items()},
        explored={"calls": len(explored), "cost_recorded_usd": round(sum(c.cost_usd for c in explored), 10)}
        if explored
        else {},
    )
    unknowable: dict[str, int] = defaultdict(int)
    per_day: dict[str, CellCost] = defaultdict(CellCost)
    cells: dict[str, CellCost] = defaultdict(CellCost)
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in out:
        if r.unknowable:
            unknowable[r.unknowable] += 1
        for cell in (per_day[r.day], cells[f"{r.task_class} × {r.model_then} → {r.model_now or '?'}"]):
            cell.calls += 1
            cell.cost_then_usd = round(cell.cost_then_usd + r.cost_then_usd, 10)
            cell.cost_now_usd = round(cell.cost_now_usd + r.cost_now_usd, 10)
        per_run[r.run_key][0] += r.cost_then_usd
        per_run[r.run_key][1] += r.cost_now_usd
    over = []
    for run_key, (then, now) in sorted(per_run.items()):
        cap = (run_budgets or {}).get(run_key)
        if cap is not None and now > cap + 1e-12:
            over.append(
                {"run": run_key, "budget_usd": cap, "cost_then_usd": round(then, 10), "cost_now_usd": round(now, 10)}
            )
    return report.model_copy(
        update={
            "unknowable": dict(unknowable),
            "per_day": dict(sorted(per_day.items())),
            "per_class_model": dict(sorted(cells.items())),
            "runs_over_budget": over,
        }
    )


def _replay_one(
    call: RecordedCall,
    policies: Mapping[str, RoutingPolicy],
    candidate: RoutingPolicy | None,
    pricer: Pricer,
    mismatches: list[str],
    provider: dict[str, Any],
) -> ReplayedCall:
    d = call.decision
    base = {
        "id": call.id,
        "run_key": call.run_key,
        "day": call.day,
        "model_then": call.model,
        "mode_then": call.mode,
        "cost_then_usd": call.cost_usd,
    }

    def unknown(reason: str) -> ReplayedCall:
        return ReplayedCall(
            **base,
            task_class=d.task_class if d else "?",
            model_now=None,
            mode_now=None,
            cost_now_usd=call.cost_usd,  # kept as recorded: nothing better is known
            price_source=d.price_source if d else None,
            unknowable=reason,
        )

    if d is None:
        return unknown(UNKNOWABLE_BEFORE_0008)
    if call.fallback_used:
        return unknown(UNKNOWABLE_FALLBACK)
    if d.price_source == "estimate":
        return unknown(UNKNOWABLE_ESTIMATE)
    policy = candidate or policies.get(d.policy_hash)
    if policy is None:
        return unknown(UNKNOWABLE_NO_POLICY)
    try:
        decided = route_class(
            d.task_class,
            policy=policy,
            labels=d.gate_kinds,
            class_rule=d.class_rule,
            force_local=d.forced_local,
            caller=d.caller,
        )
    except SensitiveDataBlocked:
        return unknown("unknowable (the policy has no local model for a local-only call)")
    group, mode = decided.model, decided.mode
    if d.decided_by == "exploration" and candidate is None:
        # the recording policy explored it: derive that again (draw, candidate, the policy's own choice)
        key = exploration_key(call.run_key, call.step, d.explore_seq or 0)
        explored = explore_route(decided, policy=policy, key=key)
        if d.explored_from != decided.model:
            mismatches.append(f"call {call.id}: explored from {d.explored_from}, the policy decides {decided.model}")
        if explored is None:
            mismatches.append(f"call {call.id}: recorded as explored, the recording policy does not explore it")
        else:
            group, mode = explored.model, explored.mode
    cost_now, _how = price_call(
        policy, group, call.prompt_tokens, call.completion_tokens, d.local_rate_per_1k_usd, pricer
    )
    repriced: float | None = None
    if candidate is None:
        if group != call.model:
            mismatches.append(f"call {call.id}: recorded {call.model}, decided again {group}")
        repriced = cost_now
    if d.price_source == "provider":
        list_then = _price_then(call, d, policies, candidate, pricer)
        provider["calls"] += 1
        provider["cost_recorded_usd"] += call.cost_usd
        provider["cost_at_list_usd"] += list_then
        if group == call.model:
            cost_now = call.cost_usd  # same model: the provider's own figure is the best price there is
    elif candidate is None and abs(cost_now - call.cost_usd) > 1e-9:
        mismatches.append(f"call {call.id}: recorded {call.cost_usd:.10f} USD, priced again {cost_now:.10f} USD")
    return ReplayedCall(
        **base,
        task_class=d.task_class,
        model_now=group,
        mode_now=mode,
        cost_now_usd=cost_now,
        repriced_usd=repriced,
        price_source=d.price_source,
    )


def _price_then(
    call: RecordedCall,
    d: RecordedDecision,
    policies: Mapping[str, RoutingPolicy],
    candidate: RoutingPolicy | None,
    pricer: Pricer,
) -> float:
    recording = policies.get(d.policy_hash) or candidate
    if recording is None or call.model not in recording.models:
        return 0.0
    return price_call(
        recording, call.model, call.prompt_tokens, call.completion_tokens, d.local_rate_per_1k_usd, pricer
    )[0]


# --- outcomes per class × model -----------------------------------------------------------------------------

Z95 = 1.959963984540054
TOO_LITTLE_N = 10  # fewer attempts than this: the interval is reported, and so is "too little data"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default); (0, 1) without data."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class AttemptOutcome(BaseModel):
    """How one attempt ended, with the class and model its route chose (from its step records and the ledger)."""

    model_config = ConfigDict(frozen=True)

    attempt_id: str
    task_class: str
    model: str
    compiled: bool | None = None
    first_ci_passed: bool | None = None
    repair_rounds: int = 0
    merged: bool = False
    deploy_attempted: bool = False
    deployed: bool = False
    rolled_back: bool = False
    cost_usd: float = 0.0

    @property
    def succeeded(self) -> bool:
        """Merged, and — when a deploy was attempted — deployed healthy and not rolled back."""
        if not self.merged:
            return False
        return not self.deploy_attempted or (self.deployed and not self.rolled_back)


class Rate(BaseModel):
    successes: int
    n: int
    rate: float | None
    low: float
    high: float


def _rate(successes: int, n: int) -> Rate:
    low, high = wilson_interval(successes, n)
    return Rate(successes=successes, n=n, rate=successes / n if n else None, low=round(low, 4), high=round(high, 4))


class OutcomeRow(BaseModel):
    """One task class × model: attempts and how they ended, with 95 % Wilson intervals."""

    task_class: str
    model: str
    attempts: int
    success: Rate = Field(description="Merged and (if deployed) healthy without rollback.")
    compiled: Rate
    first_pass_ci: Rate
    mean_repair_rounds: float
    deploy_success: Rate
    rollback: Rate
    cost_usd: float
    cost_per_merged_pr_usd: float | None
    cost_per_successful_deploy_usd: float | None
    cost_per_success_usd: float | None
    too_little_data: bool


def outcome_table(outcomes: Iterable[AttemptOutcome]) -> list[OutcomeRow]:
    """Per (class, model), sorted by class then model."""
    groups: dict[tuple[str, str], list[AttemptOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.task_class, o.model)].append(o)
    rows: list[OutcomeRow] = []
    for (klass, model), os_ in sorted(groups.items()):
        n = len(os_)
        compiled = [o for o in os_ if o.compiled is not None]
        ci = [o for o in os_ if o.first_ci_passed is not None]
        deploys = [o for o in os_ if o.deploy_attempted]
        cost = sum(o.cost_usd for o in os_)
        merged = sum(o.merged for o in os_)
        deployed_ok = sum(o.deployed and not o.rolled_back for o in deploys)
        successes = sum(o.succeeded for o in os_)
        success = _rate(successes, n)
        rows.append(
            OutcomeRow(
                task_class=klass,
                model=model,
                attempts=n,
                success=success,
                compiled=_rate(sum(bool(o.compiled) for o in compiled), len(compiled)),
                first_pass_ci=_rate(sum(bool(o.first_ci_passed) for o in ci), len(ci)),
                mean_repair_rounds=round(sum(o.repair_rounds for o in os_) / n, 3),
                deploy_success=_rate(deployed_ok, len(deploys)),
                rollback=_rate(sum(o.rolled_back for o in deploys), len(deploys)),
                cost_usd=round(cost, 10),
                cost_per_merged_pr_usd=round(cost / merged, 10) if merged else None,
                cost_per_successful_deploy_usd=round(cost / deployed_ok, 10) if deployed_ok else None,
                cost_per_success_usd=round(cost / successes, 10) if successes else None,
                too_little_data=n < TOO_LITTLE_N,
            )
        )
    return rows


class ClassChoice(BaseModel):
    task_class: str
    current: str
    suggested: str
    why: str


def suggest_policy(
    policy: RoutingPolicy, table: Sequence[OutcomeRow], *, success_floor: float = 0.8
) -> tuple[RoutingPolicy, list[ClassChoice]]:
    """Per class, the cheapest model (cost per successful attempt) whose success lower bound meets
    ``success_floor``; a class without such a model keeps its model. The sensitive class never changes (its
    calls stay local whatever the outcomes say), and only model groups the policy knows are chosen."""
    if not 0 < success_floor <= 1:
        raise ConfigError(f"--success-floor must be in (0, 1], not {success_floor}")
    classes = dict(policy.classes)
    choices: list[ClassChoice] = []
    for klass in TASK_CLASSES:
        current = policy.classes[klass]
        if klass == "sensitive":
            choices.append(
                ClassChoice(
                    task_class=klass,
                    current=current,
                    suggested=current,
                    why="privacy rule: sensitive ⇒ local, never changed",
                )
            )
            continue
        eligible = [
            r
            for r in table
            if r.task_class == klass
            and r.model in policy.models
            and r.success.low >= success_floor
            and r.cost_per_success_usd is not None
        ]
        if not eligible:
            seen = [r for r in table if r.task_class == klass]
            why = "no data" if not seen else f"no model's success lower bound reaches {success_floor:g}"
            choices.append(ClassChoice(task_class=klass, current=current, suggested=current, why=f"{why}: kept"))
            continue
        best = min(eligible, key=lambda r: (r.cost_per_success_usd, r.model != current, r.model))
        classes[klass] = best.model
        choices.append(
            ClassChoice(
                task_class=klass,
                current=current,
                suggested=best.model,
                why=f"{best.success.successes}/{best.attempts} succeeded (95 % lower bound {best.success.low:.3f} "
                f"≥ {success_floor:g}), {best.cost_per_success_usd:.6f} USD per success — the cheapest of "
                f"{len(eligible)} eligible",
            )
        )
    suggested = RoutingPolicy(
        models=policy.models,
        classes=classes,
        fallbacks=policy.fallbacks,
        callers=policy.callers,
        max_retries=policy.max_retries,
        timeout_s=policy.timeout_s,
        exploration=policy.exploration,
    ).validated()
    return suggested, choices
