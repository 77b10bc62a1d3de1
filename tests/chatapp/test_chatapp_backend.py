"""The chat app's backend as a real process (`python -m app`) through the real LiteLLM client against the
LLM stand-in: success, LLM failing or down → 502 {"error"}, invalid body → 400, no key in its logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from promptship_sandbox.llm_server import LLMStandIn
from tests.chatapp.conftest import API_KEY, APP_ROOT, MODEL, Backend, free_port, running_backend

pytestmark = pytest.mark.chatapp


def test_chat_answers_with_the_model_reply(backend: Backend, fresh_llm: LLMStandIn) -> None:
    fresh_llm.script(MODEL, ["Paris is the capital of France."])
    r = httpx.post(f"{backend.url}/chat", json={"message": "What is the capital of France?"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"response": "Paris is the capital of France."}
    [call] = fresh_llm.completions(MODEL)
    assert call.body["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert call.headers["authorization"] == f"Bearer {API_KEY}"


def test_health_is_ok_and_there_is_no_version_endpoint_yet(backend: Backend) -> None:
    assert httpx.get(f"{backend.url}/health").json() == {"status": "ok"}
    # GET /version is what the demo asks the agent to add.
    r = httpx.get(f"{backend.url}/version")
    assert r.status_code == 404
    assert "error" in r.json()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"message": ""}},
        {"json": {"text": "hello"}},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
    ],
    ids=["empty-message", "missing-field", "malformed-json"],
)
def test_invalid_body_is_400(backend: Backend, fresh_llm: LLMStandIn, kwargs: dict) -> None:
    r = httpx.post(f"{backend.url}/chat", timeout=30, **kwargs)
    assert r.status_code == 400
    assert list(r.json()) == ["error"]
    assert fresh_llm.completions() == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_llm_failure_is_502_with_error_and_no_key(backend: Backend, fresh_llm: LLMStandIn, status: int) -> None:
    fresh_llm.fail_next(1, status=status)
    r = httpx.post(f"{backend.url}/chat", json={"message": "hello"}, timeout=60)
    assert r.status_code == 502
    assert list(r.json()) == ["error"]
    assert API_KEY not in r.text
    assert len(fresh_llm.completions(MODEL)) == 1  # LLM_MAX_RETRIES=0: one call, no hidden retries
    assert API_KEY not in backend.log()
    assert "LLM call failed" in backend.log()


def test_llm_down_is_502(tmp_path: Path) -> None:
    with running_backend(f"http://127.0.0.1:{free_port()}/v1", tmp_path) as down:
        r = httpx.post(f"{down.url}/chat", json={"message": "hello"}, timeout=60)
        log = down.log()
    assert r.status_code == 502
    assert r.json()["error"] == "Could not reach the language model."
    assert API_KEY not in log


def test_the_apps_own_test_command_passes() -> None:
    """What the forge's CI runner runs in the app's repository: `make test PYTHON=<venv python>`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "PYTEST_"))}
    result = subprocess.run(
        ["make", "-s", "test", f"PYTHON={sys.executable}"],
        cwd=APP_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
