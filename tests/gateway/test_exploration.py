"""The exploration setting through the real LiteLLM client and the LLM stand-in: which model answered is what the
stand-in received. With share 1.0 a clean call goes to its class's candidate, a sensitive one never does, a spent
exploration budget stops it (also under concurrency: the ledger's reservations), off changes nothing, an app's
calls are explored and the code agent's (a run's pinned route) are not, and replay's self-check stays ok."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from promptship.domain.replay import replay
from promptship.domain.results import LLMCall, LLMMessage
from promptship.domain.routing import Exploration, RoutingPolicy
from promptship.servers.gateway import create_gateway_app
from promptship.settings import Settings
from promptship.store.ledger import LLMCallRow
from promptship.store.replay import recorded_calls, recorded_policies
from promptship.wiring import build_routing_policy
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway

SECRET = "ghp_" + "Zq7Yt2Lm9Wx4Vb8Nc3Kd6Hf1Jg5Rs0Pa4Ue7"  # a made-up GitHub token
TESTS_PROMPT = "Write pytest unit tests for the /chat endpoint"  # class tests → mistral (local) in the seed table


def _policy(**kw) -> RoutingPolicy:
    values = {"enabled": True, "share": 1.0, "budget_usd_per_day": 100.0, "candidates": {"tests": ["codellama"]}}
    return RoutingPolicy.default().with_exploration(Exploration.model_validate({**values, **kw}))


def _call(content: str, run_key: str = "att-1", step: str = "summarize", **kw) -> LLMCall:
    return LLMCall(run_key=run_key, step=step, messages=(LLMMessage(role="user", content=content),), **kw)


def _rows(ledger) -> list:
    with ledger.engine.connect() as conn:
        return conn.execute(select(LLMCallRow.__table__).order_by(LLMCallRow.id)).all()


def test_with_share_one_clean_calls_go_to_the_candidate_and_a_sensitive_one_never(
    llm: LLMStandIn, scanner, tmp_path: Path
) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger, policy=_policy())
    clean = gateway.complete(_call(TESTS_PROMPT))
    stated = gateway.complete(_call("Look at this", task_class="tests"))
    sensitive = gateway.complete(_call(f"{TESTS_PROMPT}; the CI token is {SECRET}"))
    stated_sensitive = gateway.complete(_call(f"Look at {SECRET}", task_class="tests"))
    forced = gateway.complete(_call(TESTS_PROMPT, force_local=True))
    # which model answered: what the stand-in received
    assert [r.model for r in llm.completions()] == ["codellama", "codellama", "llama3", "llama3", "mistral"]
    assert (clean.decision.model, stated.decision.model) == ("codellama", "codellama")
    assert "exploration: codellama (local) instead of mistral" in clean.decision.reason
    assert (sensitive.decision.model, stated_sensitive.decision.model, forced.decision.model) == (
        "llama3",
        "llama3",
        "mistral",
    )
    rows = _rows(ledger)
    assert [(r.model, r.decided_by, r.explored_from, r.explore_seq) for r in rows] == [
        ("codellama", "exploration", "mistral", 0),
        ("codellama", "exploration", "mistral", 1),
        ("llama3", "policy", None, None),
        ("llama3", "policy", None, None),
        ("mistral", "policy", None, None),
    ]
    assert SECRET not in str([tuple(r) for r in rows])


def test_a_stated_class_explores_only_its_own_candidates(llm: LLMStandIn, scanner, tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger, policy=_policy(candidates={"docs": ["gpt-4o"]}))
    gateway.complete(_call(TESTS_PROMPT))  # reads like tests: tests has no candidates here
    gateway.complete(_call(TESTS_PROMPT, task_class="docs"))  # stated docs: docs' candidate
    assert [r.model for r in llm.completions()] == ["mistral", "openai/gpt-4o"]
    assert [(r.task_class, r.model, r.decided_by) for r in _rows(ledger)] == [
        ("tests", "mistral", "policy"),
        ("docs", "gpt-4o", "exploration"),
    ]


def test_a_spent_exploration_budget_stops_exploring(llm: LLMStandIn, scanner, tmp_path: Path) -> None:
    # local calls priced at 1 USD per 1k tokens; a call of ≤ 20 completion tokens is estimated at ~0.05 USD
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(
        llm, scanner, ledger, policy=_policy(budget_usd_per_day=0.1), local_cost_per_1k_tokens_usd=1.0
    )
    for i in range(6):
        gateway.complete(_call(TESTS_PROMPT, run_key=f"att-{i}", max_tokens=20))
    rows = _rows(ledger)
    explored = [r for r in rows if r.decided_by == "exploration"]
    assert explored and len(explored) < len(rows), [(r.model, r.decided_by) for r in rows]
    # once refused, every later call went as the policy decided it
    first_refused = next(i for i, r in enumerate(rows) if r.decided_by == "policy")
    assert all(r.decided_by == "policy" and r.model == "mistral" for r in rows[first_refused:])
    assert "exploration of codellama not made or failed" in rows[first_refused].route_reason
    spent = sum(r.cost_usd for r in explored)
    assert ledger.explored_spend_usd() == pytest.approx(spent) and spent <= 0.1


def test_concurrent_calls_cannot_overspend_the_exploration_budget(llm: LLMStandIn, scanner, tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(
        llm, scanner, ledger, policy=_policy(budget_usd_per_day=0.12), local_cost_per_1k_tokens_usd=1.0
    )
    llm.slow_next(12, seconds=0.3)  # every call in flight at once holds its reservation
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda i: gateway.complete(_call(TESTS_PROMPT, run_key=f"c-{i}", max_tokens=20)), range(12)))
    rows = _rows(ledger)
    explored = [r for r in rows if r.decided_by == "exploration"]
    assert len(rows) == 12 and 0 < len(explored) < 12
    assert sum(r.cost_usd for r in explored) <= 0.12


def test_off_by_default_changes_nothing(llm: LLMStandIn, scanner, tmp_path: Path, monkeypatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PROMPTSHIP_"):
            monkeypatch.delenv(name)
    assert build_routing_policy(Settings(home=tmp_path)) == RoutingPolicy.default().with_llm_config(
        {"default_model": "mistral", "ollama_models": "llama3,mistral,codellama"}
    )
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger)  # the seed policy: exploration off
    for i in range(5):
        gateway.complete(_call(TESTS_PROMPT, run_key=f"att-{i}"))
    assert [r.model for r in llm.completions()] == ["mistral"] * 5
    assert [(r.decided_by, r.explored_from, r.explore_seq) for r in _rows(ledger)] == [("policy", None, None)] * 5


def test_the_settings_turn_it_on_and_the_policy_hash_covers_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_LLM__EXPLORATION_ENABLED", "true")
    monkeypatch.setenv("PROMPTSHIP_LLM__EXPLORATION_SHARE", "0.05")
    monkeypatch.setenv("PROMPTSHIP_LLM__EXPLORATION_CANDIDATES", '{"tests": ["codellama"]}')
    policy = build_routing_policy(Settings(home=tmp_path))
    assert policy.exploration == Exploration(enabled=True, share=0.05, candidates={"tests": ["codellama"]})
    assert policy.fingerprint() != policy.with_exploration(Exploration()).fingerprint()
    monkeypatch.setenv("PROMPTSHIP_LLM__EXPLORATION_CANDIDATES", '{"sensitive": ["mistral"]}')
    from promptship.errors import ConfigError

    with pytest.raises(ConfigError, match="sensitive calls are never explored"):
        build_routing_policy(Settings(home=tmp_path))


def test_an_apps_calls_are_explored_and_the_agents_pinned_calls_are_not(
    llm: LLMStandIn, scanner, tmp_path: Path
) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger, policy=_policy())
    with serve_asgi(create_gateway_app(gateway, ledger)) as url:
        gateway.gateway_url = url
        app = gateway.app_access("chat")
        agent = gateway.agent_access("att-9", gateway.route(TESTS_PROMPT), budget_usd=1.0)
        for key in (app.api_key, agent.api_key):
            body = {"model": "anything", "messages": [{"role": "user", "content": TESTS_PROMPT}]}
            headers = {"authorization": f"Bearer {key.get_secret_value()}"}
            r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
    assert [r.model for r in llm.completions()] == ["codellama", "mistral"]
    assert [(r.step, r.model, r.decided_by) for r in _rows(ledger)] == [
        ("chat", "codellama", "exploration"),
        ("agent", "mistral", "policy"),
    ]


def test_replay_self_check_stays_ok_with_exploration_on(llm: LLMStandIn, scanner, tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    policy = _policy(share=0.5, candidates={"tests": ["codellama", "gpt-4o"], "docs": ["gpt-4o"]})
    gateway = make_gateway(llm, scanner, ledger, policy=policy, local_cost_per_1k_tokens_usd=0.002)
    for i in range(12):
        gateway.complete(_call(TESTS_PROMPT, run_key=f"att-{i}"))
        gateway.complete(_call("Summarise the release", run_key=f"att-{i}", task_class="docs"))
    gateway.complete(_call(f"{TESTS_PROMPT} {SECRET}"))
    rows = _rows(ledger)
    explored = [r for r in rows if r.decided_by == "exploration"]
    assert 0 < len(explored) < len(rows) - 1
    assert {r.model for r in explored} <= {"codellama", "gpt-4o"}

    report = replay(recorded_calls(ledger.engine), recorded_policies(ledger.engine))
    assert report.self_check == "ok", report.self_check_detail
    assert report.unknowable == {}
    assert report.explored["calls"] == len(explored)
    assert report.cost_replayed_usd == report.cost_recorded_usd == pytest.approx(sum(r.cost_usd for r in rows))
    assert (report.moved_to_cloud, report.moved_to_local, report.models_changed) == (0, 0, 0)
    # under the policy without exploration, exactly the explored calls change model
    seed = replay(recorded_calls(ledger.engine), recorded_policies(ledger.engine), candidate=RoutingPolicy.default())
    assert seed.models_changed == len(explored)
