"""Apps' keys of the gateway service (the chat app's): each call routed by the policy for the key's caller,
recorded under that caller. The LLM stand-in plays both Ollama and the llama.cpp server (OpenAI-compatible)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
from promptship.domain.routing import RoutingPolicy
from promptship.errors import ConfigError
from promptship.servers.gateway import create_gateway_app
from promptship.store.ledger import LLMAccessKeyRow, LLMCallRow
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from promptship_sandbox.local_model import POLICY_FILE
from tests.gateway.helpers import OPENROUTER_TEST_KEY, make_ledger

pytestmark = pytest.mark.gateway

ALIAS = "smollm2-135m-instruct"  # the llama.cpp server's model alias in deployments/routing-llamacpp.yaml


@pytest.fixture
def gateway(llm: LLMStandIn, scanner, tmp_path: Path) -> Iterator[LiteLLMGateway]:
    policy = RoutingPolicy.from_yaml(POLICY_FILE.read_text())
    gw = LiteLLMGateway(
        policy=policy,
        scanner=scanner,
        ledger=make_ledger(tmp_path),
        endpoints=ProviderEndpoints(
            ollama_base_url=llm.base_url,
            openrouter_base_url=llm.base_url + "/v1",
            openrouter_api_key=SecretStr(OPENROUTER_TEST_KEY),
            llamacpp_base_url=llm.base_url + "/v1",
        ),
        gateway_url="http://127.0.0.1:9",
        sleep=lambda _s: None,
    )
    with serve_asgi(create_gateway_app(gw, gw.ledger)) as url:
        gw.gateway_url = url
        yield gw


def _calls(gw: LiteLLMGateway, run_key: str) -> list:
    with gw.ledger.engine.connect() as conn:
        return conn.execute(select(LLMCallRow.__table__).where(LLMCallRow.run_key == run_key)).all()


def _chat(base_url: str, key: str, text: str) -> httpx.Response:
    body = {"model": "anything", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_an_apps_key_is_routed_to_its_callers_group_and_recorded_under_it(gateway, llm: LLMStandIn) -> None:
    access = gateway.app_access("chat")
    llm.script(ALIAS, ["Hello from the llama.cpp stand-in."])
    r = _chat(access.base_url, access.api_key.get_secret_value(), "Say hello to the team.")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the llama.cpp stand-in."
    assert r.json()["model"] == "smollm2"
    assert [req.model for req in llm.completions()] == [ALIAS]  # nothing reached Ollama or the cloud
    [row] = _calls(gateway, "app-chat")
    assert (row.step, row.model, row.mode) == ("chat", "smollm2", "local")
    assert "caller chat's local group smollm2" in row.route_reason
    assert row.prompt_tokens > 0 and row.completion_tokens > 0


def test_an_apps_calls_are_routed_one_by_one_a_cloud_class_goes_to_the_cloud(gateway, llm: LLMStandIn) -> None:
    """The caller's group takes only the calls the policy routes local; a request the policy sends to the
    cloud goes there (callers never move a call the other way)."""
    access = gateway.app_access("chat")
    key = access.api_key.get_secret_value()
    assert _chat(access.base_url, key, "Implement a binary tree in Python with insert and delete.").status_code == 200
    assert _chat(access.base_url, key, "What is the capital of France?").status_code == 200
    rows = _calls(gateway, "app-chat")
    assert [(r.step, r.model, r.mode) for r in rows] == [("chat", "gpt-4o", "cloud"), ("chat", "smollm2", "local")]


def test_sensitive_data_sent_with_an_apps_key_stays_on_the_callers_local_model(gateway, llm: LLMStandIn) -> None:
    access = gateway.app_access("chat")
    secret = "ghp_" + "Zq7Yt2Lm9Wx4Vb8Nc3Kd6Hf1Jg5Rs0Pa4Ue7"  # a made-up GitHub token
    r = _chat(access.base_url, access.api_key.get_secret_value(), f"Write docs for the token {secret} rotation.")
    assert r.status_code == 200, r.text
    assert [req.model for req in llm.completions()] == [ALIAS]
    [row] = _calls(gateway, "app-chat")
    assert row.mode == "local" and "sensitive data found" in row.route_reason


def test_an_apps_key_is_stored_only_as_its_hash_and_a_wrong_one_is_refused(gateway, llm: LLMStandIn) -> None:
    access = gateway.app_access("chat", run_key="chat-app-demo", budget_usd=1.0)
    key = access.api_key.get_secret_value()
    assert key.startswith("psk-app-") and access.run_key == "chat-app-demo"
    with gateway.ledger.engine.connect() as conn:
        stored = [tuple(str(v) for v in row) for row in conn.execute(select(LLMAccessKeyRow.__table__)).all()]
    assert stored and not any(key in value for row in stored for value in row)
    assert _chat(access.base_url, key[:-2] + "xx", "hello").status_code == 401
    assert gateway.run_cost_usd("chat-app-demo") == 0.0 and llm.requests == []


@pytest.mark.parametrize("caller", ["", "Chat", "chat app", "x" * 65, "1chat"])
def test_a_bad_caller_name_is_refused_and_mints_nothing(gateway, caller: str) -> None:
    with pytest.raises(ConfigError, match="caller"):
        gateway.app_access(caller)
    with gateway.ledger.engine.connect() as conn:
        assert conn.execute(select(LLMAccessKeyRow.__table__)).all() == []


def test_the_policy_file_names_the_callers_the_real_model_answers() -> None:
    from promptship_sandbox.local_model import describe_local_callers, local_model_callers

    assert local_model_callers() == ("open_pull_request", "chat", "summarize_ci_log")
    line = describe_local_callers()
    assert all(c in line for c in ("open_pull_request", "chat", "summarize_ci_log")) and "code agent" in line


def test_the_sandbox_chat_app_secret_points_the_app_at_the_gateway(gateway, llm: LLMStandIn) -> None:
    from promptship_sandbox.llm_gateway import SandboxGateway, chat_app_secret

    data = chat_app_secret(SandboxGateway(gateway=gateway, llm=llm, url=gateway.gateway_url, openrouter_key=""))
    assert data["LLM_API_BASE"] == f"{gateway.gateway_url}/v1"
    access = gateway.access_for(data["LLM_API_KEY"])
    assert access is not None and access.caller == "chat" and access.decision is None


def test_an_apps_key_outlives_the_attempts_whose_keys_expire(gateway, llm: LLMStandIn) -> None:
    """Agent keys expire with their attempt (``expire_agent_access``); an app's key is no attempt's."""
    access = gateway.app_access("chat", run_key="shared-run")
    decision = gateway.route("Implement the feature", task_class="complex_code")
    agent_key = gateway.agent_access("shared-run", decision, 1.0).api_key.get_secret_value()
    gateway.expire_agent_access("shared-run")
    assert gateway.access_for(agent_key) is None
    kept = gateway.access_for(access.api_key.get_secret_value())
    assert kept is not None and kept.caller == "chat"
