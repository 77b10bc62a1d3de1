"""What the gateway records for replay (migration 0008) — through the real LiteLLM client and the LLM stand-in —
and that the self-check decides and prices those rows again exactly."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from promptship.domain.replay import replay
from promptship.domain.results import LLMCall, LLMMessage
from promptship.domain.routing import RoutingPolicy
from promptship.store.replay import recorded_calls, recorded_policies
from promptship_sandbox.llm_server import LLMStandIn
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway

SECRET = "ghp_" + "Zq8" * 12


def _call(content: str, **kw) -> LLMCall:
    return LLMCall(
        run_key="att-1",
        step=kw.pop("step", "open_pull_request"),
        messages=(LLMMessage(role="user", content=content),),
        **kw,
    )


def test_rows_carry_the_decision_without_any_text_and_replay_exactly(llm: LLMStandIn, scanner, tmp_path):
    ledger = make_ledger(tmp_path, run_default_usd=5.0)
    gateway = make_gateway(llm, scanner, ledger, local_cost_per_1k_tokens_usd=0.002)
    gateway.complete(_call("Write pytest unit tests for the /chat endpoint"))
    gateway.complete(_call(f"Fix the bug in deploy.py, the token is {SECRET}", step="repair"))
    gateway.complete(_call("Summarise the release", task_class="docs"))
    gateway.complete(_call("Summarise the release", task_class="complex_code", force_local=True))

    with ledger.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM llm_calls ORDER BY id"))]
        stored = conn.execute(text("SELECT hash, policy_yaml FROM routing_policies")).all()
    assert SECRET not in json.dumps(rows, default=str)
    assert "pytest unit tests" not in json.dumps([r["class_rule"] for r in rows])
    tests_row, secret_row, docs_row, forced_row = rows
    assert (tests_row["task_class"], tests_row["class_source"], tests_row["gate_verdict"]) == ("tests", "rule", "clean")
    assert tests_row["class_rule"] == "asks to write or fix tests"
    assert (tests_row["model"], tests_row["price_source"], tests_row["route_caller"]) == (
        "mistral",
        "local",
        "open_pull_request",
    )
    assert secret_row["gate_verdict"] == "sensitive" and secret_row["mode"] == "local"
    assert json.loads(secret_row["gate_kinds"]) == ["secret:github_token"]
    assert (docs_row["class_source"], docs_row["model"], docs_row["price_source"]) == (
        "caller",
        "claude-3.5-sonnet",
        "provider",
    )
    assert (forced_row["forced_local"], forced_row["mode"]) == (True, "local")
    assert [h for h, _ in stored] == [RoutingPolicy.default().fingerprint()] == list({r["policy_hash"] for r in rows})
    assert RoutingPolicy.from_yaml(stored[0][1]) == RoutingPolicy.default()

    report = replay(recorded_calls(ledger.engine), recorded_policies(ledger.engine))
    assert report.self_check == "ok", report.self_check_detail
    assert report.calls == 4 and report.unknowable == {}
    assert report.cost_replayed_usd == report.cost_recorded_usd == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert (report.moved_to_cloud, report.moved_to_local) == (0, 0)
    # the local rows' cost is the per-1k rate times their tokens; the self-check re-derived it from tokens
    local = [r for r in rows if r["mode"] == "local"]
    assert sum(r["cost_usd"] for r in local) == pytest.approx(
        sum((r["prompt_tokens"] + r["completion_tokens"]) * 0.002 / 1000 for r in local)
    )
    assert report.provider_priced["calls"] == 1
