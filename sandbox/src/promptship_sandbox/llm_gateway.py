"""The sandbox's LLM boundary in one call: the LLM stand-in, a real ``LiteLLMGateway`` wired to it (both
providers point at the stand-in), and the gateway service on 127.0.0.1 for the code agent.

    with running_sandbox_gateway(settings) as sandbox:
        sandbox.gateway          # LiteLLMGateway (the LLMGateway port): real policy, gate, ledger, LiteLLM
        sandbox.llm              # LLMStandIn: script(), fail_next(), requests
        sandbox.url              # the gateway service, e.g. http://127.0.0.1:PORT (agents get <url>/v1)
    chat_app_secret(sandbox)     # the chat app's litellm-secrets data: the gateway's /v1 + an app's key (chat)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from promptship.adapters.llm import LiteLLMGateway
from promptship.settings import Settings
from promptship_sandbox.credentials import openrouter_key as new_openrouter_key
from promptship_sandbox.llm_server import LLMStandIn, running_llm_stand_in, serve_asgi


@dataclass
class SandboxGateway:
    gateway: LiteLLMGateway
    llm: LLMStandIn
    url: str
    openrouter_key: str  # the stand-in accepts any key; this one is made up per run, in OpenRouter's format


@contextmanager
def running_sandbox_gateway(
    settings: Settings,
    *,
    engine: Any = None,
    openrouter_key: str | None = None,
    llm_via: Callable[[str], str] | None = None,
) -> Iterator[SandboxGateway]:
    """Start the stand-in and the gateway service; stop both when the block ends. ``engine``: the store's
    engine to keep the ledger in (default: one on ``settings.store_url()``); ``openrouter_key``: the cloud key
    the gateway sends to the stand-in (default: a new one in OpenRouter's format); ``llm_via``: the base URL
    the gateway is to call for the stand-in's (e.g. a fault proxy's in front of it; default: the stand-in's)."""
    key = openrouter_key or new_openrouter_key()
    from promptship.servers.gateway import create_gateway_app
    from promptship.wiring import build_llm_gateway

    with running_llm_stand_in() as llm:
        base_url = llm_via(llm.base_url) if llm_via is not None else llm.base_url
        llm_settings = settings.llm.model_copy(
            update={
                "ollama_base_url": base_url,
                "openrouter_base_url": base_url + "/v1",
                "openrouter_api_key": SecretStr(key),
            }
        )
        gateway = build_llm_gateway(settings.model_copy(update={"llm": llm_settings}), engine=engine)
        import litellm  # noqa: F401  # now (3-6 s), not during the agent's first request

        try:
            with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as url:
                gateway.gateway_url = url
                yield SandboxGateway(gateway=gateway, llm=llm, url=url, openrouter_key=key)
        finally:
            close = getattr(gateway.scanner, "close", None)
            if close is not None:
                close()


def chat_app_secret(sandbox: SandboxGateway, *, caller: str = "chat") -> dict[str, str]:
    """``stringData`` of the chat app's ``litellm-secrets`` Secret so that the deployed app calls this gateway
    service with an app's key for ``caller`` (its calls routed by the policy for that caller, recorded under it)."""
    access = sandbox.gateway.app_access(caller)
    return {"LLM_API_BASE": access.base_url, "LLM_API_KEY": access.api_key.get_secret_value()}
