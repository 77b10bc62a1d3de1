"""The report's story of a run that went through the repair loop and was rolled back (built from step
records, as the store returns them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from promptship.domain.report import RunReport, StepFacts, StepRecord, render_markdown, story

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PR = "https://github.com/acme/chat-app/pull/7"
REVERT = "https://github.com/acme/chat-app/pull/8"


def _step(n: int, step: str, name: str, verdict: str, **kw: object) -> StepRecord:
    return StepRecord(
        run_key="k1",
        step=step,
        name=name,
        verdict=verdict,  # type: ignore[arg-type]
        started_at=T0 + timedelta(seconds=n),
        ended_at=T0 + timedelta(seconds=n + 1),
        **kw,  # type: ignore[arg-type]
    )


def _report() -> RunReport:
    steps = (
        _step(
            0,
            "route",
            "route",
            "routed",
            model="gpt-x",
            mode="cloud",
            route_reason="class complex_code",
            facts=StepFacts(task_class="complex_code"),
        ),
        _step(
            1,
            "generate_code",
            "generate_code",
            "finished",
            model="gpt-x",
            mode="cloud",
            route_reason="class complex_code",
            prompt_tokens=900,
            completion_tokens=100,
            cost_usd=0.02,
            facts=StepFacts(head_sha="a" * 40, files_changed=2, lines_changed=30),
        ),
        _step(
            2,
            "open_pull_request",
            "open_pull_request",
            "opened",
            model="llama",
            mode="local",
            route_reason="docs to local",
            prompt_tokens=50,
            facts=StepFacts(pr_url=PR, pr_number=7),
        ),
        _step(
            3,
            "wait_for_ci#1",
            "wait_for_ci",
            "failed",
            round=1,
            facts=StepFacts(head_sha="a" * 40, failing_checks="test"),
        ),
        _step(4, "repair#1", "repair", "finished", round=1, cost_usd=0.01, prompt_tokens=10, mode="cloud"),
        _step(5, "wait_for_ci#2", "wait_for_ci", "passed", round=2, facts=StepFacts(head_sha="b" * 40)),
        _step(6, "check_health", "check_health", "unhealthy", facts=StepFacts(probes=5, health_url="http://h/health")),
        _step(
            7,
            "rollback",
            "rollback",
            "restored",
            detail={"why": "health gate: 503"},
            facts=StepFacts(restored_image="app:old", time_to_restore_s=12.5),
        ),
        _step(8, "write_back", "write_back", "merged", facts=StepFacts(pr_url=REVERT, pr_number=8)),
        _step(9, "report", "report", "rolled_back"),
    )
    return RunReport(
        run_key="k1",
        repository="acme/chat-app",
        prompt_redacted="Add X",
        requester="octocat",
        outcome="rolled_back",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=10),
        steps=steps,
        pr_url=PR,
        revert_pr_url=REVERT,
        revert_state="merged",
    )


def test_the_story_tells_the_repair_and_the_rollback_step_by_step() -> None:
    assert story(_report()) == [
        "Routed as **complex_code** to `gpt-x` (cloud): class complex_code.",
        "The code agent finished with `gpt-x` (2 file(s), 30 line(s) changed; head `aaaaaaaaaaaa`).",
        "Pull request [#7](https://github.com/acme/chat-app/pull/7) opened.",
        "CI round 1 on `aaaaaaaaaaaa`: **failed** (failing: test).",
        "Repair round 1: CI's failure went back to the agent, which finished.",
        "CI round 2 on `bbbbbbbbbbbb`: **passed**.",
        "Health gate: **unhealthy** after 5 probe(s) of http://h/health.",
        "Rollback: **restored**, `app:old` serving again in 12.5 s — health gate: 503.",
        "The merge was reverted in git: revert PR [#8](https://github.com/acme/chat-app/pull/8) (merged).",
        "Outcome: **rolled_back**.",
    ]


def test_the_summary_links_both_prs_and_splits_the_cost_by_mode() -> None:
    md = render_markdown(_report())
    assert "- **Pull request**: [#7](https://github.com/acme/chat-app/pull/7)  \n" in md
    assert "- **Revert PR**: [#8](https://github.com/acme/chat-app/pull/8) (merged)  \n" in md
    assert "- **LLM cost**: $0.0300 (cloud $0.0300, local $0.0000), 1060 tokens  \n" in md
    assert "| open_pull_request | llama | local | docs to local |" in md  # a route decision
