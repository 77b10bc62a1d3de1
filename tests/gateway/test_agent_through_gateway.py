"""The real OpenHands agent-server with its ``base_url`` on the gateway service: the agent's own LLM traffic is
routed, gated, costed and attributed to its run like every other call (the stand-in plays the providers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.instructions import agent_instruction
from promptship.domain.request import DevRequest
from promptship.servers.gateway import create_gateway_app
from promptship.settings import LLMSettings
from promptship_sandbox.llm_server import LLMStandIn, ToolCall, serve_asgi
from tests.gateway.helpers import OPENROUTER_TEST_KEY, cloud_requests, local_requests, make_gateway, make_ledger
from tests.openhands.conftest import Checkout, agent, agent_server, checkout, git  # noqa: F401  (fixtures)
from tests.openhands.test_agent_server import script_feature

pytestmark = [pytest.mark.gateway, pytest.mark.openhands]


def _reasons(gateway) -> list[str | None]:
    """Why each recorded call went where it went (for a failing assertion's message)."""
    from sqlalchemy import select

    from promptship.store.ledger import LLMCallRow

    with gateway.ledger.engine.connect() as conn:
        return [row.route_reason for row in conn.execute(select(LLMCallRow))]


@pytest.fixture
def gateway(llm: LLMStandIn, scanner, tmp_path) -> Iterator:
    gw = make_gateway(llm, scanner, make_ledger(tmp_path), allow_values=LLMSettings().gate_allowlist)
    with serve_asgi(create_gateway_app(gw, gw.ledger)) as url:
        gw.gateway_url = url
        yield gw


def test_the_agents_calls_go_through_the_gateway(agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout, gateway):  # noqa: F811
    request = DevRequest(prompt="Expose the service version", repository="demo/greet")
    decision = gateway.route(request.prompt, task_class="complex_code")
    access = gateway.agent_access(checkout.run_key, decision, 1.0)
    instruction = agent_instruction(request, "make test", branch=checkout.branch)
    script_feature(llm, checkout, model="openai/gpt-4o")

    handle = agent.start(checkout.task(instruction, max_iterations=20), access)
    result = agent.result(handle, timeout_s=180)

    assert result.verdict == "finished", result.error
    calls = llm.completions()
    # the OpenHands system prompt and our own branch name did not trip the gate: the run's cloud model answered
    assert len(cloud_requests(llm)) == 6 and local_requests(llm) == [], _reasons(gateway)
    # upstream saw our provider key, never the run's key; every call said it was a cloud call
    assert {r.headers["authorization"] for r in calls} == {f"Bearer {OPENROUTER_TEST_KEY}"}
    assert {r.headers["x-llm-mode"] for r in calls} == {"cloud"}
    # the ledger holds the run's calls, and the agent's own cost agrees with it
    assert gateway.ledger.totals("model", run_key=checkout.run_key).keys() == {"gpt-4o"}
    assert gateway.run_cost_usd(checkout.run_key) == pytest.approx(result.usage.cost_usd, rel=1e-6)
    assert git(checkout.path, "rev-list", "--count", f"{checkout.base_sha}..HEAD") == "1"


def test_a_secret_the_agent_reads_moves_the_rest_of_the_run_local(
    agent: OpenHandsAgent,  # noqa: F811
    llm: LLMStandIn,
    checkout: Checkout,  # noqa: F811
    gateway,
) -> None:
    secret = "AKIA" + "ZXCVBNMASDFGHJKL"
    (checkout.path / "deploy.env").write_text(f"AWS_ACCESS_KEY_ID={secret}\n")
    decision = gateway.route("Fix the deploy script", task_class="complex_code")
    access = gateway.agent_access(checkout.run_key, decision, 1.0)
    llm.script("openai/gpt-4o", [[ToolCall("terminal", {"command": "cat deploy.env"})]])
    llm.script("llama3", [[ToolCall("finish", {"message": "read it"})]])

    handle = agent.start(checkout.task("Fix the deploy script", max_iterations=5), access)
    result = agent.result(handle, timeout_s=120)

    assert result.verdict == "finished", result.error
    assert [r.model for r in llm.completions()] == ["openai/gpt-4o", "llama3"], _reasons(gateway)
    assert not any(r.contains(secret) for r in cloud_requests(llm))
    assert local_requests(llm)[0].contains(secret)  # the tool result went to the local model only
