"""``OpenHandsAgent`` against the real OpenHands agent-server, driven by the LLM stand-in's scripted tool calls.

The agent-server really runs the tools: files are created in a real git checkout, the tests are run by its
terminal, the commit is made by git. What is asserted is the outcome: the commit on the work branch, the
request log of the stand-in, the conversation's existence on the server.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from promptship.adapters.compile_check import WorkspaceCompileChecker, inspect_repository
from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.instructions import agent_instruction
from promptship.domain.request import DevRequest
from promptship.errors import AgentError
from promptship.ports import AgentLLMAccess, CodeAgent
from promptship_sandbox.llm_server import LLMStandIn, ToolCall
from tests.openhands.conftest import PARENT_CREDENTIALS, AgentServer, Checkout, git

pytestmark = pytest.mark.openhands

PRICES = (2.5e-6, 1.0e-5)
RUN_KEY_SECRET = "psk-run-test-" + "k" * 24  # the per-run LLM key the agent gets (a stand-in accepts any)


def access(llm: LLMStandIn, **kw: object) -> AgentLLMAccess:
    return AgentLLMAccess(
        base_url=llm.base_url + "/v1",
        api_key=SecretStr(RUN_KEY_SECRET),
        model="openai/gpt-4o",
        input_cost_per_token=PRICES[0],
        output_cost_per_token=PRICES[1],
        **kw,  # type: ignore[arg-type]
    )


def create(path: str, text: str) -> list[ToolCall]:
    return [ToolCall("file_editor", {"command": "create", "path": path, "file_text": text})]


def terminal(command: str) -> list[ToolCall]:
    return [ToolCall("terminal", {"command": command})]


def finish(message: str) -> list[ToolCall]:
    return [ToolCall("finish", {"message": message})]


def script_feature(llm: LLMStandIn, checkout: Checkout, model: str = "gpt-4o") -> None:
    root = checkout.path
    llm.script(
        model,
        [
            create(f"{root}/app/version.py", "VERSION = '1.2.3'\n\n\ndef version() -> str:\n    return VERSION\n"),
            create(
                f"{root}/tests/test_version.py",
                "import unittest\n\nfrom app.version import version\n\n\nclass V(unittest.TestCase):\n"
                "    def test_version(self):\n        self.assertEqual(version(), '1.2.3')\n",
            ),
            create(
                f"{root}/k8s/version-configmap.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greet-version\ndata:\n  VERSION: '1.2.3'\n",
            ),
            terminal("make test"),
            terminal("git add -A && git commit -q -m 'Add version with test and ConfigMap' && git log --oneline -1"),
            finish("Added app/version.py, its test and a ConfigMap; make test passes."),
        ],
    )


def test_a_request_produces_a_commit_with_code_test_and_manifest(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout
) -> None:
    assert isinstance(agent, CodeAgent)
    request = DevRequest(prompt="Expose the service version", repository="demo/greet")
    conventions = inspect_repository(checkout.path)
    instruction = agent_instruction(request, conventions.test_command, branch=checkout.branch, conventions=conventions)
    script_feature(llm, checkout)

    handle = agent.start(checkout.task(instruction, max_iterations=20), access(llm))
    result = agent.result(handle, timeout_s=120)

    assert handle.created
    assert result.verdict == "finished", result.error
    assert result.final_message.startswith("Added app/version.py")
    # one commit on the work branch, holding code, test and manifest
    assert git(checkout.path, "rev-parse", "--abbrev-ref", "HEAD") == checkout.branch
    assert result.commits == (git(checkout.path, "rev-parse", "HEAD"),)
    assert git(checkout.path, "rev-list", "--count", f"{checkout.base_sha}..HEAD") == "1"
    committed = set(git(checkout.path, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert committed == {"app/version.py", "tests/test_version.py", "k8s/version-configmap.yaml"}
    assert set(result.changed_files) == committed
    # the instructions arrived: the test command and the manifests were asked for
    first = llm.completions()[0]
    assert first.contains("`make test`") and first.contains("Kubernetes manifests")
    assert first.contains(checkout.branch)
    # every LLM call used the per-run key we handed over, and the agent's cost is what those prices give
    calls = llm.completions()
    assert len(calls) == 6
    assert {c.headers.get("authorization") for c in calls} == {f"Bearer {RUN_KEY_SECRET}"}
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    expected = result.usage.prompt_tokens * PRICES[0] + result.usage.completion_tokens * PRICES[1]
    assert result.usage.cost_usd == pytest.approx(expected, rel=1e-6)
    # and what it produced compiles
    assert WorkspaceCompileChecker().check(str(checkout.path), result.changed_files).compiled


def test_a_resumed_run_finds_its_conversation_instead_of_starting_another(
    agent: OpenHandsAgent, agent_server: AgentServer, llm: LLMStandIn, checkout: Checkout
) -> None:
    llm.script("gpt-4o", [finish("nothing to do")])
    task = checkout.task("Say hello", max_iterations=5)
    first = agent.start(task, access(llm))
    done = agent.result(first, timeout_s=60)
    calls_before = len(llm.completions())

    again = agent.start(task, access(llm))  # a crashed-and-resumed run does the same calls again
    redone = agent.result(again, timeout_s=60)

    assert (first.created, again.created) == (True, False)
    assert again.conversation_id == first.conversation_id == task.conversation_id
    assert (done.verdict, redone.verdict) == ("finished", "finished")
    assert len(llm.completions()) == calls_before  # no second initial message, no new LLM call
    with agent_server.client(headers={"X-Session-API-Key": agent_server.session_key}) as http:
        found = http.get("/api/conversations/search", params={"limit": 100}).json()["items"]
    assert [c["id"] for c in found].count(task.conversation_id) == 1


def test_a_repair_round_continues_the_same_conversation(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout
) -> None:
    root = checkout.path
    llm.script(
        "gpt-4o",
        [
            create(f"{root}/app/bye.py", "def bye():\n    return 'bye'\n"),
            terminal("git add -A && git commit -qm 'add bye'"),
            finish("first pass"),
        ],
    )
    handle = agent.start(checkout.task("Add bye()", max_iterations=10), access(llm))
    first = agent.result(handle, timeout_s=60)
    llm.script(
        "gpt-4o",
        [
            create(f"{root}/tests/test_bye.py", "from app.bye import bye\n\n\ndef test_bye():\n    assert bye()\n"),
            terminal("git add -A && git commit -qm 'test bye'"),
            finish("repaired"),
        ],
    )
    agent.send(handle, "Repair round 1: CI failed: test_bye missing. Run `make test`.")
    second = agent.result(handle, timeout_s=60)

    assert (first.verdict, second.verdict) == ("finished", "finished")
    assert second.final_message == "repaired"
    assert len(first.commits) == 1 and len(second.commits) == 2 and second.commits[1] == first.commits[0]
    assert any(c.contains("Repair round 1: CI failed") for c in llm.completions())


def test_a_scripted_llm_failure_ends_as_error_with_the_servers_reason(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout
) -> None:
    llm.fail_next(1, status=500)
    result = agent.result(agent.start(checkout.task("Do it", max_iterations=5), access(llm)), timeout_s=60)
    assert result.verdict == "error"
    assert result.error is not None and "scripted failure 500" in result.error
    assert RUN_KEY_SECRET not in result.error


def test_a_never_finishing_agent_is_interrupted_at_the_timeout_and_removed(
    agent: OpenHandsAgent, agent_server: AgentServer, llm: LLMStandIn, checkout: Checkout
) -> None:
    llm.script("gpt-4o", [terminal("sleep 1") for _ in range(200)])
    handle = agent.start(checkout.task("Loop forever", max_iterations=500), access(llm))
    result = agent.result(handle, timeout_s=4)

    assert result.verdict == "timed_out"
    assert result.error is not None and "interrupted and removed" in result.error
    with agent_server.client(headers={"X-Session-API-Key": agent_server.session_key}) as http:
        assert http.get(f"/api/conversations/{handle.conversation_id}").status_code == 404
    served = len(llm.completions())
    assert served < 200  # it really was stopped, not run to the end of its script


def test_cancel_interrupts_and_removes_the_conversation(
    agent: OpenHandsAgent, agent_server: AgentServer, llm: LLMStandIn, checkout: Checkout
) -> None:
    llm.script("gpt-4o", [terminal("sleep 1") for _ in range(50)])
    handle = agent.start(checkout.task("Loop", max_iterations=100), access(llm))
    agent.cancel(handle)
    agent.cancel(handle)  # idempotent: already gone
    with agent_server.client(headers={"X-Session-API-Key": agent_server.session_key}) as http:
        assert http.get(f"/api/conversations/{handle.conversation_id}").status_code == 404


def test_a_wrong_session_key_gives_a_clear_authentication_error(
    agent_server: AgentServer, llm: LLMStandIn, checkout: Checkout
) -> None:
    if not agent_server.session_key:
        pytest.skip("the reused agent-server has no session key")
    wrong = "sess-wrong-" + "x" * 20
    with agent_server.client() as http:
        agent = OpenHandsAgent(http, session_api_key=SecretStr(wrong))
        with pytest.raises(AgentError) as caught:
            agent.start(checkout.task("anything"), access(llm))
    err = caught.value
    assert err.status == 401 and not err.retryable
    assert "SESSION_API_KEY" in str(err) and wrong not in str(err)
    assert llm.completions() == []


def test_the_agents_terminal_cannot_see_the_projects_credentials(
    agent: OpenHandsAgent, agent_server: AgentServer, llm: LLMStandIn, checkout: Checkout
) -> None:
    if agent_server.state_dir is None:
        pytest.skip("a reused agent-server was not started by scripts/openhands.sh here")
    env_file = checkout.path / "env.txt"
    llm.script(
        "gpt-4o",
        [terminal(f"env > {env_file}; cat ~/.git-credentials 2>&1 | head -1 >> {env_file}"), finish("listed")],
    )
    result = agent.result(agent.start(checkout.task("Show env", max_iterations=5), access(llm)), timeout_s=60)
    assert result.verdict == "finished"
    seen = env_file.read_text()
    assert "PATH=" in seen  # the agent's terminal really ran env
    for name, value in PARENT_CREDENTIALS.items():
        assert value not in seen and f"{name}=" not in seen
    assert "PROMPTSHIP_" not in seen and "OPENHANDS_SESSION_API_KEY" not in seen
    assert agent_server.session_key not in seen  # the server's own key is not exported to the agent
    assert RUN_KEY_SECRET not in seen  # the per-run LLM key lives in the conversation, not in the terminal


def test_start_against_a_server_that_is_not_there_is_retryable() -> None:
    with httpx.Client(base_url="http://127.0.0.1:9", timeout=2) as http:
        agent = OpenHandsAgent(http)
        from promptship.domain.results import AgentHandle

        with pytest.raises(AgentError) as caught:
            agent.cancel(AgentHandle(conversation_id="0e995d1e-b74a-460d-aaae-d163e36f51aa", created=False))
    assert caught.value.retryable


def test_a_workspace_that_is_not_a_git_checkout_still_runs(
    agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    llm.script("gpt-4o", [create(f"{plain}/notes.txt", "hi\n"), finish("wrote notes")])
    task = checkout.task("Write notes", max_iterations=5).model_copy(update={"workspace": str(plain)})
    result = agent.result(agent.start(task, access(llm)), timeout_s=60)
    assert result.verdict == "finished"
    assert (plain / "notes.txt").read_text() == "hi\n"
    assert result.commits == ()


def test_an_agent_repeating_itself_ends_as_stuck(agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout) -> None:
    llm.script("gpt-4o", [terminal("ls /nonexistent-dir") for _ in range(30)])
    result = agent.result(agent.start(checkout.task("Loop", max_iterations=40), access(llm)), timeout_s=120)
    assert result.verdict == "stuck"
    assert result.error is not None and "stuck" in result.error
    assert len(llm.completions()) < 30  # the server's stuck detection stopped it, not the end of the script


def test_the_iteration_bound_ends_the_run_as_error(agent: OpenHandsAgent, llm: LLMStandIn, checkout: Checkout) -> None:
    llm.script("gpt-4o", [terminal(f"echo step {i}") for i in range(10)])
    result = agent.result(agent.start(checkout.task("Many steps", max_iterations=3), access(llm)), timeout_s=120)
    assert result.verdict == "error"
    assert result.error is not None and result.error.startswith("MaxIterationsReached")
    assert len(llm.completions()) == 3
