"""KPIs from a recorded set of runs, against values computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from promptship.domain.kpi import HumanBaseline, compute_kpis, run_facts
from promptship.domain.report import RunReport, StepFacts, StepRecord

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _steps(key: str, start: datetime, spec: list[tuple[str, str, dict]]) -> list[StepRecord]:
    """Records as the steps write them: the label's round and "after rollback" become typed fields, the
    numeric extras typed facts."""
    out = []
    t = start
    for step, verdict, extra in spec:
        seconds = extra.pop("seconds", 60)
        name, _, round_text = step.partition("#")
        after_rollback = name.endswith(":after_rollback")
        name = name.removesuffix(":after_rollback")
        out.append(
            StepRecord(
                run_key=key,
                attempt_id=f"{key}-a1",
                step=step,
                name=name,  # type: ignore[arg-type]
                round=int(round_text) if round_text else None,
                started_at=t,
                ended_at=t + timedelta(seconds=seconds),
                verdict=verdict,
                mode=extra.pop("mode", None),
                cost_usd=extra.pop("cost", 0.0),
                facts=StepFacts(after_rollback=after_rollback or None, **extra),
            )
        )
        t += timedelta(seconds=seconds)
    return out


def _report(key: str, start: datetime, outcome: str, steps: list[StepRecord], prompt: str = "add x") -> RunReport:
    return RunReport(
        run_key=key,
        repository="demo/chat-app",
        prompt_redacted=prompt,
        requester="t",
        outcome=outcome,  # type: ignore[arg-type]
        started_at=start,
        ended_at=steps[-1].ended_at,
        steps=tuple(steps),
    )


def recorded_runs():
    """Four runs: clean deploy; repaired then deployed; deployed then rolled back; did not compile, CI red."""
    runs = []
    # r1: clean, 1 h 0 min to healthy; cloud $1.00 (agent) + $0.10 (PR text)
    s1 = _steps(
        "r1",
        T0,
        [
            ("route", "routed", {"mode": "cloud"}),
            ("generate_code", "finished", {"mode": "cloud", "cost": 1.00, "seconds": 3000, "lines_changed": 40}),
            ("compile_check", "compiled", {}),
            ("open_pull_request", "opened", {"mode": "cloud", "cost": 0.10}),
            ("wait_for_ci#1", "passed", {"seconds": 240}),
            ("merge", "merged", {}),
            ("wait_for_image", "built", {}),
            ("roll_out", "complete", {}),
            ("check_health", "healthy", {}),
        ],
    )
    runs.append((_report("r1", T0, "deployed", s1), s1))
    # r2: CI red, repaired, green, deployed; local only, $0
    t2 = T0 + timedelta(hours=2)
    s2 = _steps(
        "r2",
        t2,
        [
            ("route", "routed", {"mode": "local"}),
            ("generate_code", "finished", {"mode": "local", "lines_changed": 200}),
            ("compile_check", "compiled", {}),
            ("open_pull_request", "opened", {"mode": "local"}),
            ("wait_for_ci#1", "failed", {}),
            ("repair#1", "finished", {}),
            ("compile_check#2", "compiled", {}),
            ("wait_for_ci#2", "passed", {}),
            ("merge", "merged", {}),
            ("wait_for_image", "built", {}),
            ("roll_out", "complete", {}),
            ("check_health", "healthy", {}),
        ],
    )
    runs.append((_report("r2", t2, "deployed", s2), s2))
    # r3: deployed, unhealthy, rolled back in 30 s; cloud $2.00
    t3 = T0 + timedelta(hours=4)
    s3 = _steps(
        "r3",
        t3,
        [
            ("route", "routed", {"mode": "cloud"}),
            ("generate_code", "finished", {"mode": "cloud", "cost": 2.00}),
            ("compile_check", "compiled", {}),
            ("open_pull_request", "opened", {}),
            ("wait_for_ci#1", "passed", {}),
            ("merge", "merged", {}),
            ("wait_for_image", "built", {}),
            ("roll_out", "complete", {}),
            ("check_health", "unhealthy", {}),
            ("rollback", "restored", {"time_to_restore_s": 30.0}),
            ("check_health:after_rollback", "healthy", {}),
        ],
    )
    runs.append((_report("r3", t3, "rolled_back", s3), s3))
    # r4 (next day, over the daily budget): broken code, CI red twice, stopped; cloud $12.00
    t4 = T0 + timedelta(days=1)
    s4 = _steps(
        "r4",
        t4,
        [
            ("route", "routed", {"mode": "cloud"}),
            ("generate_code", "finished", {"mode": "cloud", "cost": 12.00}),
            ("compile_check", "not_compiled", {}),
            ("open_pull_request", "opened", {}),
            ("wait_for_ci#1", "failed", {}),
            ("repair#1", "finished", {}),
            ("compile_check#2", "not_compiled", {}),
            ("wait_for_ci#2", "failed", {}),
        ],
    )
    runs.append((_report("r4", t4, "stopped", s4), s4))
    return runs


def _kpis(runs, **kw):
    facts = [run_facts(r, s) for r, s in runs]
    return compute_kpis(
        facts,
        since=T0 - timedelta(hours=1),
        until=T0 + timedelta(days=2),
        today=(T0 + timedelta(days=1)).date(),
        **kw,
    )


def test_kpis_match_hand_computed_values():
    k = _kpis(recorded_runs())
    assert k.runs == 4
    assert k.compile_rate == 0.75  # r1, r2, r3 compiled at first check; r4 did not
    assert k.first_pass_ci_rate == 0.5  # r1, r3 passed first; r2, r4 failed
    assert k.ci_pass_after_repair_rate == 0.5  # r2 passed after repair, r4 did not
    assert k.deploy_success_rate == pytest.approx(2 / 3, abs=1e-4)  # r1, r2 healthy; r3 rolled back
    assert k.rollback_rate == pytest.approx(1 / 3, abs=1e-4)
    assert k.time_to_restore_median_s == 30.0
    assert k.cost_usd == pytest.approx(15.10)
    assert k.cloud_cost_usd == pytest.approx(15.10) and k.local_cost_usd == 0
    assert k.cloud_cost_today == pytest.approx(12.00)
    assert k.cost_per_day == {"2026-11-20": {"cloud": 3.1, "local": 0.0}, "2026-11-21": {"cloud": 12.0, "local": 0.0}}
    assert k.cost_per_merged_pr == pytest.approx(15.10 / 3, abs=1e-6)  # all spend / 3 merged PRs
    assert k.cost_per_successful_deploy == pytest.approx(15.10 / 2, abs=1e-6)
    # r1: 60+3000+60+60+240+60+60+60+60 s = 3660 s to healthy; r2: 12 steps x 60 s = 720 s
    assert k.lead_time_median_s == pytest.approx((3660 + 720) / 2)
    assert k.dora["change_failure_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert k.dora["deployment_frequency_per_day"] == pytest.approx(2 / (2 + 1 / 24), abs=1e-3)


def test_go_no_go_flags_the_over_budget_day():
    k = _kpis(recorded_runs(), usd_to_display_rate=0.92, display_currency="EUR")
    g = k.go_no_go
    assert g["llm_cost_per_day"].value == pytest.approx(12.0 * 0.92) and g["llm_cost_per_day"].verdict == "no-go"
    assert g["compile_rate"].verdict == "no-go"  # 0.75 is not > 0.80
    assert g["v2_valid_code"].verdict == "go"  # 0.75 > 0.60
    assert g["deploy_success_rate"].verdict == "no-go"
    assert g["v2_llm_cost_per_month"].verdict == "go"  # 15.10 * 0.92 < 200


def test_a_retried_step_counts_once():
    runs = recorded_runs()
    report, steps = runs[0]
    retried = [*steps, steps[1].model_copy(update={"cost_usd": 1.00})]  # generate_code recorded twice
    facts = run_facts(report, retried)
    assert facts.cost_usd == pytest.approx(1.10)


def test_time_saved_is_an_estimate_from_the_human_baseline():
    k = _kpis(recorded_runs(), baseline=HumanBaseline(hours={"S": 2.0, "M": 8.0, "L": 24.0}))
    # r1 (S: 40 lines): 1 - 3660/7200; r2 (M: 200 lines): 1 - 720/28800 → median of the two
    expected = ((1 - 3660 / 7200) + (1 - 720 / 28800)) / 2
    assert k.time_saved_estimate == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("empty", [[]])
def test_no_runs_gives_no_data_not_zero(empty):
    k = compute_kpis(empty, since=T0, until=T0 + timedelta(days=1), today=date(2026, 11, 20))
    assert k.runs == 0 and k.compile_rate is None
    assert {t.verdict for t in k.go_no_go.values()} == {"no data"}


def test_agent_vs_human_split_from_the_code_hosts_merged_prs():
    from promptship.domain.kpi import MergedPR

    prs = [
        MergedPR(
            repository="demo/chat-app", number=1, created_at=T0, merged_at=T0 + timedelta(hours=1), by_promptship=True
        ),
        MergedPR(
            repository="demo/chat-app", number=2, created_at=T0, merged_at=T0 + timedelta(hours=3), by_promptship=True
        ),
        MergedPR(
            repository="demo/chat-app", number=3, created_at=T0, merged_at=T0 + timedelta(hours=30), by_promptship=False
        ),
        # merged before the period: not counted
        MergedPR(
            repository="demo/chat-app",
            number=4,
            created_at=T0 - timedelta(days=9),
            merged_at=T0 - timedelta(days=8),
            by_promptship=False,
        ),
    ]
    k = _kpis(recorded_runs(), merged_prs=prs)
    assert k.agent_vs_human == {
        "agent": {"merged_prs": 2, "open_to_merge_median_h": 2.0},
        "human": {"merged_prs": 1, "open_to_merge_median_h": 30.0},
    }
