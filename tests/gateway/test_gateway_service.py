"""The gateway service over real HTTP: OpenAI-compatible clients (openai SDK, LiteLLM, raw httpx SSE) → service
→ LiteLLM → the stand-in. What reached 'the cloud' is read from the stand-in's request log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptship.adapters.llm import LiteLLMGateway
from promptship.domain.routing import RoutingPolicy
from promptship.servers.gateway import create_gateway_app
from promptship_sandbox.llm_server import LLMStandIn, ToolCall, serve_asgi
from tests.gateway.helpers import cloud_requests, local_requests, make_gateway, make_ledger, validate_openai_exchange

pytestmark = pytest.mark.gateway

SECRET = "AKIA" + "QWERTYUIOPASDFGH"  # an AWS access key id format
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "terminal",
            "description": "run a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
]


class Service:
    def __init__(self, gateway: LiteLLMGateway, base_url: str):
        self.gateway = gateway
        self.base_url = base_url

    def key_for(self, run_key: str, task_class: Any = "complex_code", budget_usd: float = 5.0) -> str:
        decision = self.gateway.route("Implement the feature", task_class=task_class)
        return self.gateway.agent_access(run_key, decision, budget_usd).api_key.get_secret_value()


def _serve(gateway: LiteLLMGateway) -> Iterator[Service]:
    with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as base_url:
        gateway.gateway_url = base_url
        yield Service(gateway, base_url)


@pytest.fixture
def service(llm: LLMStandIn, scanner, tmp_path) -> Iterator[Service]:
    yield from _serve(make_gateway(llm, scanner, make_ledger(tmp_path)))


def _sse_events(response: httpx.Response) -> list[Any]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_unknown_or_missing_key_is_401(service: Service, llm: LLMStandIn) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=service.base_url) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 401
        bad = http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer psk-run-nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "invalid_api_key"
        assert http.get("/v1/models").status_code == 401
    assert llm.requests == []


def test_openai_sdk_call_is_routed_costed_and_attributed(service: Service, llm: LLMStandIn) -> None:
    import openai

    key = service.key_for("run-a")
    client = openai.OpenAI(base_url=service.base_url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "Implement a retry helper"}],
        extra_headers={"x-promptship-step": "generate_code"},
    )
    models = {m.id for m in client.models.list()}

    assert reply.model == "gpt-4o"
    [sent] = cloud_requests(llm)
    assert sent.model == "openai/gpt-4o" and sent.headers["x-llm-mode"] == "cloud"
    cost = (reply.usage.model_extra or {})["cost"] if reply.usage else 0
    assert cost > 0
    assert service.gateway.run_cost_usd("run-a") == pytest.approx(cost)
    assert service.gateway.ledger.totals("step", run_key="run-a") == {"generate_code": pytest.approx(cost)}
    assert {"gpt-4o", "mistral", "llama3"} <= models


def test_streaming_tool_calls_through_the_service(service: Service, llm: LLMStandIn) -> None:
    key = service.key_for("run-s")
    args = {"command": "pytest -q tests/test_app.py"}
    llm.script("openai/gpt-4o", [[ToolCall("terminal", args)]])
    body = {
        "model": "openai/gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "run the tests"}],
        "tools": TOOLS,
    }
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _sse_events(response)

    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1]]
    name = "".join(
        tc["function"].get("name") or ""
        for c in chunks
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls") or []
    )
    arguments = "".join(
        tc["function"].get("arguments") or ""
        for c in chunks
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls") or []
    )
    assert name == "terminal" and json.loads(arguments) == args
    assert any(ch.get("finish_reason") == "tool_calls" for c in chunks for ch in c["choices"])
    usage = chunks[-1]["usage"]
    assert usage["cost"] > 0 and usage["completion_tokens"] > 0 and "cost_missing" not in usage
    assert service.gateway.run_cost_usd("run-s") == pytest.approx(usage["cost"])


def test_litellm_client_streams_text_through_the_service(service: Service, llm: LLMStandIn) -> None:
    import litellm

    key = service.key_for("run-l", task_class="tests")
    stream = litellm.completion(
        model="openai/mistral",
        api_base=service.base_url + "/v1",
        api_key=key,
        messages=[{"role": "user", "content": "write tests for app.py"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)  # type: ignore[union-attr]
    assert text == "[mistral] write tests for app.py"
    assert [r.path for r in llm.completions()] == ["/api/chat"]
    assert llm.completions()[0].headers["x-llm-mode"] == "local"


@pytest.mark.parametrize("where", ["tool_call_argument", "tool_result", "system_prompt"])
def test_a_secret_anywhere_in_the_agent_conversation_never_reaches_the_cloud(
    service: Service, llm: LLMStandIn, where: str
) -> None:
    key = service.key_for("run-x")  # the run's decision: complex_code → gpt-4o (cloud)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "Fix the deployment script"},
    ]
    call = {"id": "call_1", "type": "function", "function": {"name": "terminal", "arguments": '{"command": "ls"}'}}
    result = "deploy.sh README.md"
    if where == "tool_call_argument":
        call["function"]["arguments"] = json.dumps({"command": f"export AWS_ACCESS_KEY_ID={SECRET}"})
    elif where == "tool_result":
        result = f"aws_access_key_id = {SECRET}"
    else:
        messages[0]["content"] += f" Use the key {SECRET} when deploying."
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        for stream in (False, True):
            response = http.post(
                "/v1/chat/completions",
                json={"model": "openai/gpt-4o", "messages": messages, "tools": TOOLS, "stream": stream},
                headers={"authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200

    assert not any(r.contains(SECRET) for r in cloud_requests(llm))
    assert cloud_requests(llm) == []
    assert [r.model for r in local_requests(llm)] == ["llama3", "llama3"]
    assert all(r.headers["x-llm-mode"] == "local" for r in local_requests(llm))


def test_a_secret_on_a_fallback_path_never_reaches_the_cloud(llm: LLMStandIn, scanner, tmp_path) -> None:
    policy = RoutingPolicy.from_yaml("fallbacks: {llama3: [claude-3.5-sonnet, gpt-4o, codellama]}")
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, max_retries=0)
    for service in _serve(gateway):
        key = service.key_for("run-f")
        llm.fail_next(1, 503, model="llama3")
        body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": f"use {SECRET} to deploy"}]}
        with httpx.Client(base_url=service.base_url, timeout=30) as http:
            response = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert cloud_requests(llm) == []
        assert [r.model for r in local_requests(llm)] == ["llama3", "codellama"]

        gateway.local_available = False
        with httpx.Client(base_url=service.base_url, timeout=30) as http:
            refused = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "sensitive_data_blocked"
        assert cloud_requests(llm) == []


def test_run_budget_is_enforced_through_the_service(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), over_budget="refuse", default_max_tokens=1000)
    for service in _serve(gateway):
        key = service.key_for("run-b", budget_usd=0.001)  # one gpt-4o call may cost up to ~0.01 USD
        body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Implement it"}]}
        with httpx.Client(base_url=service.base_url, timeout=30) as http:
            response = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 402 and response.json()["error"]["type"] == "budget_exceeded"
        assert llm.completions() == []


def test_streaming_tool_calls_from_a_local_model(service: Service, llm: LLMStandIn) -> None:
    import openai

    key = service.key_for("run-t", task_class="tests")
    args = {"command": "create", "path": "/w/test_app.py", "file_text": "def test_ok():\n    assert True\n"}
    llm.script("mistral", [[ToolCall("file_editor", args), ToolCall("finish", {"message": "done"})]])
    client = openai.OpenAI(base_url=service.base_url + "/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="openai/mistral",
        messages=[{"role": "user", "content": "write a test"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        # what an agent's LiteLLM typically adds; Ollama lacks some of them
        tool_choice="auto",
        parallel_tool_calls=False,
        max_completion_tokens=512,
        temperature=0.0,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
    assert finish == "tool_calls"
    assert [c["name"] for _, c in sorted(calls.items())] == ["file_editor", "finish"]
    assert json.loads(calls[0]["arguments"]) == args


@pytest.mark.parametrize("task_class", ["complex_code", "tests"])
def test_service_answers_validate_against_the_openai_types(service: Service, llm: LLMStandIn, task_class) -> None:
    key = service.key_for(f"run-v-{task_class}", task_class=task_class)
    llm.script("*", ["plain text", [ToolCall("terminal", {"command": "ls"})], [ToolCall("finish")], "streamed"])
    body = {"model": "openai/any", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    headers = {"authorization": f"Bearer {key}"}
    validate_openai_exchange(service.base_url, "/v1/chat/completions", headers, body)
    validate_openai_exchange(service.base_url, "/v1/chat/completions", headers, body)


def test_agent_boilerplate_allowlisted_but_real_secrets_still_local(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), allow_values=["openhands@all-hands.dev"])
    system = 'Use "openhands" as the user.name and "openhands@all-hands.dev" as the user.email when committing.'
    for service in _serve(gateway):
        key = service.key_for("run-o")
        headers = {"authorization": f"Bearer {key}"}
        body = {"model": "x", "messages": [{"role": "system", "content": system}, {"role": "user", "content": "go"}]}
        with httpx.Client(base_url=service.base_url, timeout=30) as http:
            public = http.post("/v1/chat/completions", json=body, headers=headers)
            body["messages"][1]["content"] = "also mail the report to jane.doe@acme-corp.com"
            private = http.post("/v1/chat/completions", json=body, headers=headers)
        assert public.status_code == private.status_code == 200
        assert public.json()["model"] == "gpt-4o" and private.json()["model"] == "llama3"
        assert [r.model for r in llm.completions()] == ["openai/gpt-4o", "llama3"]
        assert not cloud_requests(llm)[0].contains("jane.doe")
        cost = float(public.headers["x-litellm-response-cost"])
        assert cost > 0 and gateway.run_cost_usd("run-o") == pytest.approx(cost)


def test_a_stream_without_usage_is_recorded_at_its_estimate_and_flagged(service: Service, llm: LLMStandIn) -> None:
    key = service.key_for("run-u")
    llm.omit_stream_usage("openai/gpt-4o")
    body = {"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Implement it"}]}
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response:
            events = _sse_events(response)
    usage = events[-2]["usage"]
    assert usage["cost_missing"] is True and usage["cost"] > 0
    assert service.gateway.ledger.missing_cost_calls("run-u") == 1
    assert service.gateway.run_cost_usd("run-u") == pytest.approx(usage["cost"])


def test_a_stream_relays_every_provider_chunk_as_its_own_event(service: Service, llm: LLMStandIn) -> None:
    # The relay may send what is ready as one write, never as one event: the client sees the provider's chunks.
    key = service.key_for("run-c")
    text = "".join(f"word{i:03d} " for i in range(40))  # 320 characters: 20 chunks of 16 from the stand-in
    llm.script("openai/gpt-4o", [text])
    body = {"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Implement it"}]}
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response:
            events = _sse_events(response)
    deltas = [ch["delta"].get("content") for e in events[:-1] for ch in e["choices"] if ch["delta"].get("content")]
    assert len(deltas) == 20 and "".join(deltas) == text
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] > 0
    assert service.gateway.run_cost_usd("run-c") == pytest.approx(events[-2]["usage"]["cost"])


def test_a_client_that_goes_away_mid_stream_still_leaves_the_call_in_the_ledger(
    service: Service, llm: LLMStandIn
) -> None:
    key = service.key_for("run-g")
    llm.script("openai/gpt-4o", ["x" * 16 * 400])  # 400 chunks: more than the relay reads ahead
    body = {"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Implement it"}]}
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response:
            assert next(response.iter_lines()).startswith("data: ")
    # recorded once the relay has seen the client go; the estimate (flagged) or, if it had read it all, the usage
    deadline = time.monotonic() + 10
    while service.gateway.run_cost_usd("run-g") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    usage = service.gateway.ledger.run_usage("run-g")
    assert usage.cost_usd > 0 and (usage.cost_missing or usage.completion_tokens > 0)
