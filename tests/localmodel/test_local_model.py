"""The real local model (llama.cpp serving SmolLM2-135M-Instruct) behind the gateway: a sensitive request's PR
title and description are written by it, recorded with its real token counts and latency, and carry no value
the gate detects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from promptship.domain.pull_request import pr_text_call, pr_title_and_body
from promptship.domain.request import DevRequest
from promptship.domain.results import AgentResult, GenerationResult
from promptship.settings import Settings
from promptship.store.ledger import LLMCallRow
from promptship_sandbox.local_model import LocalModelServer, local_model_settings

pytestmark = pytest.mark.localmodel

TOKEN = "ghp_" + "Zq7Yt2Lm9Wx4Vb8Nc3Kd6Hf1Jg5Rs0Pa4Ue7"  # a GitHub token format the gate knows (made up)
SENSITIVE_PROMPT = (
    f"Rotate the deploy token {TOKEN} used by the release job and tell jane.doe@example.com when it is done."
)


def test_a_sensitive_requests_pr_text_comes_from_the_real_model_redacted(local_model: LocalModelServer, tmp_path: Path):
    from promptship.wiring import build_llm_gateway

    settings = local_model_settings(Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"), local_model)
    gateway = build_llm_gateway(settings)
    request = DevRequest(prompt=SENSITIVE_PROMPT, repository="demo/chat-app", sensitive=True)
    generation = GenerationResult(
        agent=AgentResult(
            verdict="finished",
            conversation_id="c-1",
            final_message=f"Rotated {TOKEN} in .github/workflows/release.yml",
            changed_files=(".github/workflows/release.yml",),
        ),
        workspace=str(tmp_path),
    )
    call = pr_text_call("run-local-1", request, generation).model_copy(update={"max_tokens": 32})

    reply = gateway.complete(call)
    title, body = pr_title_and_body(gateway.redact, request, request.run_key, reply.content)

    assert reply.decision.model == "smollm2" and reply.decision.mode == "local" and reply.decision.sensitive
    assert "caller open_pull_request's local group smollm2" in reply.decision.reason
    assert reply.model == "openai/smollm2-135m-instruct" and not reply.fallback_used
    assert reply.content.strip(), "the real model answered with no text"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    with gateway.ledger.engine.connect() as conn:
        rows = conn.execute(select(LLMCallRow.__table__).where(LLMCallRow.run_key == "run-local-1")).all()
    assert [(r.step, r.model, r.mode) for r in rows] == [("open_pull_request", "smollm2", "local")]
    row = rows[0]
    assert (row.prompt_tokens, row.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert row.latency_ms is not None and row.latency_ms > 0
    for text in (title, body):
        assert TOKEN not in text and "jane.doe@example.com" not in text
        assert gateway.scanner.scan(text).findings == (), text
