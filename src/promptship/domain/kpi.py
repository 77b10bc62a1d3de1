"""KPIs from recorded runs: the seed's targets, DORA's four, cost tied to outcomes, and the go/no-go.

Pure: the store hands in ``RunFacts`` (one per attempt, derived from its typed step records by ``run_facts``),
the period and the settings; everything here is arithmetic, so a table of hand-computed cases can check it.
Where the KPIs are shown (JSON from the store, Prometheus, charts, markdown): ``promptship/kpi_outputs.py``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from promptship.domain.report import RunReport, StepRecord

Size = Literal["S", "M", "L"]
Verdict = Literal["go", "no-go", "no data"]


def _reads(*inputs: str) -> Any:
    """Field metadata naming the step facts a ``RunFacts`` field is computed from (``step.fact``)."""
    return {"reads": list(inputs)}


class RunFacts(BaseModel):
    """What KPIs need to know about one attempt of a request.

    Each field derived from step records names, in its metadata, the typed step facts it reads
    (``<step name>.<StepRecord or StepFacts field>``); ``kpi_inputs()`` lists them all, and a test runs the
    real flow to check that some step writes each of them.
    """

    model_config = ConfigDict(frozen=True)

    run_key: str = Field(description="The request key.")
    attempt_id: str = ""
    repository: str
    started_at: datetime
    outcome: str
    prompt: str = ""
    compiled: bool | None = Field(
        default=None, json_schema_extra=_reads("compile_check.verdict", "compile_check.round")
    )
    first_ci: str | None = Field(default=None, json_schema_extra=_reads("wait_for_ci.verdict", "wait_for_ci.round"))
    repaired: bool = Field(default=False, json_schema_extra=_reads("repair.round"))
    ci_passed: bool = Field(default=False, json_schema_extra=_reads("wait_for_ci.verdict"))
    merged: bool = Field(default=False, json_schema_extra=_reads("merge.verdict"))
    deploy_attempted: bool = Field(default=False, json_schema_extra=_reads("roll_out.verdict", "roll_out.found"))
    deployed_at: datetime | None = Field(
        default=None, json_schema_extra=_reads("check_health.verdict", "check_health.after_rollback")
    )
    rolled_back: bool = Field(default=False, json_schema_extra=_reads("rollback.verdict"))
    time_to_restore_s: float | None = Field(default=None, json_schema_extra=_reads("rollback.time_to_restore_s"))
    first_commit_at: datetime | None = Field(
        default=None, json_schema_extra=_reads("generate_code.verdict", "generate_code.head_sha")
    )
    cost_usd: float = Field(
        default=0.0, json_schema_extra=_reads("generate_code.ledger_cost_usd", "open_pull_request.ledger_cost_usd")
    )
    agent_reported_cost_usd: float = Field(default=0.0, json_schema_extra=_reads("generate_code.cost_usd"))
    cloud_cost_usd: float = Field(default=0.0, json_schema_extra=_reads("route.mode"))
    local_cost_usd: float = 0.0
    cost_missing: bool = False
    lines_changed: int | None = Field(default=None, json_schema_extra=_reads("generate_code.lines_changed"))
    changed_files: int | None = Field(default=None, json_schema_extra=_reads("generate_code.files_changed"))

    @property
    def deployed(self) -> bool:
        return self.deployed_at is not None


def kpi_inputs() -> list[tuple[str, str]]:
    """Every (step name, fact) the KPIs read, from ``RunFacts``' field metadata."""
    out: list[tuple[str, str]] = []
    for field in RunFacts.model_fields.values():
        extra = field.json_schema_extra
        if isinstance(extra, dict):
            for item in extra.get("reads") or []:  # type: ignore[union-attr]
                step, _, fact = str(item).partition(".")
                out.append((step, fact))
    return out


def _cost(s: StepRecord) -> float:
    """A step's cost: the gateway ledger's figure when the step recorded one, else the reported usage."""
    return s.facts.ledger_cost_usd if s.facts.ledger_cost_usd is not None else s.cost_usd


def run_facts(report: RunReport, steps: Iterable[StepRecord]) -> RunFacts:
    """Fold one attempt's step records into facts, from their typed fields only (name, round, facts)."""
    by_label: dict[str, StepRecord] = {}
    for s in steps:
        by_label[s.step] = s
    ordered = sorted(by_label.values(), key=lambda s: s.started_at)

    def named(name: str) -> list[StepRecord]:
        return sorted((s for s in ordered if s.name == name), key=lambda s: (s.round or 0, s.started_at))

    ci_rounds = named("wait_for_ci")
    compiles = named("compile_check")
    gen = next(iter(named("generate_code")), None)
    health = next((s for s in named("check_health") if not s.facts.after_rollback), None)
    rollback = next(iter(named("rollback")), None)
    merge = next(iter(named("merge")), None)
    roll_out = next(iter(named("roll_out")), None)
    # a rollout an earlier attempt made (found by its annotation) is not this attempt's deploy
    deploy_attempted = roll_out is not None and roll_out.facts.found is not True
    cloud = sum(_cost(s) for s in ordered if s.mode == "cloud")
    local = sum(_cost(s) for s in ordered if s.mode != "cloud")
    ttr = rollback.facts.time_to_restore_s if rollback else None
    return RunFacts(
        run_key=report.run_key,
        attempt_id=report.attempt_id,
        repository=report.repository,
        started_at=report.started_at,
        outcome=report.outcome,
        prompt=report.prompt_redacted,
        compiled=compiles[0].verdict == "compiled" if compiles else report.compiled,
        first_ci=ci_rounds[0].verdict if ci_rounds else None,
        repaired=any(s.round for s in named("repair")),
        ci_passed=bool(ci_rounds) and ci_rounds[-1].verdict == "passed",
        merged=merge is not None and merge.verdict == "merged",  # counted once per request by compute_kpis
        deploy_attempted=deploy_attempted,
        deployed_at=health.ended_at
        if deploy_attempted and health is not None and health.verdict == "healthy"
        else None,
        rolled_back=rollback is not None and rollback.verdict == "restored",
        time_to_restore_s=float(ttr) if ttr is not None else None,
        first_commit_at=gen.ended_at if gen and gen.verdict == "finished" else None,
        cost_usd=round(cloud + local, 6),
        agent_reported_cost_usd=round(sum(s.cost_usd for s in named("generate_code") + named("repair")), 6),
        cloud_cost_usd=round(cloud, 6),
        local_cost_usd=round(local, 6),
        cost_missing=any(s.cost_missing for s in ordered),
        lines_changed=gen.facts.lines_changed if gen else None,
        changed_files=gen.facts.files_changed if gen else None,
    )


class MergedPR(BaseModel):
    """A pull request merged in a repository promptship works on (read from the code host)."""

    model_config = ConfigDict(frozen=True)

    repository: str
    number: int
    created_at: datetime
    merged_at: datetime
    by_promptship: bool
    lines_changed: int | None = None


class HumanBaseline(BaseModel):
    """Hours a human takes for a change of each size (lines changed), for the time-saved estimate."""

    small_max_lines: int = 50
    medium_max_lines: int = 300
    hours: dict[Size, float] = Field(default_factory=lambda: {"S": 2.0, "M": 8.0, "L": 24.0})

    def size(self, lines: int | None, files: int | None) -> Size:
        if lines is None:
            lines = (files or 1) * 30  # no line count: ~30 lines a file
        if lines <= self.small_max_lines:
            return "S"
        return "M" if lines <= self.medium_max_lines else "L"


class Threshold(BaseModel):
    name: str
    value: float | None
    target: float
    comparison: Literal["gt", "lt"]
    unit: str
    verdict: Verdict


def _threshold(name: str, value: float | None, target: float, comparison: Literal["gt", "lt"], unit: str) -> Threshold:
    if value is None:
        verdict: Verdict = "no data"
    elif comparison == "gt":
        verdict = "go" if value > target else "no-go"
    else:
        verdict = "go" if value < target else "no-go"
    return Threshold(name=name, value=value, target=target, comparison=comparison, unit=unit, verdict=verdict)


def _once_per_request(facts: Iterable[RunFacts]) -> list[RunFacts]:
    """The first attempt of each request among ``facts``."""
    seen: dict[str, RunFacts] = {}
    for f in sorted(facts, key=lambda f: f.started_at):
        seen.setdefault(f.run_key, f)
    return list(seen.values())


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


class KPIReport(BaseModel):
    """Every KPI of a period. Rates are 0..1 (None: no run to compute it from); costs in USD."""

    since: datetime
    until: datetime
    runs: int
    compile_rate: float | None
    first_pass_ci_rate: float | None
    ci_pass_after_repair_rate: float | None
    deploy_success_rate: float | None
    rollback_rate: float | None
    time_to_restore_median_s: float | None
    cost_usd: float
    cloud_cost_usd: float
    local_cost_usd: float
    cost_missing_runs: int
    cloud_cost_today: float
    cost_per_day: dict[str, dict[str, float]]
    cost_per_merged_pr: float | None
    cost_per_successful_deploy: float | None
    lead_time_median_s: float | None
    dora: dict[str, float | None]
    time_saved_estimate: float | None = Field(description="Estimate: 1 - agent time / human baseline, median.")
    agent_vs_human: dict[str, dict[str, float | int | None]] = Field(
        default_factory=dict,
        description="Merged PRs per author kind: count and median hours from PR opened to merged.",
    )
    per_repository: dict[str, dict[str, float | int | None]]
    display_currency: str
    usd_to_display_rate: float
    go_no_go: dict[str, Threshold]


def compute_kpis(
    facts: Sequence[RunFacts],
    *,
    since: datetime,
    until: datetime,
    today: date,
    baseline: HumanBaseline | None = None,
    change_failure_window: timedelta = timedelta(days=1),
    usd_to_display_rate: float = 1.0,
    display_currency: str = "USD",
    daily_budget_display: float = 10.0,
    monthly_budget_display: float = 200.0,
    merged_prs: Sequence[MergedPR] = (),
) -> KPIReport:
    """The KPIs of the runs that started in [since, until). ``merged_prs``: the code host's merged PRs of the
    same repositories, for the agent-vs-human split (human = not opened by promptship)."""
    baseline = baseline or HumanBaseline()
    runs = [f for f in facts if since <= f.started_at < until]
    compiled = [f for f in runs if f.compiled is not None]
    first_ci = [f for f in runs if f.first_ci is not None]
    repaired = [f for f in runs if f.repaired]
    attempted = [f for f in runs if f.deploy_attempted]
    # changes count once per request, however many attempts it took (a later attempt that only found the
    # merge or the rollout made neither, see run_facts)
    deployed = _once_per_request(f for f in runs if f.deployed)
    merged = _once_per_request(f for f in runs if f.merged)

    per_day: dict[str, dict[str, float]] = defaultdict(lambda: {"cloud": 0.0, "local": 0.0})
    for f in runs:
        day = f.started_at.date().isoformat()
        per_day[day]["cloud"] = round(per_day[day]["cloud"] + f.cloud_cost_usd, 6)
        per_day[day]["local"] = round(per_day[day]["local"] + f.local_cost_usd, 6)
    total = round(sum(f.cost_usd for f in runs), 6)

    lead_times = [(f.deployed_at - f.started_at).total_seconds() for f in deployed if f.deployed_at]
    change_lead = [
        (f.deployed_at - f.first_commit_at).total_seconds() for f in deployed if f.deployed_at and f.first_commit_at
    ]
    ttr = [f.time_to_restore_s for f in runs if f.rolled_back and f.time_to_restore_s is not None]

    # change failure rate: a deployment that was rolled back, or followed within the window by a fix deployment
    # (a later deployment of the same repository whose request starts with "fix") — over all deployments
    deployments = sorted([f for f in attempted if f.deployed or f.rolled_back], key=lambda f: f.started_at)
    failures = 0
    for i, d in enumerate(deployments):
        fixed_later = any(
            later.repository == d.repository
            and later.deployed
            and later.started_at - d.started_at <= change_failure_window
            and later.prompt.strip().lower().startswith("fix")
            for later in deployments[i + 1 :]
        )
        if d.rolled_back or fixed_later:
            failures += 1
    period_days = max((until - since).total_seconds() / 86400, 1e-9)

    saved: list[float] = []
    for f in deployed:
        assert f.deployed_at is not None
        human_s = baseline.hours[baseline.size(f.lines_changed, f.changed_files)] * 3600
        saved.append(1 - (f.deployed_at - f.started_at).total_seconds() / human_s)

    per_repo: dict[str, dict[str, float | int | None]] = {}
    for repo in sorted({f.repository for f in runs}):
        mine = [f for f in runs if f.repository == repo]
        att = [f for f in mine if f.deploy_attempted]
        comp = [f for f in mine if f.compiled is not None]
        per_repo[repo] = {
            "runs": len(mine),
            "compile_rate": _rate(sum(f.compiled is True for f in comp), len(comp)),
            "deploy_success_rate": _rate(sum(f.deployed for f in att), len(att)),
            "cost_usd": round(sum(f.cost_usd for f in mine), 6),
        }

    compile_rate = _rate(sum(f.compiled is True for f in compiled), len(compiled))
    deploy_rate = _rate(len([f for f in attempted if f.deployed]), len(attempted))
    cloud_today = round(sum(f.cloud_cost_usd for f in runs if f.started_at.date() == today), 6)
    max_day_display = max((d["cloud"] + d["local"] for d in per_day.values()), default=None)
    months: dict[str, float] = defaultdict(float)
    for f in runs:
        months[f.started_at.strftime("%Y-%m")] += f.cost_usd
    max_month_display = max(months.values(), default=None)
    time_saved = _median(saved)
    go = {
        "compile_rate": _threshold("code that compiles", compile_rate, 0.80, "gt", "ratio"),
        "llm_cost_per_day": _threshold(
            "LLM cost per day",
            round(max_day_display * usd_to_display_rate, 4) if max_day_display is not None else None,
            daily_budget_display,
            "lt",
            display_currency,
        ),
        "deploy_success_rate": _threshold("successful deployments", deploy_rate, 0.90, "gt", "ratio"),
        "time_saved": _threshold("development time saved (estimate)", time_saved, 0.50, "gt", "ratio"),
        "v2_valid_code": _threshold("v2: valid code", compile_rate, 0.60, "gt", "ratio"),
        "v2_llm_cost_per_month": _threshold(
            "v2: LLM cost per month",
            round(max_month_display * usd_to_display_rate, 4) if max_month_display is not None else None,
            monthly_budget_display,
            "lt",
            display_currency,
        ),
    }
    split: dict[str, dict[str, float | int | None]] = {}
    for kind, by_promptship in (("agent", True), ("human", False)):
        prs = [p for p in merged_prs if p.by_promptship is by_promptship and since <= p.merged_at < until]
        hours = [(p.merged_at - p.created_at).total_seconds() / 3600 for p in prs]
        split[kind] = {"merged_prs": len(prs), "open_to_merge_median_h": _median(hours)}
    return KPIReport(
        since=since,
        until=until,
        runs=len(runs),
        compile_rate=compile_rate,
        first_pass_ci_rate=_rate(sum(f.first_ci == "passed" for f in first_ci), len(first_ci)),
        ci_pass_after_repair_rate=_rate(sum(f.ci_passed for f in repaired), len(repaired)),
        deploy_success_rate=deploy_rate,
        rollback_rate=_rate(sum(f.rolled_back for f in attempted), len(attempted)),
        time_to_restore_median_s=_median(ttr),
        cost_usd=total,
        cloud_cost_usd=round(sum(f.cloud_cost_usd for f in runs), 6),
        local_cost_usd=round(sum(f.local_cost_usd for f in runs), 6),
        cost_missing_runs=sum(f.cost_missing for f in runs),
        cloud_cost_today=cloud_today,
        cost_per_day=dict(sorted(per_day.items())),
        cost_per_merged_pr=round(sum(f.cost_usd for f in runs) / len(merged), 6) if merged else None,
        cost_per_successful_deploy=round(sum(f.cost_usd for f in runs) / len(deployed), 6) if deployed else None,
        lead_time_median_s=_median(lead_times),
        dora={
            "deployment_frequency_per_day": round(len(deployed) / period_days, 4),
            "lead_time_for_changes_median_s": _median(change_lead),
            "change_failure_rate": _rate(failures, len(deployments)),
            "time_to_restore_median_s": _median(ttr),
        },
        time_saved_estimate=time_saved,
        agent_vs_human=split,
        per_repository=per_repo,
        display_currency=display_currency,
        usd_to_display_rate=usd_to_display_rate,
        go_no_go=go,
    )
