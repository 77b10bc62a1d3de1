"""The real agent-server whose every LLM call goes through promptship's gateway service (per-run key, ledger).

agent-server ──(Bearer psk-run-…)──▶ gateway service (LiteLLMGateway: policy, gate, ledger)
             ──(OpenRouter key)──▶ LLM stand-in (scripted tool calls, reports usage.cost like OpenRouter)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.gate import GateResult
from promptship.domain.results import AgentResult, RouteDecision
from promptship.servers.gateway import create_gateway_app
from promptship.store.ledger import CostLedger
from promptship_sandbox.llm_server import LLMStandIn, ToolCall, serve_asgi
from promptship_sandbox.net import free_port
from tests.gateway.helpers import OPENROUTER_TEST_KEY, make_gateway, make_ledger
from tests.openhands.conftest import Checkout, git

pytestmark = [pytest.mark.openhands, pytest.mark.gateway]


@pytest.fixture(scope="module")
def scanner() -> Iterator[object]:
    from promptship.adapters.detectors import SensitiveDataScanner

    with SensitiveDataScanner() as s:
        yield s


class NothingSensitive:
    """A gate that finds nothing: the cloud path, where the provider reports a real cost."""

    def scan(self, text: str) -> GateResult:
        return GateResult(sensitive=False, findings=())

    def scan_messages(self, messages: object, tools: object = None) -> GateResult:
        return GateResult(sensitive=False, findings=())


def run_through_gateway(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout, scanner: object, tmp_path: Path
) -> tuple[AgentResult, CostLedger, RouteDecision, str]:
    port = free_port()
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger, gateway_url=f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
    decision = gateway.route("Implement the version endpoint in Python with tests", task_class="complex_code")
    root = checkout.path
    llm.script(
        "*",
        [
            [ToolCall("file_editor", {"command": "create", "path": f"{root}/app/v.py", "file_text": "V = 1\n"})],
            [ToolCall("terminal", {"command": "git add -A && git commit -qm 'add v'"})],
            [ToolCall("finish", {"message": "done"})],
        ],
    )
    with serve_asgi(create_gateway_app(gateway, gateway.ledger), port):
        access = gateway.agent_access(checkout.run_key, decision, 1.0)
        spec = gateway.policy.models[decision.model]
        if access.input_cost_per_token is None:  # until agent_access hands over the group's prices itself
            access = access.model_copy(
                update={
                    "input_cost_per_token": spec.input_cost_per_token,
                    "output_cost_per_token": spec.output_cost_per_token,
                }
            )
        task = checkout.task("Add V", max_iterations=10).model_copy(update={"model": access.model})
        result = agent.result(agent.start(task, access), timeout_s=120)
    assert result.verdict == "finished", result.error
    assert git(root, "rev-list", "--count", f"{checkout.base_sha}..HEAD") == "1"
    return result, ledger, decision, access.api_key.get_secret_value()


def test_every_agent_call_goes_through_the_gateway(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout, scanner: object, tmp_path: Path
) -> None:
    result, ledger, _, run_key_value = run_through_gateway(agent, llm, checkout, scanner, tmp_path)
    provider_calls = llm.completions()
    assert len(provider_calls) == 3
    for call in provider_calls:
        # sent by the gateway: to Ollama's API, or to "OpenRouter" with the provider key — never the run key
        assert call.path == "/api/chat" or call.headers.get("authorization") == f"Bearer {OPENROUTER_TEST_KEY}"
        assert run_key_value not in call.raw and run_key_value not in str(call.headers)
    # the ledger holds every call of the run, with the tokens the agent counted
    ledger_usage = ledger.run_usage(checkout.run_key)
    assert (ledger_usage.prompt_tokens, ledger_usage.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )


def test_the_agents_cost_and_the_gateways_ledger_agree(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout, tmp_path: Path
) -> None:
    result, ledger, decision, _ = run_through_gateway(agent, llm, checkout, NothingSensitive(), tmp_path)
    assert decision.mode == "cloud"
    assert all(c.headers.get("authorization") == f"Bearer {OPENROUTER_TEST_KEY}" for c in llm.completions())
    assert result.usage.cost_usd > 0
    assert ledger.run_cost_usd(checkout.run_key) == pytest.approx(result.usage.cost_usd, rel=1e-6, abs=1e-9)
