"""KPIs where people look — the outputs of the pure math in ``domain/kpi.py``: computed from the store, as JSON,
Prometheus text, PNG charts and markdown."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta

from promptship.domain.kpi import KPIReport, MergedPR, RunFacts, compute_kpis
from promptship.ports import CodeHost
from promptship.settings import Settings
from promptship.store import Store


def kpis_from_store(
    store: Store,
    settings: Settings,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
    code_host: CodeHost | None = None,
) -> tuple[KPIReport, list[RunFacts]]:
    """The KPIs of the runs since ``since`` (default: 30 days) until now. With ``code_host``, the merged PRs
    of the same repositories are read from it for the agent-vs-human split."""
    now = now or datetime.now(UTC)
    since = since or now - timedelta(days=30)
    facts = store.run_facts()
    merged: list[MergedPR] = []
    if code_host is not None:
        for repository in sorted({f.repository for f in facts}):
            merged += code_host.merged_pull_requests(repository, since)
    rate = settings.llm.usd_to_display_rate
    report = compute_kpis(
        facts,
        since=since,
        until=now + timedelta(seconds=1),
        today=now.date(),
        usd_to_display_rate=rate,
        display_currency=settings.llm.display_currency,
        daily_budget_display=round(settings.budget.cloud_daily_usd * rate, 2),
        merged_prs=merged,
    )
    return report, facts


def prometheus_text(report: KPIReport) -> bytes:
    """The KPIs in Prometheus' text exposition format."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        g = Gauge(name, doc, list(labels), registry=registry)
        (g.labels(**labels) if labels else g).set(value)

    gauge("promptship_runs", "Runs in the KPI period", report.runs)
    gauge("promptship_compile_rate", "Share of runs whose generated code compiled", report.compile_rate)
    gauge("promptship_first_pass_ci_rate", "Share of runs green on the first CI", report.first_pass_ci_rate)
    gauge(
        "promptship_ci_pass_after_repair_rate",
        "Share of repaired runs that went green",
        report.ci_pass_after_repair_rate,
    )
    gauge("promptship_deploy_success_rate", "Share of rollouts that ended healthy", report.deploy_success_rate)
    gauge("promptship_rollback_rate", "Share of rollouts rolled back", report.rollback_rate)
    gauge(
        "promptship_time_to_restore_seconds",
        "Median time to restore after a failed gate",
        report.time_to_restore_median_s,
    )
    gauge("promptship_lead_time_seconds", "Median lead time request to healthy deploy", report.lead_time_median_s)
    gauge("promptship_cloud_cost_today_usd", "Cloud LLM cost today (USD)", report.cloud_cost_today)
    gauge("promptship_cost_per_merged_pr_usd", "LLM cost per merged PR (USD)", report.cost_per_merged_pr)
    gauge("promptship_cost_per_deploy_usd", "LLM cost per successful deploy (USD)", report.cost_per_successful_deploy)
    g = Gauge("promptship_llm_cost_usd", "LLM cost in the period (USD)", ["mode"], registry=registry)
    g.labels(mode="cloud").set(report.cloud_cost_usd)
    g.labels(mode="local").set(report.local_cost_usd)
    d = Gauge("promptship_dora", "DORA metrics", ["metric"], registry=registry)
    for name, value in report.dora.items():
        if value is not None:
            d.labels(metric=name).set(value)
    v = Gauge("promptship_go_no_go", "1 = go, 0 = no-go (absent: no data)", ["threshold"], registry=registry)
    for name, t in report.go_no_go.items():
        if t.verdict != "no data":
            v.labels(threshold=name).set(1 if t.verdict == "go" else 0)
    return generate_latest(registry)


def charts(report: KPIReport, facts: list[RunFacts]) -> dict[str, bytes]:
    """PNG charts: cost per day (local vs cloud) and success rates per day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    days = list(report.cost_per_day)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(days, [report.cost_per_day[d]["cloud"] for d in days], label="cloud")
    ax.bar(
        days,
        [report.cost_per_day[d]["local"] for d in days],
        bottom=[report.cost_per_day[d]["cloud"] for d in days],
        label="local",
    )
    ax.set_title("LLM cost per day (USD)")
    ax.legend()
    fig.autofmt_xdate()
    out["cost_per_day.png"] = _png(fig)
    plt.close(fig)

    per_day: dict[str, list[RunFacts]] = {}
    for f in facts:
        if report.since <= f.started_at < report.until:
            per_day.setdefault(f.started_at.date().isoformat(), []).append(f)
    days = sorted(per_day)

    def rate(fs: list[RunFacts], ok, seen) -> float:  # type: ignore[no-untyped-def]
        n = [f for f in fs if seen(f)]
        return sum(bool(ok(f)) for f in n) / len(n) if n else float("nan")

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(
        days,
        [rate(per_day[d], lambda f: f.compiled, lambda f: f.compiled is not None) for d in days],
        "o-",
        label="compiled",
    )
    ax.plot(
        days,
        [rate(per_day[d], lambda f: f.deployed, lambda f: f.deploy_attempted) for d in days],
        "s-",
        label="deployed",
    )
    ax.plot(
        days,
        [rate(per_day[d], lambda f: f.first_ci == "passed", lambda f: f.first_ci) for d in days],
        "^-",
        label="CI first pass",
    )
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Success rates per day")
    ax.legend()
    fig.autofmt_xdate()
    out["success_rates.png"] = _png(fig)
    plt.close(fig)
    return out


def _png(fig) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def markdown(report: KPIReport, pngs: dict[str, bytes]) -> str:
    """The KPI table, the go/no-go and the charts (embedded PNGs) as markdown."""
    cur, rate = report.display_currency, report.usd_to_display_rate

    def money(usd: float | None) -> str:
        return "—" if usd is None else f"${usd:.4f} ({usd * rate:.4f} {cur})"

    lines = [
        f"# promptship KPIs — {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}",
        "",
        "| KPI | value |",
        "|---|---|",
        f"| runs | {report.runs} |",
        f"| compile rate | {_pct(report.compile_rate)} |",
        f"| first-pass CI rate | {_pct(report.first_pass_ci_rate)} |",
        f"| CI pass after repair | {_pct(report.ci_pass_after_repair_rate)} |",
        f"| deployment success rate | {_pct(report.deploy_success_rate)} |",
        f"| rollback rate | {_pct(report.rollback_rate)} |",
        f"| time to restore (median) | {report.time_to_restore_median_s or '—'} s |",
        f"| lead time request → healthy (median) | {report.lead_time_median_s or '—'} s |",
        f"| LLM cost (cloud / local) | {money(report.cloud_cost_usd)} / {money(report.local_cost_usd)} |",
        f"| cloud cost today | {money(report.cloud_cost_today)} |",
        f"| cost per merged PR | {money(report.cost_per_merged_pr)} |",
        f"| cost per successful deploy | {money(report.cost_per_successful_deploy)} |",
        f"| deployment frequency | {report.dora['deployment_frequency_per_day']} / day |",
        f"| change failure rate | {_pct(report.dora['change_failure_rate'])} |",
        f"| time saved (estimate vs human baseline) | {_pct(report.time_saved_estimate)} |",
        *(
            f"| merged PRs by {kind} (open → merge median) "
            f"| {v['merged_prs']} ({v['open_to_merge_median_h'] or '—'} h) |"
            for kind, v in report.agent_vs_human.items()
        ),
        "",
        "## Go / no-go (seed thresholds)",
        "",
        "| threshold | value | target | verdict |",
        "|---|---|---|---|",
    ]
    for t in report.go_no_go.values():
        op = ">" if t.comparison == "gt" else "<"
        lines.append(
            f"| {t.name} | {t.value if t.value is not None else '—'} | {op} {t.target} {t.unit} | {t.verdict} |"
        )
    lines.append("")
    for name, png in pngs.items():
        lines.append(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
        lines.append("")
    return "\n".join(lines)
