"""A ``/promptship`` follow-up on the real OpenHands agent-server: the same conversation hears the follow-up and
works again with the new attempt's gateway key, the ledger charges each attempt for its own calls, and the run
deploys.

real flow ─ GitHubHost (PyGithub, git) ─▶ local forge (REST, git, CI)
          ─ OpenHandsAgent ─▶ agent-server 1.57 ─(per-attempt key)─▶ gateway service ─▶ LLM stand-in (scripted)
the cluster and the health probe are scripted fakes (as in tests/writeback/test_writeback.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flows.dev_cycle import dev_cycle
from promptship.adapters.openhands import OpenHandsAgent
from promptship.domain.request import DevRequest, conversation_id_for
from promptship.settings import Settings
from promptship.store import Store
from promptship.wiring import installed
from promptship_sandbox.agent_server import AgentServerProcess, agent_server_installed, running_agent_server
from promptship_sandbox.fakes import fake_services
from promptship_sandbox.llm_gateway import running_sandbox_gateway
from promptship_sandbox.llm_server import Reply, ToolCall
from tests.conftest import require
from tests.github.conftest import RecordingClock, client, make_host
from tests.writeback.test_writeback import REPO, forge  # noqa: F401  # the forge fixture: a repo with CI

pytestmark = [pytest.mark.writeback, pytest.mark.openhands, pytest.mark.forge, pytest.mark.flow]


@pytest.fixture
def agent_server(tmp_path: Path) -> Iterator[AgentServerProcess]:
    ok, why = agent_server_installed()
    require("openhands agent-server", ok, why)
    with running_agent_server(tmp_path / "openhands") as server:
        yield server


def _developer(workspace: str, name: str, text: str) -> list[Reply]:
    """One piece of work as the LLM stand-in answers it: write a file, commit it, finish."""
    commit = f"git add -A && git -c user.name=agent -c user.email=agent@example.invalid commit -qm 'add {name}'"
    return [
        [ToolCall("file_editor", {"command": "create", "path": f"{workspace}/{name}", "file_text": text})],
        [ToolCall("terminal", {"command": commit})],
        [ToolCall("finish", {"message": f"added {name}"})],
    ]


def test_a_follow_up_continues_the_one_conversation_on_the_real_agent_server_and_deploys(
    forge: Any,  # noqa: F811
    agent_server: AgentServerProcess,
    tmp_path: Path,
    prefect_harness: None,
) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.health.url = "http://127.0.0.1:9/health"
    settings.pipeline.merge_timeout_s = 5  # nobody merges attempt 1: it ends "waiting" with its PR open
    ports = fake_services(settings, code_host=make_host(forge, RecordingClock()))
    store = ports.sink
    assert isinstance(store, Store)
    first_request = DevRequest(prompt=f"Add a VERSION file ({uuid.uuid4().hex[:8]})", repository=REPO)
    key = first_request.run_key
    workspace = str(Path(ports.limits().workspace_root) / key)

    with (
        running_sandbox_gateway(settings, engine=store.engine) as sandbox,
        httpx.Client(base_url=agent_server.url, timeout=30) as http,
        httpx.Client(base_url=sandbox.url, timeout=30) as to_gateway,
    ):
        keys: list[str] = []  # the per-attempt keys the gateway issued (to try them after their attempt)
        issue = sandbox.gateway.agent_access

        def agent_access(*args: Any, **kwargs: Any) -> Any:
            access = issue(*args, **kwargs)
            keys.append(access.api_key.get_secret_value())
            return access

        sandbox.gateway.agent_access = agent_access  # type: ignore[method-assign]
        ports.llm = sandbox.gateway
        ports.agent = OpenHandsAgent(http, session_api_key=SecretStr(agent_server.session_key), llm_num_retries=0)
        ports.boundaries.update({"llm": "protocol stand-in", "agent": "real", "code_host": "protocol stand-in"})

        with installed(ports):
            sandbox.llm.script("*", _developer(workspace, "VERSION", "1.0\n"))
            first = dev_cycle(first_request)
            assert first.outcome == "waiting", first
            (pr,) = list(client(forge).get_repo(REPO).get_pulls(state="open"))
            head_before = pr.head.sha
            calls_of_attempt_1 = len(sandbox.llm.completions())

            sandbox.llm.script("*", _developer(workspace, "READY", "ready\n"))
            follow_up = DevRequest(
                prompt="also add a READY file",
                repository=REPO,
                continues=key,
                source_pr=pr.number,
                comment_id=1,
                auto_merge=True,
            )
            report = dev_cycle(follow_up)

        assert report.outcome == "deployed" and report.run_key == key and report.attempt_number == 2, report
        pulls = list(client(forge).get_repo(REPO).get_pulls(state="all"))
        assert len(pulls) == 1 and pulls[0].merged and pulls[0].head.sha != head_before
        assert (Path(workspace) / "READY").read_text() == "ready\n"  # the follow-up's work, pushed and merged

        # the agent-server shows ONE conversation, with the follow-up in it
        session = {"X-Session-API-Key": agent_server.session_key}
        conversations = http.get("/api/conversations/search", params={"limit": 100}, headers=session).json()
        assert [c["id"] for c in conversations["items"]] == [conversation_id_for(key)]
        events = http.get(
            f"/api/conversations/{conversation_id_for(key)}/events/search",
            params={"kind": "MessageEvent", "limit": 100},
            headers=session,
        ).json()["items"]
        said = [
            part.get("text", "")
            for e in events
            if e.get("source") == "user"
            for part in (e.get("llm_message") or {}).get("content") or []
        ]
        assert len(said) == 2 and "Add a VERSION file" in said[0] and "also add a READY file" in said[1]

        # each attempt paid for its own calls: the follow-up's went through attempt 2's key
        attempts = {a.number: a.id for a in store.attempts(key)}
        assert set(attempts) == {1, 2}
        agent_calls_2 = len(sandbox.llm.completions()) - calls_of_attempt_1
        assert agent_calls_2 >= 3  # write, commit, finish
        ledger = sandbox.gateway.ledger
        assert ledger.run_usage(attempts[1]).prompt_tokens > 0
        assert ledger.run_usage(attempts[2]).prompt_tokens > 0
        assert len(keys) == 2  # one key per attempt

        # a key of a finished attempt stops working: both attempts ended
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for old in keys:
            late = to_gateway.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {old}"})
            assert late.status_code == 401, late.text
