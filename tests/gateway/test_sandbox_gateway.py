"""The sandbox's LLM boundary: real gateway + service + stand-in, as the demo uses it."""

from __future__ import annotations

import httpx
import pytest

from promptship.domain.results import LLMCall, LLMMessage
from promptship.ports import LLMGateway
from promptship.settings import Settings
from promptship_sandbox.llm_gateway import running_sandbox_gateway

pytestmark = pytest.mark.gateway


def test_sandbox_gateway_serves_the_agent_and_the_pipeline() -> None:
    with running_sandbox_gateway(Settings()) as sandbox:
        assert isinstance(sandbox.gateway, LLMGateway)
        reply = sandbox.gateway.complete(
            LLMCall(
                run_key="demo",
                step="open_pull_request",
                task_class="docs",
                messages=(LLMMessage(role="user", content="Title for: add GET /version"),),
            )
        )
        access = sandbox.gateway.agent_access("demo", sandbox.gateway.route("add tests", task_class="tests"), 1.0)
        with httpx.Client(timeout=30) as http:
            answer = http.post(
                f"{access.base_url}/chat/completions",
                json={"model": access.model, "messages": [{"role": "user", "content": "add tests"}]},
                headers={"authorization": f"Bearer {access.api_key.get_secret_value()}"},
            )
        assert reply.decision.mode == "cloud" and reply.usage.cost_usd > 0
        assert answer.status_code == 200 and answer.json()["model"] == "mistral"
        assert [r.path for r in sandbox.llm.completions()] == ["/v1/chat/completions", "/api/chat"]
        assert sandbox.gateway.run_cost_usd("demo") == pytest.approx(reply.usage.cost_usd)
