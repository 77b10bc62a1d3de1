"""Replay and the outcome table where people look — the outputs of ``domain/replay.py``: computed from the store,
as text tables, markdown (the ``policy-review`` artifact) and a PNG chart."""

from __future__ import annotations

import base64
import io
from datetime import date

from promptship.domain.replay import (
    OutcomeRow,
    RecordedCall,
    ReplayReport,
    load_candidate_policy,
    outcome_table,
    replay,
)
from promptship.domain.routing import RoutingPolicy
from promptship.store import Store


def replay_from_store(
    store: Store,
    *,
    policy_text: str | None = None,
    policy_name: str = "recording",
    since: date | None = None,
) -> tuple[ReplayReport, list[RecordedCall]]:
    """Replay the ledger's calls (from ``since``) under ``policy_text`` (None: each under its recording policy).
    A policy that changes the classifier or gate rules raises ``ConfigError``."""
    from promptship.adapters.prices import litellm_pricer
    from promptship.store.replay import recorded_calls, recorded_policies, run_budgets

    candidate = load_candidate_policy(policy_text) if policy_text is not None else None
    calls = recorded_calls(store.engine, since=since)
    report = replay(
        calls,
        recorded_policies(store.engine),
        candidate=candidate,
        candidate_name=policy_name,
        run_budgets=run_budgets(store.engine),
        pricer=litellm_pricer,
    )
    return report, calls


def outcomes_from_store(store: Store) -> list[OutcomeRow]:
    """The per class × model outcome table of the recorded attempts."""
    from promptship.store.replay import attempt_outcomes

    return outcome_table(attempt_outcomes(store))


def _usd(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def replay_text(report: ReplayReport) -> str:
    """The human-readable replay: totals, per day, per class × model, moves, budgets, what cannot be known."""
    if report.refused:
        lines = [f"REFUSED: policy {report.policy} would send sensitive calls to the cloud:"]
        lines += [f"  - {v.rule}  ({v.calls} recorded sensitive call(s))" for v in report.refused]
        lines.append("The privacy rule (sensitive ⇒ local) is not negotiable; fix the rule(s) above.")
        return "\n".join(lines)
    return replay_markdown(report)


def replay_markdown(report: ReplayReport, title: str = "Replay") -> str:
    lines = [
        f"## {title}: {report.policy}",
        "",
        f"- calls: {report.calls}",
        f"- cost recorded: {report.cost_recorded_usd:.4f} USD; under the policy: {report.cost_replayed_usd:.4f} USD",
        f"- moved local → cloud: {report.moved_to_cloud}; cloud → local: {report.moved_to_local}; "
        f"models changed: {report.models_changed}",
        f"- self-check: {report.self_check}",
        *[f"  - {d}" for d in report.self_check_detail],
    ]
    if report.provider_priced.get("calls"):
        p = report.provider_priced
        lines.append(
            f"- priced by the provider (apart): {int(p['calls'])} calls, {p['cost_recorded_usd']:.4f} USD reported, "
            f"{p['cost_at_list_usd']:.4f} USD at list price"
        )
    if report.explored.get("calls"):
        e = report.explored
        how = (
            "exploration re-derived by the self-check"
            if report.policy == "recording"
            else "decided by this policy's routing; its exploration is not simulated"
        )
        lines.append(f"- explored (apart): {int(e['calls'])} calls, {e['cost_recorded_usd']:.4f} USD recorded ({how})")
    for reason, n in report.unknowable.items():
        lines.append(f"- {reason}: {n} calls (their recorded cost is kept)")
    if report.runs_over_budget:
        lines.append("- runs whose budget would have been exceeded:")
        lines += [
            f"  - {r['run']}: {r['cost_now_usd']:.4f} USD > budget {r['budget_usd']:.4f} USD"
            for r in report.runs_over_budget
        ]
    lines += ["", "| day | calls | cost then (USD) | cost under policy (USD) |", "|---|---|---|---|"]
    lines += [
        f"| {d} | {c.calls} | {_usd(c.cost_then_usd)} | {_usd(c.cost_now_usd)} |" for d, c in report.per_day.items()
    ]
    lines += [
        "",
        "| class × model then → now | calls | cost then (USD) | cost under policy (USD) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {c.calls} | {_usd(c.cost_then_usd)} | {_usd(c.cost_now_usd)} |"
        for k, c in report.per_class_model.items()
    ]
    lines += ["", f"_{report.cannot_know}_", ""]
    return "\n".join(lines)


def _rate(r: object) -> str:
    from promptship.domain.replay import Rate

    assert isinstance(r, Rate)
    if r.n == 0:
        return "—"
    return f"{r.successes}/{r.n} [{r.low:.2f}, {r.high:.2f}]"


def outcomes_markdown(rows: list[OutcomeRow]) -> str:
    """The per class × model table; intervals are 95 % Wilson, and few attempts are flagged."""
    lines = [
        "## Outcomes per task class × model",
        "",
        "| class | model | attempts | success | compiled | first-pass CI | repair rounds | deploy ok | rollback "
        "| USD / merged PR | USD / good deploy | data |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.task_class} | {r.model} | {r.attempts} | {_rate(r.success)} | {_rate(r.compiled)} "
            f"| {_rate(r.first_pass_ci)} | {r.mean_repair_rounds:.2f} | {_rate(r.deploy_success)} "
            f"| {_rate(r.rollback)} | {_usd(r.cost_per_merged_pr_usd)} | {_usd(r.cost_per_successful_deploy_usd)} "
            f"| {'too little data' if r.too_little_data else 'ok'} |"
        )
    if not rows:
        lines.append("| (no attempts with a recorded route yet) |  |  |  |  |  |  |  |  |  |  |  |")
    lines += [
        "",
        "_success = merged and, when deployed, healthy without rollback; [low, high] = 95 % Wilson interval._",
        "",
    ]
    return "\n".join(lines)


def success_chart(rows: list[OutcomeRow]) -> bytes:
    """PNG: success rate per class × model with its Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.task_class}\n{r.model}" for r in rows]
    rates = [r.success.rate or 0.0 for r in rows]
    low = [max(0.0, (r.success.rate or 0.0) - r.success.low) for r in rows]
    high = [max(0.0, r.success.high - (r.success.rate or 0.0)) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, len(rows) * 1.2), 3))
    ax.bar(range(len(rows)), rates, yerr=[low, high], capsize=4)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title("Success per class × model (95 % Wilson)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def policy_review_markdown(
    current: ReplayReport, suggested: ReplayReport, rows: list[OutcomeRow], suggested_policy: RoutingPolicy
) -> str:
    """The ``policy-review`` artifact: the self-check, the suggested policy's replay, the outcome table, a chart."""
    png = base64.b64encode(success_chart(rows)).decode()
    parts = [
        "# promptship policy review",
        "",
        replay_markdown(current, "Replay under the recording policies (self-check)"),
        replay_text(suggested) if suggested.refused else replay_markdown(suggested, "Replay under the suggestion"),
        outcomes_markdown(rows),
        f"![success per class × model](data:image/png;base64,{png})",
        "",
        "## Suggested policy",
        "",
        "```yaml",
        suggested_policy.to_yaml().rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts)
