"""Streams to OpenAI-compatible backends (OpenRouter, llama.cpp) relayed as the provider's bytes: over real HTTP,
client → gateway service → the stand-in, which records what it sent (``sent_stream``) and what it was asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptship.adapters.llm import LiteLLMGateway
from promptship.domain.routing import RoutingPolicy
from promptship.servers.gateway import create_gateway_app
from promptship.store.ledger import LLMCallRow, LLMReservationRow
from promptship_sandbox.llm_server import LLMStandIn, ToolCall, serve_asgi
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway

SECRET = "AKIA" + "ZXCVBNMLKJHGFDSA"  # an AWS access key id format
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
# A local llama.cpp group (the stand-in answers for it on /v1), priced so that its ledger cost is not 0.
LLAMACPP = """
models:
  smollm2:
    litellm_model: openai/smollm2-135m-instruct
    mode: local
    backend: llamacpp
    input_cost_per_token: 0.000001
    output_cost_per_token: 0.000002
classes: {sensitive: smollm2, tests: smollm2}
fallbacks: {smollm2: [llama3]}
"""
TEXT = "".join(f"piece{i:02d} " for i in range(24))  # 192 characters: 12 content chunks from the stand-in
TOOL_REPLY = [ToolCall("terminal", {"command": "pytest -q tests/test_app.py --maxfail=1"})]


class Service:
    def __init__(self, gateway: LiteLLMGateway, base_url: str):
        self.gateway = gateway
        self.base_url = base_url

    def key_for(self, run_key: str, task_class: Any = "complex_code", budget_usd: float = 5.0) -> str:
        decision = self.gateway.route("Implement the feature", task_class=task_class)
        return self.gateway.agent_access(run_key, decision, budget_usd).api_key.get_secret_value()

    def stream(self, key: str, body: dict[str, Any]) -> tuple[int, bytes]:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            with http.stream(
                "POST",
                "/v1/chat/completions",
                json={**body, "stream": True},
                headers={"authorization": f"Bearer {key}"},
            ) as response:
                return response.status_code, b"".join(response.iter_bytes())

    def rows(self, run_key: str) -> list[LLMCallRow]:
        with Session(self.gateway.ledger.engine) as session:
            return list(session.scalars(select(LLMCallRow).where(LLMCallRow.run_key == run_key)))

    def open_reservations(self) -> int:
        with self.gateway.ledger.engine.connect() as conn:
            states = conn.execute(select(LLMReservationRow.state)).scalars()
            return sum(1 for s in states if s == "open")


def _serve(gateway: LiteLLMGateway) -> Iterator[Service]:
    with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as base_url:
        gateway.gateway_url = base_url
        yield Service(gateway, base_url)


@pytest.fixture
def service(llm: LLMStandIn, scanner, tmp_path) -> Iterator[Service]:
    policy = RoutingPolicy.from_yaml(LLAMACPP)
    yield from _serve(make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, llamacpp=True))


def _events(body: bytes) -> list[bytes]:
    """The SSE events of a body (the stand-in ends every event with a blank line)."""
    parts = body.split(b"\n\n")
    assert parts[-1] == b"", body[-200:]
    return [p + b"\n\n" for p in parts[:-1]]


def _json(event: bytes) -> dict[str, Any]:
    assert event.startswith(b"data: ")
    return json.loads(event.removeprefix(b"data: "))


def _completion_id(body: bytes) -> str:
    return _json(_events(body)[0])["id"]


def _content(events: list[bytes]) -> tuple[str, str, str]:
    """Text, tool-call names and tool-call arguments of a stream, concatenated."""
    text = names = arguments = ""
    for event in events:
        if event == b"data: [DONE]\n\n":
            continue
        for choice in _json(event).get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                names += call["function"].get("name") or ""
                arguments += call["function"].get("arguments") or ""
    return text, names, arguments


BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Implement the retry helper"}]}


@pytest.mark.parametrize(
    ("task_class", "upstream_model"), [("complex_code", "openai/gpt-4o"), ("tests", "smollm2-135m-instruct")]
)
@pytest.mark.parametrize("reply", [TEXT, TOOL_REPLY], ids=["text", "tool_call"])
def test_a_pass_through_stream_is_the_providers_events_byte_for_byte(
    service: Service, llm: LLMStandIn, task_class: str, upstream_model: str, reply: Any
) -> None:
    key = service.key_for(f"run-bytes-{task_class}", task_class=task_class)
    llm.script(upstream_model, [reply])
    status, relayed = service.stream(key, {**BODY, "tools": TOOLS})
    assert status == 200

    sent = _events(llm.sent_stream(_completion_id(relayed)))
    got = _events(relayed)
    # every event the provider sent, byte for byte and in order, but its usage chunk: replaced by the ledger's
    assert _json(sent[-2])["choices"] == [] and "usage" in _json(sent[-2])
    assert got[:-2] == sent[:-2]
    assert got[-1] == sent[-1] == b"data: [DONE]\n\n"
    ours = _json(got[-2])
    assert ours["choices"] == [] and ours["id"] == _json(sent[-2])["id"]

    # and the content is what a client streaming straight from the provider gets
    llm.script(upstream_model, [reply])
    direct = httpx.post(
        f"{llm.base_url}/v1/chat/completions",
        json={**BODY, "model": upstream_model, "tools": TOOLS, "stream": True},
        timeout=30,
    )
    assert _content(got) == _content(_events(direct.content))
    assert _content(got)[0] == (reply if isinstance(reply, str) else "")


@pytest.mark.parametrize(
    ("task_class", "upstream_model", "mode"),
    [("complex_code", "openai/gpt-4o", "cloud"), ("tests", "smollm2-135m-instruct", "local")],
)
def test_the_ledger_row_has_the_final_chunks_usage_and_the_cost_the_litellm_path_records(
    llm: LLMStandIn, scanner, tmp_path, task_class: str, upstream_model: str, mode: str
) -> None:
    recorded: dict[bool, tuple[Any, ...]] = {}
    for passthrough in (True, False):
        policy = RoutingPolicy.from_yaml(LLAMACPP)
        ledger = make_ledger(tmp_path / str(passthrough))
        gateway = make_gateway(
            llm,
            scanner,
            ledger,
            policy=policy,
            llamacpp=True,
            stream_passthrough=passthrough,
            local_cost_per_1k_tokens_usd=0.01,
        )
        for service in _serve(gateway):
            key = service.key_for("run-ledger", task_class=task_class)
            llm.script(upstream_model, [TEXT])
            status, relayed = service.stream(key, BODY)
            assert status == 200
            [row] = service.rows("run-ledger")
            assert service.open_reservations() == 0
            client_usage = _json(_events(relayed)[-2])["usage"]
            if passthrough:
                upstream_usage = _json(_events(llm.sent_stream(_completion_id(relayed)))[-2])["usage"]
                assert (row.prompt_tokens, row.completion_tokens) == (
                    upstream_usage["prompt_tokens"],
                    upstream_usage["completion_tokens"],
                )
                if mode == "cloud":  # OpenRouter's reported cost is what is recorded
                    assert row.cost_usd == pytest.approx(upstream_usage["cost"])
            assert row.mode == mode and row.cost_usd > 0 and not row.cost_missing and (row.latency_ms or 0) > 0
            assert client_usage["cost"] == pytest.approx(row.cost_usd)
            assert client_usage["completion_tokens"] == row.completion_tokens
            recorded[passthrough] = (row.model, row.prompt_tokens, row.completion_tokens, round(row.cost_usd, 12))
    assert recorded[True] == recorded[False]


def test_a_stream_without_usage_counts_its_chunks_and_is_flagged(service: Service, llm: LLMStandIn) -> None:
    key = service.key_for("run-count")
    llm.omit_stream_usage("openai/gpt-4o")
    llm.script("openai/gpt-4o", [TEXT])
    status, relayed = service.stream(key, BODY)
    assert status == 200
    sent = _events(llm.sent_stream(_completion_id(relayed)))
    assert not any("usage" in _json(e) for e in sent[:-1])
    content_chunks = sum(1 for e in sent[:-1] if _json(e)["choices"])
    [row] = service.rows("run-count")
    assert row.completion_tokens == content_chunks == 14  # role chunk, 12 pieces, finish chunk
    assert row.prompt_tokens > 0 and row.cost_usd > 0 and row.cost_missing
    usage = _json(_events(relayed)[-2])["usage"]
    assert usage["cost_missing"] is True and usage["cost"] == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("how", ["drop", "error"])
@pytest.mark.parametrize("passthrough", [True, False], ids=["pass_through", "litellm"])
def test_a_provider_failing_mid_stream_ends_with_an_error_event_and_is_recorded_failed(
    llm: LLMStandIn, scanner, tmp_path, how: str, passthrough: bool
) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), max_retries=0, stream_passthrough=passthrough)
    for service in _serve(gateway):
        key = service.key_for("run-broken")
        llm.script("openai/gpt-4o", [TEXT])
        llm.break_next_stream(5, how, model="openai/gpt-4o")  # type: ignore[arg-type]
        status, relayed = service.stream(key, BODY)
        assert status == 200  # the headers were sent before the provider broke off

        events = _events(relayed)
        error = _json(events[-1])["error"]
        assert error["type"] == "upstream_error" and "gpt-4o" in error["message"]
        assert b"[DONE]" not in relayed
        texts = [_content([e])[0] for e in events[:-1]]
        assert "".join(texts) == TEXT[: 16 * 4]  # the role chunk and 4 pieces came before the break
        [row] = service.rows("run-broken")
        assert "FAILED: stream broke off" in (row.route_reason or "")
        assert row.cost_missing and row.cost_usd > 0  # what the provider may charge is counted
        assert service.open_reservations() == 0
        assert gateway.run_cost_usd("run-broken") == pytest.approx(row.cost_usd)


def test_a_sensitive_prompt_never_reaches_a_cloud_deployment_on_the_pass_through(
    service: Service, llm: LLMStandIn
) -> None:
    key = service.key_for("run-secret")  # the run's decision: complex_code → gpt-4o (cloud, pass-through)
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": f"deploy with {SECRET}"}]}
    status, relayed = service.stream(key, body)
    assert status == 200 and relayed.endswith(b"data: [DONE]\n\n")
    [sent] = llm.completions()
    assert sent.model == "smollm2-135m-instruct" and sent.headers["x-llm-mode"] == "local"
    assert _events(relayed)[:-2] == _events(llm.sent_stream(_completion_id(relayed)))[:-2]

    service.gateway.local_available = False
    status, refused = service.stream(key, body)
    assert status == 403 and json.loads(refused)["error"]["type"] == "sensitive_data_blocked"
    assert len(llm.completions()) == 1
    assert not any(r.contains(SECRET) for r in llm.completions() if r.headers.get("x-llm-mode") == "cloud")


def test_an_exceeded_budget_still_refuses_or_reroutes_a_pass_through_stream(llm: LLMStandIn, scanner, tmp_path) -> None:
    refuse = make_gateway(llm, scanner, make_ledger(tmp_path / "a"), over_budget="refuse", default_max_tokens=1000)
    for service in _serve(refuse):
        key = service.key_for("run-poor", budget_usd=0.001)  # one gpt-4o stream may cost up to ~0.01 USD
        status, refused = service.stream(key, BODY)
        assert status == 402 and json.loads(refused)["error"]["type"] == "budget_exceeded"
        assert llm.completions() == [] and service.rows("run-poor") == []

    # an unpriced local group (the run cap counts local prices too), first in gpt-4o's fallback chain
    policy = RoutingPolicy.from_yaml(
        "models: {smollm2: {litellm_model: openai/smollm2-135m-instruct, mode: local, backend: llamacpp}}\n"
        "fallbacks: {gpt-4o: [smollm2]}"
    )
    reroute = make_gateway(
        llm, scanner, make_ledger(tmp_path / "b"), policy=policy, llamacpp=True, default_max_tokens=1000
    )
    for service in _serve(reroute):
        key = service.key_for("run-poor", budget_usd=0.001)
        status, relayed = service.stream(key, BODY)
        assert status == 200
        [sent] = llm.completions()
        assert sent.model == "smollm2-135m-instruct" and sent.headers["x-llm-mode"] == "local"
        [row] = service.rows("run-poor")
        assert row.mode == "local" and "over budget" in (row.route_reason or "")


@pytest.mark.parametrize(("task_class", "mode"), [("complex_code", "cloud"), ("tests", "local")])
def test_the_pass_through_sends_the_request_litellm_sends(
    llm: LLMStandIn, scanner, tmp_path, task_class: str, mode: str
) -> None:
    body = {
        **BODY,
        "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "run the tests"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "terminal", "arguments": '{"command":"ls"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "app.py tests"},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 300,
        "seed": 7,
    }
    asked: dict[bool, Any] = {}
    for passthrough in (True, False):
        gateway = make_gateway(
            llm,
            scanner,
            make_ledger(tmp_path / str(passthrough)),
            policy=RoutingPolicy.from_yaml(LLAMACPP),
            llamacpp=True,
            stream_passthrough=passthrough,
        )
        for service in _serve(gateway):
            llm.reset()
            status, _ = service.stream(service.key_for("run-req", task_class=task_class), body)
            assert status == 200
            [sent] = llm.completions()
            asked[passthrough] = (sent.path, sent.body, sent.headers["authorization"], sent.headers["x-llm-mode"])
    assert asked[True] == asked[False]
    assert asked[True][3] == mode and asked[True][1]["stream_options"] == {"include_usage": True}


def test_a_failed_connect_is_retried_then_falls_back_like_litellms(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), max_retries=1)
    for service in _serve(gateway):
        key = service.key_for("run-retry")
        llm.fail_next(3, 503, model="openai/gpt-4o")  # both attempts on gpt-4o, then the first one of the next call
        status, relayed = service.stream(key, BODY)
        assert status == 200 and relayed.endswith(b"data: [DONE]\n\n")
        assert [r.model for r in llm.completions()] == ["openai/gpt-4o", "openai/gpt-4o", "anthropic/claude-3.5-sonnet"]
        [row] = service.rows("run-retry")
        assert row.model == "claude-3.5-sonnet" and row.fallback_used

        llm.reset()
        llm.fail_next(1, 503, model="openai/gpt-4o")
        status, relayed = service.stream(key, BODY)
        assert status == 200 and [r.model for r in llm.completions()] == ["openai/gpt-4o", "openai/gpt-4o"]
        assert _events(relayed)[:-2] == _events(llm.sent_stream(_completion_id(relayed)))[:-2]
