"""Builders shared by the gateway tests: a LiteLLMGateway wired to the LLM stand-in and a fresh ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
from promptship.domain.routing import RoutingPolicy
from promptship.ports import Scanner
from promptship.store import make_engine
from promptship.store.ledger import CostLedger
from promptship_sandbox.llm_server import LLMStandIn

OPENROUTER_TEST_KEY = "sk-or-v1-" + "0" * 64  # the stand-in accepts any key; never a real one


def make_ledger(tmp_path: Path, **kw: Any) -> CostLedger:
    ledger = CostLedger(make_engine(f"sqlite:///{tmp_path / 'store.db'}"), **kw)
    ledger.create_schema()
    return ledger


def make_gateway(
    llm: LLMStandIn | str,
    scanner: Scanner,
    ledger: CostLedger,
    *,
    gateway_url: str = "http://127.0.0.1:9",
    llamacpp: bool = False,
    **kw: Any,
) -> LiteLLMGateway:
    """Every provider (Ollama's API, OpenRouter's) at the stand-in ``llm`` or at a base URL (a proxy in front of it,
    another provider). ``llamacpp``: it also answers for ``backend: llamacpp`` groups (its OpenAI-compatible /v1)."""
    base_url = llm if isinstance(llm, str) else llm.base_url
    return LiteLLMGateway(
        policy=kw.pop("policy", None) or RoutingPolicy.default(),
        scanner=scanner,
        ledger=ledger,
        endpoints=ProviderEndpoints(
            ollama_base_url=base_url,
            openrouter_base_url=base_url + "/v1",
            openrouter_api_key=SecretStr(OPENROUTER_TEST_KEY),
            llamacpp_base_url=base_url + "/v1" if llamacpp else None,
        ),
        gateway_url=gateway_url,
        sleep=lambda _s: None,
        **kw,
    )


def cloud_requests(llm: LLMStandIn) -> list:
    """What reached 'the cloud' (OpenRouter's OpenAI-compatible path of the stand-in)."""
    return [r for r in llm.completions() if r.path.endswith("/chat/completions")]


def local_requests(llm: LLMStandIn) -> list:
    return [r for r in llm.completions() if r.path == "/api/chat"]


def validate_openai_exchange(base_url: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    """Validate a non-streaming answer and every SSE chunk with the openai SDK's own pydantic types (the SDK
    itself only constructs its models, it does not validate them)."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    with httpx.Client(base_url=base_url, timeout=30) as http:
        whole = http.post(path, json=body, headers=headers)
        assert whole.status_code == 200, whole.text
        ChatCompletion.model_validate(whole.json())
        with http.stream("POST", path, json={**body, "stream": True}, headers=headers) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        ChatCompletionChunk.model_validate(json.loads(line.removeprefix("data: ")))
