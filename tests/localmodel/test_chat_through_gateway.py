"""The chat app's ``/chat`` through promptship's gateway service to the real local model: the app's backend
process (``python -m app``, as deployed) with an app's key for caller ``chat`` as its ``LLM_API_KEY`` and the
gateway's ``/v1`` as its ``LLM_API_BASE``; the policy (``deployments/routing-llamacpp.yaml``) sends the
caller's local calls to llama.cpp + SmolLM2-135M."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from promptship.servers.gateway import create_gateway_app
from promptship.settings import Settings
from promptship.store.ledger import LLMCallRow
from promptship_sandbox.chatapp import running_backend
from promptship_sandbox.llm_server import serve_asgi
from promptship_sandbox.local_model import LocalModelServer, local_model_settings

pytestmark = [pytest.mark.localmodel, pytest.mark.chatapp, pytest.mark.gateway]


def test_chat_reaches_the_real_model_through_the_gateway(local_model: LocalModelServer, tmp_path: Path) -> None:
    from promptship.wiring import build_llm_gateway

    settings = local_model_settings(Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"), local_model)
    gateway = build_llm_gateway(settings)
    with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as url:
        gateway.gateway_url = url
        access = gateway.app_access("chat")
        # LLM_MODEL is not a choice the app makes here: the gateway's policy picks the model for caller chat
        with running_backend(
            access.base_url,
            tmp_path / "logs",
            model="promptship-policy",
            api_key=access.api_key.get_secret_value(),
            extra_env={"LLM_MAX_TOKENS": "48", "LLM_TIMEOUT_SECONDS": "120"},
        ) as backend:
            r = httpx.post(
                f"{backend.url}/chat", json={"message": "Say hello to the team in one sentence."}, timeout=180
            )
            log = backend.log()
    assert r.status_code == 200, (r.text, log[-2000:])
    assert r.json()["response"].strip(), "the real model answered with no text"
    with gateway.ledger.engine.connect() as conn:
        rows = conn.execute(select(LLMCallRow.__table__).where(LLMCallRow.run_key == access.run_key)).all()
    assert [(row.step, row.model, row.mode) for row in rows] == [("chat", "smollm2", "local")]
    [row] = rows
    assert "caller chat's local group smollm2" in (row.route_reason or "")
    assert row.prompt_tokens > 0 and 0 < row.completion_tokens <= 48
    assert row.latency_ms is not None and row.latency_ms > 0
    assert access.api_key.get_secret_value() not in log  # the app never logs its key
