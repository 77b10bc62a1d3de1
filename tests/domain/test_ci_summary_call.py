"""The CI-log summary for repair prompts: the local call that asks for it, the answer made a summary, and where
the summary goes in the repair instruction (pure functions, tables)."""

from __future__ import annotations

import pytest

from promptship.domain.instructions import (
    CI_SUMMARY_CALLER,
    CILogSummary,
    ci_log_summary,
    ci_summary_call,
    repair_instruction,
)
from promptship.domain.results import CheckOutcome, CIResult

SHA = "0123456789abcdef" * 2 + "01234567"
LONG_LOG = "\n".join(f"collected line {i}" for i in range(3000)) + "\nFAILED tests/test_api.py::test_version - 404"


def _ci(*checks: CheckOutcome) -> CIResult:
    return CIResult(verdict="failed", sha=SHA, checks=checks)


@pytest.mark.parametrize(
    "ci",
    [
        _ci(),
        _ci(CheckOutcome(name="test", state="failure")),
        _ci(
            CheckOutcome(name="test", state="failure", log_excerpt="  \n "), CheckOutcome(name="lint", state="success")
        ),
        _ci(CheckOutcome(name="lint", state="success", log_excerpt="all good")),
    ],
    ids=["no-checks", "no-log", "blank-log", "only-passing-logs"],
)
def test_no_failing_log_means_no_summary_call(ci: CIResult) -> None:
    assert ci_summary_call("run-a1", ci) is None


def test_the_summary_call_is_local_for_its_caller_and_reads_the_bounded_tails() -> None:
    ci = _ci(
        CheckOutcome(name="backend-tests", state="failure", log_excerpt=LONG_LOG),
        CheckOutcome(name="frontend", state="error", log_excerpt="npm ERR! build failed"),
        CheckOutcome(name="lint", state="success", log_excerpt="lint is fine"),
    )
    call = ci_summary_call("run-a1", ci)
    assert call is not None
    assert (call.run_key, call.step, call.force_local) == ("run-a1", CI_SUMMARY_CALLER, True)
    assert call.max_tokens is not None and call.max_tokens <= 120
    assert call.deadline_s is not None and call.deadline_s <= 120  # an optional hint never holds a repair long
    asked = call.messages[-1].content
    assert "FAILED tests/test_api.py::test_version - 404" in asked and "npm ERR! build failed" in asked
    assert "collected line 0\n" not in asked and "lint is fine" not in asked
    assert len(asked) < 2_000 + 600  # the logs' share is bounded; the rest is the question and the headers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("", None),
        ("  \n\n ", None),
        ("  test_version failed: 404 != 200  \n\n\n", "test_version failed: 404 != 200"),
        ("line one  \n\n line two", "line one\n line two"),
    ],
)
def test_the_models_answer_becomes_a_summary(answer: str, expected: str | None) -> None:
    summary = ci_log_summary(answer, "smollm2")
    assert (summary.text if summary else None) == expected


def test_a_long_answer_is_cut_to_a_bound() -> None:
    summary = ci_log_summary("word " * 1000, "smollm2")
    assert summary is not None and len(summary.text) <= 800 and summary.text.endswith("…")


def test_the_summary_comes_first_as_a_hint_and_the_raw_tail_stays() -> None:
    ci = _ci(CheckOutcome(name="backend-tests", state="failure", log_excerpt=LONG_LOG))
    summary = CILogSummary(text="test_version returned 404 instead of 200.", model="smollm2")
    with_summary = repair_instruction(ci, 1, summary=summary)
    without = repair_instruction(ci, 1)
    heading = "## Summary of the failure (a hint)"
    assert heading in with_summary and heading not in without
    assert "(smollm2)" in with_summary and "may be incomplete or wrong" in with_summary
    assert with_summary.index(summary.text) < with_summary.index("## Failing checks")
    tail = "FAILED tests/test_api.py::test_version - 404"
    assert tail in with_summary and tail in without
    assert with_summary.split("## Failing checks", 1)[1] == without.split("## Failing checks", 1)[1]
