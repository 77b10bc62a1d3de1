"""LiteLLMGateway through the real LiteLLM client against the LLM stand-in (both providers' wire protocols)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints, to_llm_error
from promptship.domain.results import LLMCall, LLMMessage
from promptship.domain.routing import RoutingPolicy
from promptship.errors import BudgetExceeded, LLMError, SensitiveDataBlocked, is_retryable
from promptship.ports import AgentAccessIssuer, ChatRelay, Completer, LLMGateway, Redactor, Router, RunBudgets, RunKeys
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from tests.gateway.helpers import OPENROUTER_TEST_KEY, cloud_requests, local_requests, make_gateway, make_ledger

pytestmark = pytest.mark.gateway

SECRET = "ghp_" + "Zq8" * 12  # a GitHub token format the gate must catch


def _call(text: str, **kw) -> LLMCall:
    return LLMCall(
        run_key=kw.pop("run_key", "run-1"),
        step=kw.pop("step", "route"),
        messages=(LLMMessage(role="user", content=text),),
        **kw,
    )


@pytest.mark.parametrize(
    ("task_class", "group", "provider_model", "path"),
    [
        ("sensitive", "llama3", "llama3", "/api/chat"),
        ("complex_code", "gpt-4o", "openai/gpt-4o", "/v1/chat/completions"),
        ("tests", "mistral", "mistral", "/api/chat"),
        ("docs", "claude-3.5-sonnet", "anthropic/claude-3.5-sonnet", "/v1/chat/completions"),
        ("default", "mistral", "mistral", "/api/chat"),
    ],
)
def test_each_class_lands_on_its_model(llm: LLMStandIn, scanner, tmp_path, task_class, group, provider_model, path):
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    reply = gateway.complete(_call("Summarise the release plan.", task_class=task_class))

    assert reply.decision.model == group
    [request] = llm.completions()
    assert (request.path, request.model) == (path, provider_model)
    assert request.headers["x-llm-mode"] == reply.decision.mode
    assert reply.content.startswith(f"[{provider_model}]")
    assert gateway.run_cost_usd("run-1") == pytest.approx(reply.usage.cost_usd)
    if reply.decision.mode == "cloud":
        assert reply.usage.cost_usd > 0 and not reply.usage.cost_missing
        assert request.headers["authorization"].startswith("Bearer sk-or-v1-")
    else:
        assert reply.usage.cost_usd == 0.0


def test_classifier_routes_an_unlabelled_prompt(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    reply = gateway.complete(_call("Write pytest unit tests for the /chat endpoint"))
    assert reply.decision.task_class == "tests"
    assert local_requests(llm) and not cloud_requests(llm)


def test_secret_in_a_complex_code_prompt_stays_local(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    reply = gateway.complete(_call(f"Refactor the deploy script; it uses token {SECRET}", task_class="complex_code"))
    assert reply.decision.mode == "local" and reply.decision.sensitive
    assert cloud_requests(llm) == []
    assert local_requests(llm)[0].contains(SECRET)  # it did go to the local model, which is allowed


def test_no_local_model_means_refused_not_cloud(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), local_available=False)
    with pytest.raises(SensitiveDataBlocked):
        gateway.complete(_call(f"deploy with {SECRET}", task_class="complex_code"))
    assert llm.completions() == []


def test_retries_then_succeeds(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), max_retries=3)
    llm.fail_next(2, 503, model="openai/gpt-4o")
    reply = gateway.complete(_call("Implement a cache", task_class="complex_code"))
    assert reply.decision.model == "gpt-4o" and not reply.fallback_used
    assert len(cloud_requests(llm)) == 3


def test_cloud_failure_falls_back_and_sensitive_fallback_never_reaches_cloud(llm: LLMStandIn, scanner, tmp_path):
    # A policy whose local group would (wrongly) fall back to the cloud: the gate's verdict must still win.
    policy = RoutingPolicy.from_yaml("fallbacks: {llama3: [gpt-4o, mistral]}")
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, max_retries=1)
    llm.fail_next(2, 500, model="llama3")
    reply = gateway.complete(_call(f"rotate the key {SECRET}", task_class="sensitive"))
    assert reply.fallback_used and reply.decision.model == "mistral"
    assert cloud_requests(llm) == []
    assert [r.model for r in local_requests(llm)] == ["llama3", "llama3", "mistral"]

    llm.fail_next(2, 502, model="openai/gpt-4o")
    reply = gateway.complete(_call("Implement retries in the client", task_class="complex_code"))
    assert reply.fallback_used and reply.decision.model == "claude-3.5-sonnet"
    assert "fallback" in reply.decision.reason


def test_non_retryable_error_is_mapped(llm: LLMStandIn, scanner, tmp_path) -> None:
    policy = RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}")
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, local_available=False)
    llm.fail_next(1, 401, model="openai/gpt-4o")
    with pytest.raises(LLMError) as info:
        gateway.complete(_call("Implement a parser", task_class="complex_code"))
    assert info.value.status == 401 and not info.value.retryable
    assert len(cloud_requests(llm)) == 1


def test_over_budget_reroutes_local_or_refuses(llm: LLMStandIn, scanner, tmp_path) -> None:
    ledger = make_ledger(tmp_path, cloud_daily_usd=0.001)
    gateway = make_gateway(llm, scanner, ledger, default_max_tokens=1000)  # estimate 0.01 USD > 0.001
    reply = gateway.complete(_call("Implement a parser", task_class="complex_code"))
    assert reply.decision.mode == "local" and "over budget" in reply.decision.reason
    assert cloud_requests(llm) == []

    refusing = make_gateway(llm, scanner, ledger, default_max_tokens=1000, over_budget="refuse")
    with pytest.raises(BudgetExceeded) as info:
        refusing.complete(_call("Implement a parser", task_class="complex_code"))
    assert info.value.scope == "day"
    assert cloud_requests(llm) == []


def test_missing_cloud_cost_is_flagged_not_zero(llm: LLMStandIn, scanner, tmp_path) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger)
    llm.omit_cost("openai/gpt-4o")
    reply = gateway.complete(_call("Implement a parser", task_class="complex_code"))
    assert reply.usage.cost_missing and reply.usage.cost_usd > 0
    assert ledger.missing_cost_calls("run-1") == 1


def test_agent_access_mints_a_key_stored_as_hash(llm: LLMStandIn, scanner, tmp_path) -> None:
    ledger = make_ledger(tmp_path)
    gateway = make_gateway(llm, scanner, ledger, gateway_url="http://127.0.0.1:4000")
    decision = gateway.route("Implement a parser", task_class="complex_code")
    access = gateway.agent_access("run-9", decision, 1.5)
    key = access.api_key.get_secret_value()
    assert access.base_url == "http://127.0.0.1:4000/v1" and access.model == "openai/gpt-4o"
    assert (access.input_cost_per_token, access.output_cost_per_token) == (2.5e-6, 10e-6)  # the ledger's prices
    assert key not in repr(access)
    found = gateway.access_for(key)
    assert found is not None and found.run_key == "run-9" and found.budget_usd == 1.5
    assert gateway.access_for(key + "x") is None
    for path in tmp_path.glob("store.db*"):  # the database and its WAL
        assert key.encode() not in path.read_bytes()


def test_a_timeout_is_retryable_and_falls_back(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), timeout_s=0.5, max_retries=1)
    llm.slow_next(2, 3.0, model="openai/gpt-4o")
    reply = gateway.complete(_call("Implement a cache", task_class="complex_code"))
    assert reply.fallback_used and reply.decision.model == "claude-3.5-sonnet"
    assert [r.model for r in cloud_requests(llm)] == ["openai/gpt-4o", "openai/gpt-4o", "anthropic/claude-3.5-sonnet"]
    assert gateway.ledger.totals("model") == {"claude-3.5-sonnet": pytest.approx(reply.usage.cost_usd)}


def test_the_adapter_implements_the_small_ports_and_its_ledger_the_run_keys(llm: LLMStandIn, scanner, tmp_path):
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    for port in (Router, Completer, RunBudgets, Redactor, AgentAccessIssuer, LLMGateway, ChatRelay):
        assert isinstance(gateway, port), port.__name__
    assert isinstance(gateway.ledger, RunKeys)


# ---- one retry policy per layer (docs/CONTRACTS.md, "Retries") -------------------------------------------------
STEP_ATTEMPTS = 1 + 3  # what the step layer makes at most, and only for retryable errors


def _as_the_step_layer(call):
    """The step layer's side of the contract: try again only what is ``retryable``, at most 1 + 3 times."""
    for attempt in range(1, STEP_ATTEMPTS + 1):
        try:
            return call()
        except Exception as exc:
            if not is_retryable(exc) or attempt == STEP_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def test_a_call_that_keeps_failing_reaches_the_provider_max_retries_plus_one_times(llm: LLMStandIn, scanner, tmp_path):
    policy = RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}")
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, local_available=False, max_retries=3)
    llm.fail_next(100, 503)
    with pytest.raises(LLMError) as info:
        _as_the_step_layer(lambda: gateway.complete(_call("Implement a cache", task_class="complex_code")))
    assert len(llm.completions()) == 4  # 1 + max_retries, once — not × the step layer's 4 attempts
    assert not info.value.retryable and info.value.status == 503
    assert "after 4 attempts" in str(info.value)


def test_a_failing_call_tries_each_group_of_its_fallback_chain_max_retries_plus_one_times(
    llm: LLMStandIn, scanner, tmp_path
):
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), max_retries=3)
    llm.fail_next(1000, 500)
    with pytest.raises(LLMError) as info:
        _as_the_step_layer(lambda: gateway.complete(_call("Implement a cache", task_class="complex_code")))
    per_model: dict[str, int] = {}
    for request in llm.completions():
        per_model[request.model or ""] = per_model.get(request.model or "", 0) + 1
    # the default policy's chain for gpt-4o: two cloud groups, then the three local ones
    chain = ("openai/gpt-4o", "anthropic/claude-3.5-sonnet", "codellama", "mistral", "llama3")
    assert per_model == dict.fromkeys(chain, 4)
    assert not info.value.retryable and "after 20 attempts" in str(info.value)


def test_an_adapter_that_did_not_retry_leaves_the_retry_to_the_step_layer(llm: LLMStandIn, scanner, tmp_path):
    policy = RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}")
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path), policy=policy, local_available=False, max_retries=0)
    llm.fail_next(100, 503)
    with pytest.raises(LLMError) as info:
        _as_the_step_layer(lambda: gateway.complete(_call("Implement a cache", task_class="complex_code")))
    assert info.value.retryable and info.value.status == 503 and "attempts" not in str(info.value)
    assert len(llm.completions()) == STEP_ATTEMPTS  # 1 adapter attempt × 4 step attempts


def test_a_retry_after_longer_than_the_adapter_sleeps_is_left_to_the_step_layer(scanner, tmp_path) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    hits: list[str] = []

    async def limited(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        error = {"error": {"message": "slow down", "type": "rate_limit_error", "code": 429}}
        return JSONResponse(error, 429, headers={"retry-after": "120"})

    app = Starlette(routes=[Route("/v1/chat/completions", limited, methods=["POST"])])
    with serve_asgi(app) as url:
        gateway = LiteLLMGateway(
            policy=RoutingPolicy.from_yaml("fallbacks: {gpt-4o: []}"),
            scanner=scanner,
            ledger=make_ledger(tmp_path),
            endpoints=ProviderEndpoints(url, url + "/v1", SecretStr(OPENROUTER_TEST_KEY)),
            gateway_url="http://127.0.0.1:9",
            local_available=False,
            max_retries=3,
            sleep=lambda s: pytest.fail(f"the adapter slept {s} s instead of leaving a 120 s wait to the step layer"),
        )
        with pytest.raises(LLMError) as info:
            gateway.complete(_call("Implement a cache", task_class="complex_code"))
    assert hits == ["/v1/chat/completions"]
    assert (info.value.retryable, info.value.status, info.value.retry_after_s) == (True, 429, 120.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, 0.0),  # an HTTP-date (long past)
        ({"retry-after": "later"}, None),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),  # OpenAI's precise form wins
        ({}, None),
    ],
)
def test_provider_retry_after_is_read_by_the_shared_helper(headers: dict[str, str], expected: float | None) -> None:
    import httpx
    import openai

    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat"))
    error = to_llm_error(openai.RateLimitError("rate limited", response=response, body=None), "gpt-4o")
    assert (error.retryable, error.status, error.retry_after_s) == (True, 429, expected)


LLAMACPP = RoutingPolicy.from_yaml(
    "models: {smollm2: {litellm_model: openai/smollm2-135m-instruct, mode: local, backend: llamacpp}}\n"
    "fallbacks: {smollm2: [llama3]}\ncallers: {open_pull_request: smollm2}\n"
)


def test_a_llamacpp_group_is_sent_to_its_openai_compatible_api_base(llm: LLMStandIn, scanner, tmp_path) -> None:
    """LiteLLM's openai/ provider at the llama.cpp server's base URL (here the stand-in's OpenAI path)."""
    gateway = LiteLLMGateway(
        policy=LLAMACPP,
        scanner=scanner,
        ledger=make_ledger(tmp_path),
        endpoints=ProviderEndpoints(llm.base_url, llm.base_url + "/v1", None, llamacpp_base_url=llm.base_url + "/v1"),
        gateway_url="http://127.0.0.1:9",
        sleep=lambda _s: None,
    )
    call = _call(f"PR text for a change that used {SECRET}", task_class="docs").model_copy(
        update={"step": "open_pull_request"}
    )
    reply = gateway.complete(call)
    assert (reply.decision.model, reply.decision.mode, reply.model) == (
        "smollm2",
        "local",
        "openai/smollm2-135m-instruct",
    )
    [request] = llm.completions()
    assert (request.path, request.model) == ("/v1/chat/completions", "smollm2-135m-instruct")
    assert request.headers["x-llm-mode"] == "local"
    assert cloud_requests(llm) == [request]  # the stand-in's OpenAI path stands for the llama.cpp server here
    assert reply.usage.completion_tokens > 0 and reply.usage.cost_usd == 0.0


def test_a_llamacpp_group_without_a_server_falls_back_to_a_local_group(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = LiteLLMGateway(
        policy=LLAMACPP,
        scanner=scanner,
        ledger=make_ledger(tmp_path),
        endpoints=ProviderEndpoints(llm.base_url, llm.base_url + "/v1", None),
        gateway_url="http://127.0.0.1:9",
        sleep=lambda _s: None,
    )
    call = _call(f"PR text for a change that used {SECRET}", task_class="docs").model_copy(
        update={"step": "open_pull_request"}
    )
    reply = gateway.complete(call)
    assert (reply.decision.model, reply.fallback_used) == ("llama3", True)
    assert "smollm2 failed" in reply.decision.reason
    assert [r.path for r in llm.completions()] == ["/api/chat"]
