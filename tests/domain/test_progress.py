"""The stage a step puts a run in: a repair stays in the CI stage, a rollback in the health stage; never back."""

from __future__ import annotations

import pytest

from promptship.domain.progress import STAGES, progress_at, progress_finished, progress_started


@pytest.mark.parametrize(
    ("name", "label", "round_number", "stage", "percent", "text"),
    [
        ("route", "route", None, 1, 0.0, "routing the request"),
        ("generate_code", "generate_code", None, 2, 10.0, "the code agent is working"),
        ("compile_check", "compile_check", 1, 3, 20.0, "checking that the change builds"),
        ("wait_for_ci", "wait_for_ci#1", 1, 5, 40.0, "waiting for CI"),
        ("repair", "repair#1", 1, 5, 40.0, "CI failed: the agent repairs (round 1)"),
        ("compile_check", "compile_check#2", 2, 5, 40.0, "checking that the repaired change builds (round 2)"),
        ("wait_for_ci", "wait_for_ci#2", 2, 5, 40.0, "waiting for CI (round 2, after repair 1)"),
        ("merge", "merge", None, 6, 50.0, "merging the pull request"),
        ("check_health", "check_health", None, 9, 80.0, "health gate"),
        ("rollback", "rollback", None, 9, 80.0, "the change failed the gate: rolling back"),
        ("check_health", "check_health:after_rollback", None, 9, 80.0, "health gate of the restored version"),
        ("write_back", "write_back", None, 9, 80.0, "rolled back: reverting the merge in git"),
    ],
)
def test_each_step_is_in_its_stage(
    name: str, label: str, round_number: int | None, stage: int, percent: float, text: str
) -> None:
    p = progress_at(name, label, round_number)  # type: ignore[arg-type]
    assert (p.stage, p.stages, p.percent, p.text) == (stage, 10, percent, text)
    assert p.describe() == f"Stage {stage}/10 · {label} — {text}"


def test_a_run_starts_at_zero_and_its_report_finishes_it_whatever_the_outcome() -> None:
    assert progress_started(2).percent == 0.0 and progress_started(2).text == "attempt 2 started"
    for outcome in ("deployed", "stopped", "rolled_back"):
        done = progress_finished(outcome)
        assert (done.stage, done.percent, done.text) == (10, 100.0, f"finished: {outcome}")


def test_the_stages_of_a_deploying_run_only_go_forward() -> None:
    order = [progress_at(name, name).stage for name, _ in STAGES]
    assert order == sorted(order) == list(range(1, len(STAGES) + 1))
