"""`promptship gateway serve` as its own process, configured only by environment variables, sharing the store
(and so the per-run keys and the ledger) with the process that minted the key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from promptship.settings import Settings
from promptship.wiring import build_llm_gateway
from promptship_sandbox.llm_server import LLMStandIn
from promptship_sandbox.net import free_port
from tests.gateway.helpers import OPENROUTER_TEST_KEY, cloud_requests

pytestmark = pytest.mark.gateway


def test_gateway_serve_command(llm: LLMStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    env = {
        "PROMPTSHIP_HOME": str(tmp_path / "home"),
        "PROMPTSHIP_LLM__OLLAMA_BASE_URL": llm.base_url,
        "PROMPTSHIP_LLM__OPENROUTER_BASE_URL": llm.base_url + "/v1",
        "PROMPTSHIP_LLM__OPENROUTER_API_KEY": OPENROUTER_TEST_KEY,
        "PROMPTSHIP_LLM__GATEWAY_URL": f"http://127.0.0.1:{port}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    minting = build_llm_gateway(Settings())
    access = minting.agent_access("run-cli", minting.route("Implement a parser", task_class="complex_code"), 3.0)
    promptship = Path(sys.executable).with_name("promptship")
    proc = subprocess.Popen(
        [str(promptship), "gateway", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = {"model": access.model, "messages": [{"role": "user", "content": "Implement a parser"}]}
        headers = {"authorization": f"Bearer {access.api_key.get_secret_value()}"}
        with httpx.Client(base_url=access.base_url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = http.post("/chat/completions", json=body, headers=headers)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    assert time.monotonic() < deadline, "gateway did not start"
                    time.sleep(0.2)
            assert response.status_code == 200, response.text
            assert http.post("/chat/completions", json=body).status_code == 401
        assert [r.model for r in cloud_requests(llm)] == ["openai/gpt-4o"]
        assert minting.run_cost_usd("run-cli") == pytest.approx(response.json()["usage"]["cost"])
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_gateway_costs_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from promptship.cli import app
    from promptship.domain.results import Usage
    from promptship.store import make_engine
    from promptship.store.ledger import CostLedger

    monkeypatch.setenv("PROMPTSHIP_HOME", str(tmp_path / "home"))
    ledger = CostLedger(make_engine(Settings().store_url()))
    ledger.create_schema()
    ledger.open_run("run-c", repository="demo/chat-app")
    ledger.settle(None, run_key="run-c", step="generate_code", model="gpt-4o", mode="cloud", usage=Usage(cost_usd=1.5))

    result = CliRunner().invoke(app, ["gateway", "costs", "--by", "repository"])

    assert result.exit_code == 0, result.output
    assert "demo/chat-app" in result.output and "1.500000 USD" in result.output and "1.38 EUR" in result.output
    assert "cloud 1.5000 USD of 10.87 USD" in result.output
    assert CliRunner().invoke(app, ["gateway", "costs", "--by", "colour"]).exit_code == 2
