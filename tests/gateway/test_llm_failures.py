"""How the LLM adapter fails: the requests a failing provider receives, counted where they arrive, and what a
failure inside LiteLLM's own provider code becomes (through the real LiteLLM, the gateway service, the ledger).

Connection faults are made by the fault proxy (``promptship_sandbox.faultproxy``) in front of the LLM stand-in;
the answers LiteLLM cannot read are real HTTP answers of a small provider below (no monkeypatching): an Ollama
``/api/chat`` whose ``message`` is a string, an OpenAI-compatible answer whose ``usage`` is a string."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints, vendor_failure
from promptship.domain.results import LLMCall, LLMMessage
from promptship.domain.routing import RoutingPolicy
from promptship.errors import LLMError
from promptship.servers.gateway import create_gateway_app
from promptship.store.ledger import CostLedger, LLMCallRow, LLMReservationRow
from promptship_sandbox.faultproxy import FaultKind, FaultProxy, running_fault_proxy
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from tests.gateway.helpers import OPENROUTER_TEST_KEY, make_gateway, make_ledger

pytestmark = pytest.mark.gateway

PROMPT = "Implement the retry budget for the exporter (marker 7c1f)"
MAX_RETRIES = 2  # not the default (3): the counts below follow the setting, not a constant
# The default policy's chains (``domain.routing.RoutingPolicy.default``): a cloud call falls back along its
# fallbacks, then to the local groups; a local one along its local fallbacks.
CLOUD_CHAIN = ["gpt-4o", "claude-3.5-sonnet", "codellama", "mistral", "llama3"]
LOCAL_CHAIN = ["llama3", "mistral", "codellama"]


def _call(task_class: Any, run_key: str = "run-f") -> LLMCall:
    return LLMCall(
        run_key=run_key, step="route", task_class=task_class, messages=(LLMMessage(role="user", content=PROMPT),)
    )


def _gateway(ledger: CostLedger, scanner, base_url: str, **kw: Any) -> LiteLLMGateway:
    """The real adapter with every provider at ``base_url``, ``MAX_RETRIES`` retries unless told otherwise."""
    return make_gateway(base_url, scanner, ledger, max_retries=kw.pop("max_retries", MAX_RETRIES), timeout_s=10, **kw)


def _rows(ledger: CostLedger, run_key: str) -> list[LLMCallRow]:
    with Session(ledger.engine) as session:
        return list(session.scalars(select(LLMCallRow).where(LLMCallRow.run_key == run_key)))


def _open_reservations(ledger: CostLedger) -> int:
    with ledger.engine.connect() as conn:
        return sum(1 for s in conn.execute(select(LLMReservationRow.state)).scalars() if s == "open")


def _completions_seen(proxy: FaultProxy) -> int:
    """Completion requests the proxy took (a refused connection has no path yet: it counts too)."""
    return sum(1 for s in proxy.seen if s.path in ("", "/api/chat", "/v1/chat/completions"))


@pytest.fixture
def proxied(llm: LLMStandIn) -> Iterator[FaultProxy]:
    with running_fault_proxy(llm.base_url, name="llm") as proxy:
        yield proxy


# ---- the bound: (1 + max_retries) requests per model group of the chain --------------------------------------
@pytest.mark.parametrize(
    ("kind", "task_class", "chain"),
    [
        ("refuse", "complex_code", CLOUD_CHAIN),
        ("reset", "complex_code", CLOUD_CHAIN),
        ("http_503", "complex_code", CLOUD_CHAIN),
        ("refuse", "sensitive", LOCAL_CHAIN),
    ],
)
def test_a_failing_provider_gets_one_plus_max_retries_requests_per_group(
    proxied: FaultProxy, llm: LLMStandIn, scanner, tmp_path, kind: FaultKind, task_class: str, chain: list[str]
) -> None:
    ledger = make_ledger(tmp_path)
    gateway = _gateway(ledger, scanner, proxied.url)
    proxied.inject(kind, count=1000)

    with pytest.raises(LLMError) as info:
        gateway.complete(_call(task_class))

    bound = (1 + MAX_RETRIES) * len(chain)
    assert _completions_seen(proxied) == bound == proxied.fired[kind]
    assert llm.completions() == []  # nothing got through the proxy
    assert not info.value.retryable and f"after {bound} attempts" in str(info.value)  # the step layer adds none
    assert _rows(ledger, "run-f") == [] and _open_reservations(ledger) == 0  # nothing answered: nothing charged


def test_a_connection_error_is_retried_by_promptship_alone(proxied: FaultProxy, llm: LLMStandIn, scanner, tmp_path):
    """One group, no fallback: the refused connections are exactly ours (1 + max_retries), neither LiteLLM's
    nor the OpenAI SDK's retries add any; after the fault the same call is answered, charged once."""
    ledger = make_ledger(tmp_path)
    policy = RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}")
    gateway = _gateway(ledger, scanner, proxied.url, policy=policy, local_available=False, max_retries=3)
    proxied.inject("refuse", count=4)
    with pytest.raises(LLMError) as info:
        gateway.complete(_call("complex_code"))
    assert proxied.fired["refuse"] == 4 and "APIConnectionError" in str(info.value)

    reply = gateway.complete(_call("complex_code"))
    assert reply.decision.model == "gpt-4o" and len(llm.completions()) == 1
    [row] = _rows(ledger, "run-f")
    assert "FAILED" not in (row.route_reason or "")


class _Service:
    def __init__(self, gateway: LiteLLMGateway, base_url: str):
        self.gateway = gateway
        self.base_url = base_url

    def key_for(self, run_key: str, task_class: Any) -> str:
        decision = self.gateway.route("Implement the feature", task_class=task_class)
        return self.gateway.agent_access(run_key, decision, 5.0).api_key.get_secret_value()

    def post(self, key: str, body: dict[str, Any]) -> tuple[int, bytes]:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            with http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
            ) as response:
                return response.status_code, b"".join(response.iter_bytes())


def _serve(gateway: LiteLLMGateway) -> Iterator[_Service]:
    with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as url:
        gateway.gateway_url = url
        yield _Service(gateway, url)


@pytest.mark.parametrize(
    ("kind", "stream"), [("refuse", False), ("refuse", True), ("http_503", True)], ids=["whole", "stream", "stream-503"]
)
def test_through_the_service_one_agent_request_stays_within_the_bound(
    proxied: FaultProxy, scanner, tmp_path, kind: FaultKind, stream: bool
) -> None:
    """The agent's request through the gateway service to a refusing cloud: the same bound per request (the
    stream goes by the pass-through's own httpx request), a described 502, nothing charged."""
    ledger = make_ledger(tmp_path)
    for service in _serve(_gateway(ledger, scanner, proxied.url)):
        key = service.key_for("run-s", "complex_code")
        proxied.inject(kind, count=1000)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
        status, answer = service.post(key, body)

        assert status == 502, answer
        error = json.loads(answer)["error"]
        bound = (1 + MAX_RETRIES) * len(CLOUD_CHAIN)
        assert error["type"] == "upstream_error" and f"after {bound} attempts" in error["message"]
        assert _completions_seen(proxied) == bound
        assert _rows(ledger, "run-s") == [] and _open_reservations(ledger) == 0


# ---- LiteLLM failing inside its provider code ------------------------------------------------------------------
class UnreadableProvider:
    """An Ollama and OpenAI-compatible server whose 200 answers LiteLLM cannot read: Ollama's ``message`` a
    string (LiteLLM calls ``.get`` on it), OpenAI's ``usage`` a string. Counts the completion requests."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.app = Starlette(
            routes=[
                Route("/api/chat", self._ollama, methods=["POST"]),
                Route("/api/show", self._show, methods=["POST"]),
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
            ]
        )

    async def _ollama(self, request: Request) -> Response:
        body = await request.json()
        self.seen["/api/chat"] += 1
        answer = {"model": body.get("model"), "message": "not an object", "done": True, "done_reason": "stop"}
        if body.get("stream") is False:
            return JSONResponse(answer)
        return StreamingResponse(
            iter([json.dumps({**answer, "done": False}) + "\n"]), media_type="application/x-ndjson"
        )

    async def _show(self, request: Request) -> Response:
        return JSONResponse({"model_info": {}, "details": {}, "capabilities": ["completion"]})

    async def _openai(self, request: Request) -> Response:
        body = await request.json()
        self.seen["/v1/chat/completions"] += 1
        message = {"role": "assistant", "content": "hello"}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": "not an object",
            }
        )


@pytest.fixture
def unreadable() -> Iterator[tuple[UnreadableProvider, str]]:
    provider = UnreadableProvider()
    with serve_asgi(provider.app) as url:
        yield provider, url


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_answer_litellm_cannot_read_is_a_described_502_sent_once_and_recorded_failed(
    unreadable: tuple[UnreadableProvider, str], scanner, tmp_path, stream: bool
) -> None:
    provider, url = unreadable
    ledger = make_ledger(tmp_path)
    policy = RoutingPolicy.from_yaml("fallbacks: {llama3: []}")  # one group: what it does, once
    for service in _serve(_gateway(ledger, scanner, url, policy=policy)):
        key = service.key_for("run-u", "sensitive")
        body = {"model": "llama3", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
        status, answer = service.post(key, body)

        if stream:  # Ollama's stream is LiteLLM's: the headers are sent once the connection is made
            assert status == 200
            events = [line.removeprefix(b"data: ") for line in answer.split(b"\n\n") if line.startswith(b"data: ")]
            error = json.loads(events[-1])["error"]
            assert b"[DONE]" not in answer
        else:
            assert status == 502, answer
            error = json.loads(answer)["error"]
        assert error["type"] == "upstream_error"
        message = error["message"]
        assert "llama3" in message and "LiteLLM failed inside its provider code" in message
        assert "AttributeError" in message and "litellm." in message
        assert "marker 7c1f" not in message and "Traceback" not in message  # no request text, no traceback
        assert provider.seen["/api/chat"] == 1  # not retried: the same call would fail the same way
        [row] = _rows(ledger, "run-u")
        assert "FAILED" in (row.route_reason or "") and row.model == "llama3"
        assert _open_reservations(ledger) == 0


def test_a_cloud_answer_litellm_cannot_read_is_charged_once_at_the_estimate_and_falls_back(
    unreadable: tuple[UnreadableProvider, str], llm: LLMStandIn, scanner, tmp_path
) -> None:
    """OpenRouter answered (and may charge) what LiteLLM could not read: one FAILED row at the reservation's
    estimate, flagged; the local fallback answers and is charged once."""
    provider, url = unreadable
    ledger = make_ledger(tmp_path)
    policy = RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}")
    gateway = LiteLLMGateway(
        policy=policy,
        scanner=scanner,
        ledger=ledger,
        endpoints=ProviderEndpoints(
            ollama_base_url=llm.base_url,  # the local groups answer
            openrouter_base_url=url + "/v1",
            openrouter_api_key=SecretStr(OPENROUTER_TEST_KEY),
        ),
        gateway_url="http://127.0.0.1:9",
        sleep=lambda _s: None,
        max_retries=MAX_RETRIES,
    )
    reply = gateway.complete(_call("complex_code"))

    assert reply.fallback_used and reply.decision.mode == "local"
    assert provider.seen["/v1/chat/completions"] == 1
    failed, answered = sorted(_rows(ledger, "run-f"), key=lambda r: "FAILED" not in (r.route_reason or ""))
    assert failed.model == "gpt-4o" and "LiteLLM failed inside its provider code" in (failed.route_reason or "")
    assert failed.cost_missing and failed.cost_usd > 0
    assert answered.model == reply.decision.model and "FAILED" not in (answered.route_reason or "")
    assert gateway.run_cost_usd("run-f") == pytest.approx(failed.cost_usd + answered.cost_usd)
    assert _open_reservations(ledger) == 0


# Two request shapes the service's door let through, that LiteLLM fails on: a bare string as a content part
# (LiteLLM's prompt code calls .get on it before sending anything) and an audio part without its data (sent,
# answered, then LiteLLM's token counter refuses it itself, labelled APIConnectionError, HTTP 500). The door
# refuses both now (``chat_request_problem``); the adapter's own callers could still send them.
STRING_PART = [PROMPT]
AUDIO_WITHOUT_DATA = [{"type": "text", "text": PROMPT}, {"type": "input_audio"}]


def _agent_access(gateway: LiteLLMGateway, run_key: str, task_class: Any) -> Any:
    decision = gateway.route("Implement the feature", task_class=task_class)
    access = gateway.ledger.access_for(gateway.agent_access(run_key, decision, 5.0).api_key.get_secret_value())
    assert access is not None
    return access


@pytest.mark.parametrize(
    ("content", "named", "reached"),
    [(STRING_PART, "AttributeError", 0), (AUDIO_WITHOUT_DATA, "raised by LiteLLM itself", len(LOCAL_CHAIN))],
    ids=["string-part", "audio-without-data"],
)
def test_a_request_litellm_chokes_on_is_a_described_error_and_one_try_per_group(
    llm: LLMStandIn, scanner, tmp_path, content: list[Any], named: str, reached: int
) -> None:
    """A described LLMError naming the group and the failure (before: 1 + max_retries tries of each group, as if
    the network had failed); each group tried once, and recorded as failed once (the adapter cannot tell whether
    the provider had answered: for the audio part it had)."""
    ledger = make_ledger(tmp_path)
    gateway = _gateway(ledger, scanner, llm.base_url)
    access = _agent_access(gateway, "run-c", "sensitive")
    with pytest.raises(LLMError) as info:
        gateway.chat(access, {"model": "llama3", "messages": [{"role": "user", "content": content}]})

    message = str(info.value)
    assert not info.value.retryable and named in message and f"after {len(LOCAL_CHAIN)} attempts" in message
    assert "marker 7c1f" not in message and "Traceback" not in message
    assert len(llm.completions()) == reached
    rows = _rows(ledger, "run-c")
    assert sorted(r.model for r in rows) == sorted(LOCAL_CHAIN)  # one row per group, each once
    assert all("FAILED" in (r.route_reason or "") for r in rows)
    assert _open_reservations(ledger) == 0


@pytest.mark.parametrize("content", [STRING_PART, AUDIO_WITHOUT_DATA], ids=["string-part", "audio-without-data"])
def test_the_service_refuses_those_requests_at_its_door(llm: LLMStandIn, scanner, tmp_path, content: list[Any]):
    ledger = make_ledger(tmp_path)
    for service in _serve(_gateway(ledger, scanner, llm.base_url)):
        key = service.key_for("run-door", "sensitive")
        status, answer = service.post(key, {"model": "llama3", "messages": [{"role": "user", "content": content}]})
        assert status == 400, answer
        assert json.loads(answer)["error"]["message"].startswith("messages[0].content")
        assert llm.completions() == [] and _rows(ledger, "run-door") == []


def test_a_request_litellm_cannot_build_is_tried_once_per_group(llm: LLMStandIn, scanner, tmp_path) -> None:
    """A developer message without content (the service refuses it at its door; the adapter's own callers
    could still send one): LiteLLM raises ``KeyError`` before any request, labelled ``APIConnectionError`` —
    once per group of the chain now, not 1 + max_retries times."""
    ledger = make_ledger(tmp_path)
    gateway = _gateway(ledger, scanner, llm.base_url)
    decision = gateway.route("Implement the feature", task_class="sensitive")
    access = gateway.ledger.access_for(gateway.agent_access("run-d", decision, 5.0).api_key.get_secret_value())
    assert access is not None
    body = {"messages": [{"role": "user", "content": PROMPT}, {"role": "developer"}]}
    with pytest.raises(LLMError) as info:
        gateway.chat(access, body)
    assert "KeyError" in str(info.value) and not info.value.retryable
    assert f"after {len(LOCAL_CHAIN)} attempts" in str(info.value)
    assert llm.completions() == []


# ---- where it was raised decides -------------------------------------------------------------------------------
def test_only_what_the_vendor_raised_is_translated() -> None:
    from litellm.utils import validate_chat_completion_user_messages

    from promptship.domain.retrying import backoff_delay

    try:
        validate_chat_completion_user_messages(messages=[{"role": "user", "content": [{"no": "type"}]}])
    except Exception as exc:  # a bare Exception, raised in litellm.utils
        error = vendor_failure(exc, "mistral")
        assert error is not None and not error.retryable
        assert str(error).startswith("mistral: LiteLLM failed inside its provider code (Exception, raised in litellm")
    else:
        pytest.fail("LiteLLM took a content part without a type")

    try:
        backoff_delay(0, base_s=1, cap_s=1)  # a ValueError raised in promptship's own code: a bug, not the vendor's
    except ValueError as exc:
        assert vendor_failure(exc, "mistral") is None
    else:
        pytest.fail("backoff_delay took attempt 0")

    try:
        httpx.post("http://127.0.0.1:9/v1/chat/completions", json={}, timeout=2)  # nothing listens on port 9
    except httpx.ConnectError as exc:
        error = vendor_failure(exc, "mistral")
        assert error is not None and error.retryable  # a network failure: retried
    else:
        pytest.fail("something answered on 127.0.0.1:9")


def test_a_stream_request_litellm_cannot_build_for_the_pass_through_is_an_llm_error_not_a_crash(
    llm: LLMStandIn, scanner, tmp_path
) -> None:
    """A cloud stream is built by LiteLLM's provider config and sent by us (the pass-through): LiteLLM failing
    while building it (a string as a content part) escaped as an AttributeError — the service's 500, before its
    door refused the shape. Now an LLMError: nothing sent to the cloud groups and nothing recorded for them
    (their requests were never built), the local groups tried once each."""
    import asyncio

    ledger = make_ledger(tmp_path)
    gateway = _gateway(ledger, scanner, llm.base_url)
    access = _agent_access(gateway, "run-p", "complex_code")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": STRING_PART}], "stream": True}

    async def stream() -> None:
        await gateway.stream_chat(access, body)

    with pytest.raises(LLMError) as info:
        asyncio.run(stream())
    assert "AttributeError" in str(info.value)
    assert f"after {len(LOCAL_CHAIN)} attempts" in str(info.value)  # the cloud groups sent no request
    assert llm.completions() == []
    rows = _rows(ledger, "run-p")
    assert sorted(r.model for r in rows) == sorted(LOCAL_CHAIN)
    assert all("FAILED" in (r.route_reason or "") for r in rows)
    assert _open_reservations(ledger) == 0
