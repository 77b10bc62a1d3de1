"""A real OpenHands agent-server for the session, started exactly the way ``scripts/openhands.sh up`` does.

- ``OPENHANDS_TEST_URL`` (+ ``OPENHANDS_TEST_SESSION_KEY``) reuses a running server instead of starting one.
- Otherwise the installed venv (``make openhands-install``) is started on a free 127.0.0.1 port with a session
  key, from a parent environment that holds fake project credentials — the tests prove none reach the agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.request import branch_for, conversation_id_for
from promptship.domain.results import AgentTask
from promptship_sandbox.agent_server import agent_server_installed, running_agent_server
from promptship_sandbox.llm_server import LLMStandIn, running_llm_stand_in
from tests.conftest import require, shared_server

# What a developer's shell or a CI runner might hold; `up` must not hand any of it to the agent.
PARENT_CREDENTIALS = {
    "PROMPTSHIP_GITHUB__TOKEN": "ghp_parentTokenMustNotLeak0000000000000000",
    "PROMPTSHIP_GITHUB__WEBHOOK_SECRET": "whsec-parent-must-not-leak",
    "PROMPTSHIP_LLM__OPENROUTER_API_KEY": "sk-or-v1-parent-must-not-leak",
    "OPENROUTER_API_KEY": "sk-or-v1-parent-must-not-leak-2",
    "GITHUB_TOKEN": "ghp_parentGithubTokenMustNotLeak000000000",
    "OPENAI_API_KEY": "sk-parent-openai-must-not-leak",
}


@dataclass
class AgentServer:
    url: str
    session_key: str
    state_dir: Path | None

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    reuse = os.environ.get("OPENHANDS_TEST_URL")
    if reuse:
        yield AgentServer(reuse.rstrip("/"), os.environ.get("OPENHANDS_TEST_SESSION_KEY", ""), None)
        return
    ok, why = agent_server_installed()
    require("openhands agent-server", ok, why)
    parent_env = {**os.environ, **PARENT_CREDENTIALS}
    with shared_server("agent_server") as stack:
        try:
            server = stack.enter_context(
                running_agent_server(tmp_path_factory.mktemp("openhands-state"), parent_env=parent_env)
            )
        except RuntimeError as exc:
            require("openhands agent-server", False, str(exc))
            raise
        yield AgentServer(server.url, server.session_key, server.state_dir)


@pytest.fixture
def llm() -> Iterator[LLMStandIn]:
    with running_llm_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def agent(agent_server: AgentServer) -> Iterator[OpenHandsAgent]:
    with agent_server.client() as http:
        # No LLM retries inside the agent-server: its backoff starts at 8 s, a scripted failure is final here.
        yield OpenHandsAgent(http, session_api_key=SecretStr(agent_server.session_key), llm_num_retries=0)


SEED_FILES = {
    ".gitignore": "__pycache__/\n*.pyc\n",
    "Makefile": "test:\n\tpython3 -m unittest discover -s tests -t . -q\n",
    "app/__init__.py": "",
    "app/greet.py": "def greet(name: str) -> str:\n    return f'hello {name}'\n",
    "tests/__init__.py": "",
    "tests/test_greet.py": (
        "import unittest\n\nfrom app.greet import greet\n\n\nclass T(unittest.TestCase):\n"
        "    def test_greet(self):\n        self.assertEqual(greet('x'), 'hello x')\n"
    ),
    "k8s/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: greet\nspec:\n  replicas: 1\n"
        "  selector:\n    matchLabels: {app: greet}\n  template:\n    metadata:\n      labels: {app: greet}\n"
        "    spec:\n      containers:\n        - name: greet\n          image: greet:latest\n"
    ),
}


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@dataclass
class Checkout:
    path: Path
    run_key: str
    branch: str
    base_sha: str

    def task(self, instruction: str, **kw: object) -> AgentTask:
        return AgentTask(
            run_key=self.run_key,
            conversation_id=conversation_id_for(self.run_key),
            instruction=instruction,
            workspace=str(self.path),
            model="openai/gpt-4o",
            **kw,  # type: ignore[arg-type]
        )


def make_checkout(root: Path, files: dict[str, str] | None = None, source: Path | None = None) -> Checkout:
    """A real git checkout (from ``files`` or a copy of ``source``) on a fresh run's work branch."""
    root.mkdir(parents=True)
    if source is not None:
        shutil.copytree(source, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=seed", "-c", "user.email=seed@example.invalid", "commit", "-qm", "seed")
    run_key = uuid.uuid4().hex[:16]
    branch = branch_for(run_key)
    git(root, "checkout", "-qb", branch)
    return Checkout(root, run_key, branch, git(root, "rev-parse", "HEAD"))


_NOT_COPIED = ("node_modules", "dist", "__pycache__", ".pytest_cache", ".venv")


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    """A small Python service with a Makefile test target and k8s manifests (unique run key per test)."""
    return make_checkout(tmp_path / "checkout", SEED_FILES)
