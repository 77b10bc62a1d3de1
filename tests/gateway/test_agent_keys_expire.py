"""An agent key lives as long as the attempt that asked for it (#15 "gateway keys expire with their attempt"):
the gateway service answers 401 to a key of an attempt that ended, while the next attempt's key works and its
calls are charged to that attempt."""

from __future__ import annotations

import httpx
import pytest

from promptship.servers.gateway import create_gateway_app
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Implement a retry helper"}]}


def test_a_key_used_after_its_attempt_ended_gets_401_and_the_next_attempts_key_is_charged(
    llm: LLMStandIn, scanner: object, tmp_path
) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))  # type: ignore[arg-type]
    decision = gateway.route("Implement the feature", task_class="complex_code")
    with (
        serve_asgi(create_gateway_app(gateway, gateway.ledger)) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as http,
    ):

        def chat(key: str) -> httpx.Response:
            return http.post("/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"})

        first = gateway.agent_access("REQ-a1", decision, 1.0).api_key.get_secret_value()
        assert chat(first).status_code == 200
        gateway.expire_agent_access("REQ-a1")  # attempt 1 ended
        second = gateway.agent_access("REQ-a2", decision, 1.0).api_key.get_secret_value()

        late = chat(first)
        assert late.status_code == 401 and late.json()["error"]["type"] == "invalid_api_key"
        assert http.get("/v1/models", headers={"authorization": f"Bearer {first}"}).status_code == 401
        assert chat(second).status_code == 200

    assert gateway.ledger.run_usage("REQ-a1").prompt_tokens > 0
    cost_1, cost_2 = gateway.run_cost_usd("REQ-a1"), gateway.run_cost_usd("REQ-a2")
    assert cost_1 > 0 and cost_2 == pytest.approx(cost_1)  # one call each: the late one was charged to no one
    assert len(llm.completions()) == 2
