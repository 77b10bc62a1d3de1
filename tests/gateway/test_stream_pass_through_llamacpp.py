"""The pass-through stream against the real llama.cpp server (SmolLM2-135M-Instruct): what the service relays is
what llama.cpp streams to a direct client (temperature 0), and the ledger has its usage (llama.cpp's figures, or
its chunks counted when it sends none)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptship.domain.results import RouteDecision
from promptship.servers.gateway import create_gateway_app
from promptship.settings import Settings
from promptship.store.ledger import LLMCallRow
from promptship_sandbox.llm_server import serve_asgi
from promptship_sandbox.local_model import (
    LocalModelServer,
    local_model_installed,
    local_model_settings,
    running_local_model,
)
from tests.conftest import require

pytestmark = [pytest.mark.localmodel, pytest.mark.gateway]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    ok, why = local_model_installed()
    require("local model", ok, why)
    with running_local_model(tmp_path_factory.mktemp("local-model")) as running:
        yield running


def _data(body: bytes) -> list[Any]:
    out: list[Any] = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: "):
            payload = event.removeprefix(b"data: ")
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def _text(events: list[Any]) -> str:
    return "".join(
        (choice.get("delta") or {}).get("content") or ""
        for e in events
        if e != "[DONE]"
        for choice in e.get("choices") or []
    )


def test_a_stream_to_llamacpp_is_relayed_as_llamacpp_streams_it(server: LocalModelServer, tmp_path: Path) -> None:
    from promptship.wiring import build_llm_gateway

    settings = local_model_settings(Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"), server)
    gateway = build_llm_gateway(settings)
    pinned = RouteDecision(task_class="docs", model="smollm2", mode="local", reason="test", sensitive=False)
    key = gateway.agent_access("run-llamacpp", pinned, 1.0).api_key.get_secret_value()
    body = {
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 16,
        "temperature": 0,
        "seed": 1,
        "stream": True,
    }
    with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as url, httpx.Client(timeout=120) as http:
        relayed = http.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        direct = http.post(
            f"{server.base_url}/chat/completions",
            json={**body, "model": server.alias, "stream_options": {"include_usage": True}},
        )
    assert relayed.status_code == direct.status_code == 200
    got, want = _data(relayed.content), _data(direct.content)
    assert got[-1] == want[-1] == "[DONE]"
    assert _text(got) == _text(want) != ""
    # llama.cpp's own chunks come through as it wrote them (ids and timestamps differ between the two calls),
    # then the gateway's usage chunk (llama-cpp-python 0.3.36 sends none of its own: the chunks are counted)
    sent_usage = [e for e in want[:-1] if e.get("usage")]
    chunks = [e for e in want[:-1] if e.get("choices")]
    assert [sorted(e) for e in got[:-2]] == [sorted(e) for e in chunks]
    usage = got[-2]["usage"]
    assert got[-2]["choices"] == []
    with Session(gateway.ledger.engine) as session:
        [row] = session.scalars(select(LLMCallRow).where(LLMCallRow.run_key == "run-llamacpp"))
    assert (row.model, row.mode, row.cost_missing) == ("smollm2", "local", False)
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    if sent_usage:
        assert row.completion_tokens == sent_usage[-1]["usage"]["completion_tokens"]
    else:
        assert row.completion_tokens == len(chunks) and row.prompt_tokens > 0
