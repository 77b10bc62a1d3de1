"""`promptship replay`, `policy suggest`, `policy export` and `route --explain` on a generated month (tests/replay/
history.py) in a real SQLite store; every expected figure is computed here from what the generator wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptship.cli import app
from promptship.domain.results import Usage
from promptship.settings import Settings
from promptship.store.ledger import CostLedger
from promptship.wiring import build_store
from tests.replay.history import PRICES, WEEKS_1_2, History, write_month


@pytest.fixture
def month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> History:
    policy = tmp_path / "in-force.yaml"
    policy.write_text(WEEKS_1_2.to_yaml(), encoding="utf-8")
    monkeypatch.setenv("PROMPTSHIP_LLM__POLICY_FILE", str(policy))
    store = build_store(Settings())
    return write_month(store, CostLedger(store.engine))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _wilson_low_by_bisection(k: int, n: int, z: float = 1.959963984540054) -> float:
    """The lower Wilson bound as the p below k/n where |k/n - p| = z·sqrt(p(1-p)/n) (no closed form used)."""
    lo, hi = 0.0, k / n
    for _ in range(200):
        mid = (lo + hi) / 2
        if k / n - mid > z * math.sqrt(mid * (1 - mid) / n):
            lo = mid
        else:
            hi = mid
    return lo


def test_replay_under_the_recording_policies_is_exact_to_the_cent(month: History):
    code, out, _ = _run("replay", "--json")
    assert code == 0
    report = json.loads(out)
    expected = sum(c.cost for c in month.calls)
    assert report["calls"] == len(month.calls) == 2 * (30 + 30 + 4 + 30 + 30) + 1
    assert report["self_check"] == "ok", report["self_check_detail"]
    assert round(report["cost_recorded_usd"] * 100) == round(report["cost_replayed_usd"] * 100) == round(expected * 100)
    assert abs(report["cost_replayed_usd"] - expected) < 1e-9
    assert (report["moved_to_cloud"], report["moved_to_local"], report["models_changed"]) == (0, 0, 0)
    days = {c.day for c in month.calls}
    assert set(report["per_day"]) == days


def test_suggest_finds_the_cheap_model_for_tests_and_keeps_the_expensive_one_for_complex_code(
    month: History, tmp_path: Path
):
    # what the history says, judged here: 29/30 on mistral clears 0.8, 15/30 does not, 4/4 is too little data
    assert _wilson_low_by_bisection(29, 30) >= 0.8 > _wilson_low_by_bisection(15, 30)
    assert _wilson_low_by_bisection(4, 4) < 0.8
    out_file = tmp_path / "suggested.yaml"
    code, out, _ = _run("policy", "suggest", "--success-floor", "0.8", "--out", str(out_file), "--json")
    assert code == 0
    classes = json.loads(out)["classes"]
    assert classes == {
        "sensitive": "llama3",
        "complex_code": "gpt-4o",
        "tests": "mistral",
        "docs": "claude-3.5-sonnet",
        "default": "mistral",
    }
    assert "tests: mistral" in out_file.read_text() and "complex_code: gpt-4o" in out_file.read_text()

    # the suggestion replayed: tests' gpt-4o calls move local, complex_code's mistral calls move to gpt-4o
    code, out, _ = _run("replay", "--policy", str(out_file), "--json")
    assert code == 0
    report = json.loads(out)
    moved_local = [c for c in month.calls if c.klass == "tests" and c.model == "gpt-4o"]
    moved_cloud = [c for c in month.calls if c.klass == "complex_code" and c.model == "mistral"]
    i, o = PRICES["gpt-4o"]
    expected = (
        sum(c.cost for c in month.calls)
        - sum(c.cost for c in moved_local)
        + sum(c.prompt * i + c.completion * o for c in moved_cloud)
    )
    assert (report["moved_to_local"], report["moved_to_cloud"]) == (len(moved_local), len(moved_cloud)) == (30, 30)
    assert abs(report["cost_replayed_usd"] - expected) < 1e-9
    assert report["self_check"] == "not applicable"
    cell = report["per_class_model"]["tests × gpt-4o → mistral"]
    assert cell["calls"] == 30 and cell["cost_now_usd"] == 0.0

    code, text, _ = _run("replay", "--policy", str(out_file))
    assert code == 0 and "tests × gpt-4o → mistral" in text and "cannot know how a different model" in text


def test_a_policy_sending_the_one_sensitive_call_to_the_cloud_is_refused_naming_the_rule(month: History, tmp_path):
    assert sum(c.sensitive for c in month.calls) == 1
    via_caller = tmp_path / "caller.yaml"
    via_caller.write_text("callers: {repair: gpt-4o}\n")
    code, out, err = _run("replay", "--policy", str(via_caller))
    assert code == 3
    assert "callers.repair: gpt-4o (cloud)  (1 recorded sensitive call(s))" in out
    assert "refused: callers.repair" in err

    via_class = tmp_path / "class.yaml"
    via_class.write_text("classes: {sensitive: claude-3.5-sonnet}\n")
    code, out, _ = _run("replay", "--policy", str(via_class), "--json")
    assert code == 3
    assert json.loads(out)["refused"] == [{"rule": "classes.sensitive: claude-3.5-sonnet (cloud)", "calls": 1}]


def test_a_classifier_or_gate_change_is_refused(month: History, tmp_path):
    changed = tmp_path / "rules.yaml"
    changed.write_text("classifier: {tests: '(?i)spec'}\nclasses: {tests: mistral}\n")
    code, _out, err = _run("replay", "--policy", str(changed))
    assert code == 2 and "changes the classifier" in err and "no prompt text is kept" in err


def test_rows_from_before_0008_are_reported_unknowable(month: History):
    store = build_store(Settings())
    CostLedger(store.engine).settle(
        None, run_key="old-1", step="agent", model="gpt-4o", mode="cloud", usage=Usage(prompt_tokens=10, cost_usd=0.5)
    )
    code, out, _ = _run("replay", "--json")
    report = json.loads(out)
    assert code == 0 and report["self_check"] == "ok"
    assert report["unknowable"] == {"unknowable (recorded before 0008)": 1}
    assert abs(report["cost_recorded_usd"] - (sum(c.cost for c in month.calls) + 0.5)) < 1e-9


def test_export_writes_the_policy_in_force_that_replay_reads(month: History, tmp_path):
    exported = tmp_path / "p.yaml"
    code, out, _ = _run("policy", "export", str(exported))
    assert code == 0 and exported.exists()
    code, out, _ = _run("replay", "--policy", str(exported), "--json")
    report = json.loads(out)
    # the policy in force is the weeks-1–2 table: weeks 3–4's mistral calls move back to gpt-4o
    assert code == 0 and report["moved_to_cloud"] == 60 and report["moved_to_local"] == 0


def test_route_explain_shows_rule_gate_model_and_evidence(month: History):
    code, out, _ = _run("route", "--explain", "Write pytest unit tests for the parser")
    assert code == 0
    assert "class:     tests" in out and "model:     gpt-4o" in out
    assert "rule:      asks to write or fix tests" in out and "gate:      clean" in out
    assert "evidence:  gpt-4o: 29/30 succeeded" in out and "← chosen" in out
    assert "evidence:  mistral: 29/30 succeeded" in out
