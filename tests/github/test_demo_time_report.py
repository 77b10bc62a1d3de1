"""The demo's "Where the time went" lines, from a report and the forge's CI runs as the demo has them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from promptship.domain.report import RunReport, StepRecord
from promptship_sandbox.demo import SCENARIOS, ScenarioResult, ci_time_line, scenario_time_lines
from promptship_sandbox.forge import CIRun

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _step(label: str, start_s: float, seconds: float) -> StepRecord:
    name = label.split("#", 1)[0]
    return StepRecord(
        run_key="k",
        step=label,
        name=name,  # type: ignore[arg-type]
        started_at=T0 + timedelta(seconds=start_s),
        ended_at=T0 + timedelta(seconds=start_s + seconds),
        verdict="ok",
    )


def test_a_scenario_line_names_its_wait_for_the_first_step_and_its_longest_steps_rounds_added() -> None:
    steps = (_step("generate_code", 20, 60), _step("wait_for_ci#1", 80, 30), _step("wait_for_ci#2", 150, 45))
    report = RunReport(
        run_key="k", repository="demo/chat-app", prompt_redacted="p", requester="r", outcome="deployed",
        started_at=T0, ended_at=T0 + timedelta(seconds=200), steps=steps,
    )  # fmt: skip
    r = ScenarioResult(SCENARIOS["deploy"], report=report, seconds=210, submitted_at=T0 + timedelta(seconds=5))
    assert scenario_time_lines([r]) == [
        "  deploy 210 s: to the first step 15 s, wait_for_ci 75 s (2x), generate_code 60 s"
    ]
    assert scenario_time_lines([ScenarioResult(SCENARIOS["repair"], seconds=3)]) == ["  repair 3 s: no report"]


def test_the_ci_line_counts_tests_run_and_reused() -> None:
    runs = [
        CIRun("demo/a", "s1", "main", "success", (), None, 12.0),
        CIRun("demo/b", "s1", "main", "success", (), "demo/a#7", 11.5),
        CIRun("demo/a", "s2", "x", "failure", (), None, 20.0),
    ]
    assert ci_time_line(runs) == (
        "  forge CI: 3 builds, 2 ran make test, 1 reused a pass of the same files, make test 12-20 s each, 32 s in all"
    )
