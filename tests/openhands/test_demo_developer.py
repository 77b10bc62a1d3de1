"""The demo's scripted developer on the real agent-server: it implements the demo request in a real checkout of
the seed chat app, and the app's own `make test` (its CI command) passes on what was committed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from promptship.adapters.compile_check import WorkspaceCompileChecker, inspect_repository
from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.instructions import agent_instruction
from promptship.domain.request import DevRequest
from promptship_sandbox.agent_server import demo_developer_replies
from promptship_sandbox.llm_server import LLMStandIn
from tests.conftest import REPO_ROOT
from tests.openhands.conftest import git, make_checkout
from tests.openhands.test_agent_server import access

pytestmark = pytest.mark.openhands


def test_the_demo_request_is_implemented_with_code_test_and_manifest(
    agent: OpenHandsAgent, llm: LLMStandIn, tmp_path: Path
) -> None:
    checkout = make_checkout(tmp_path / "chat-app", source=REPO_ROOT / "examples" / "chat-app")
    request = DevRequest(prompt="Add a GET /version endpoint that returns the deployed commit SHA")
    conventions = inspect_repository(checkout.path)
    instruction = agent_instruction(request, conventions.test_command, branch=checkout.branch, conventions=conventions)
    llm.script("gpt-4o", demo_developer_replies(str(checkout.path)))

    result = agent.result(agent.start(checkout.task(instruction, max_iterations=20), access(llm)), timeout_s=300)

    assert result.verdict == "finished", result.error
    assert len(result.commits) == 1
    committed = set(git(checkout.path, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert committed == {"backend/app/main.py", "backend/tests/test_version.py", "k8s/backend-deployment.yaml"}
    deployment = yaml.safe_load((checkout.path / "k8s" / "backend-deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    assert WorkspaceCompileChecker().check(str(checkout.path), result.changed_files).compiled
    assert git(checkout.path, "status", "--porcelain") == ""  # nothing left uncommitted
    # the app's own test command, as its CI runs it, passes on the commit — including the new test
    tests = subprocess.run(
        ["make", "test", f"PYTHON={sys.executable}"], cwd=checkout.path, capture_output=True, text=True, timeout=300
    )
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    assert "passed" in tests.stdout
