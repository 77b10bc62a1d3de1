"""Fixtures for the chat app's tests: its backend as a real process, the LLM stand-in, the built frontend
served with a /chat proxy (promptship_sandbox.chatapp), and Debian's chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from promptship_sandbox import chatapp
from promptship_sandbox.chatapp import APP_ROOT, FRONTEND_DIST, Backend, Frontend, serving_frontend
from promptship_sandbox.llm_server import LLMStandIn, running_llm_stand_in
from promptship_sandbox.net import free_port
from tests.conftest import REPO_ROOT

__all__ = ["APP_ROOT", "FRONTEND_DIST", "Backend", "Frontend", "free_port", "serving_frontend"]

CHROMIUM = Path("/usr/bin/chromium")
MODEL = "chat-model"
API_KEY = "sk-chatapp-test-9f8e7d6c5b4a-do-not-log"
ARTIFACTS = REPO_ROOT / "tests" / "chatapp" / "artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def running_backend(llm_base_url: str, log_dir: Path, **extra_env: str) -> AbstractContextManager[Backend]:
    """`python -m app` with the tests' model and key."""
    return chatapp.running_backend(llm_base_url, log_dir, model=MODEL, api_key=API_KEY, extra_env=extra_env)


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMStandIn]:
    with running_llm_stand_in() as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def backend(llm: LLMStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with running_backend(f"{llm.base_url}/v1", tmp_path_factory.mktemp("backend")) as b:
        yield b


@pytest.fixture
def fresh_llm(llm: LLMStandIn) -> LLMStandIn:
    llm.reset()
    return llm
