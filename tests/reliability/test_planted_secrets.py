"""Planted secrets: one request through the real dev_cycle flow on a real Prefect server (SQLite), the local forge
(REST, git, CI), the real LiteLLMGateway + gateway service and the LLM stand-in, with canary values planted
everywhere a secret enters — then ``scan_leaks`` over everything the run left: zero leaks outside the allowlist.

Planted: the GitHub token promptship uses (and the forge checks), the OpenRouter key, the webhook secret, the
agent-server session key and the store's prompt key (settings only here: the agent is the scripted one, and no
webhook is received), the per-run gateway key (minted by the gateway, used by the agent for its own LLM call), a
secret inside the prompt, a secret in the repository the agent reads (and sends through the gateway), and a
secret CI prints into its job log on the first (red) round, whose log excerpt reaches the repair instruction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from promptship.domain.request import DevRequest
from promptship.domain.results import AgentHandle, AgentResult, AgentTask, Usage
from promptship.ports import AgentLLMAccess
from promptship.settings import Settings
from promptship.wiring import installed
from promptship_sandbox import credentials
from promptship_sandbox.fakes import FakeCodeAgent
from promptship_sandbox.reliability.leaks import (
    ALLOWLIST,
    forge_api_objects,
    llm_stand_in_objects,
    prefect_api_objects,
    scan_leaks,
)

pytestmark = [pytest.mark.flow, pytest.mark.forge, pytest.mark.gateway]

OWNER, NAME = "demo", "app"
REPO = f"{OWNER}/{NAME}"

# Red on the first round (it prints the deploy password CI reads from the repository), green once change_2.py exists.
MAKEFILE = """\
test:
\t@if [ -f change_1.py ] && [ ! -f change_2.py ]; then \\
\t  echo "FAILED test_deploy: login with DEPLOY_PASSWORD=$$(cat ci/deploy-password) refused"; exit 1; fi
\t@echo "all tests passed"
"""


class ReadingAgent(FakeCodeAgent):
    """The scripted agent, doing what a real one does with secrets: it reads the repository (the config file
    with the planted key) and sends it to its model through the gateway service with its per-run key; it writes
    a fixed change per instruction (not the instruction itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []
        self.llm_answers: list[int] = []

    def start(self, task: AgentTask, llm: AgentLLMAccess) -> AgentHandle:
        handle = super().start(task, llm)
        key = llm.api_key.get_secret_value()
        self.keys.append(key)
        config = (Path(task.workspace) / "config" / "deploy.env").read_text()
        answer = httpx.post(
            f"{llm.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": llm.model.removeprefix("openai/"),
                "messages": [{"role": "user", "content": f"{task.instruction}\n\nconfig/deploy.env:\n{config}"}],
            },
            timeout=60,
        )
        self.llm_answers.append(answer.status_code)
        return handle

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        conv = self.conversations[handle.conversation_id]
        if conv.get("answered") == len(conv["instructions"]) and "last" in conv:
            return conv["last"]
        task: AgentTask = conv["task"]
        name = f"change_{len(conv['instructions'])}.py"
        (Path(task.workspace) / name).write_text(f"VALUE = {len(conv['instructions'])}\n")
        conv["last"] = AgentResult(
            verdict="finished",
            conversation_id=handle.conversation_id,
            final_message="done",
            changed_files=(name,),
            usage=Usage(prompt_tokens=1000, completion_tokens=200, cost_usd=0.0),
        )
        conv["answered"] = len(conv["instructions"])
        return conv["last"]


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Everything this process logs (root and Prefect's loggers, DEBUG) goes to a file the scan reads."""
    path = tmp_path / "home" / "logs" / "process.log"
    path.parent.mkdir(parents=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield path
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)
    handler.close()


def test_secrets_planted_everywhere_leak_nowhere_outside_the_allowlist(tmp_path: Path, log_file: Path) -> None:
    from flows.dev_cycle import dev_cycle
    from promptship.domain.ci import Backoff
    from promptship_sandbox.fakes import fake_services
    from promptship_sandbox.forge import forge_github, running_forge
    from promptship_sandbox.llm_gateway import running_sandbox_gateway
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect
    from tests.github.conftest import RecordingClock

    canaries: dict[str, str] = {
        "github_token": credentials.github_token("ghp_"),
        "openrouter_key": credentials.openrouter_key(),
        "webhook_secret": credentials.webhook_secret(),
        "session_key": credentials.session_key(),
        "store_key": credentials.store_key(),
        "prompt_secret": credentials.github_token("ghp_"),
        "repo_secret": credentials.openrouter_key(),
        "ci_secret": "Dp-" + credentials.github_token("")[:24],
    }
    src = tmp_path / "src"
    (src / "backend").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "ci").mkdir()
    (src / "Makefile").write_text(MAKEFILE)
    (src / "backend" / "Dockerfile").write_text("FROM scratch\n")
    (src / "config" / "deploy.env").write_text(f"OPENROUTER_API_KEY={canaries['repo_secret']}\n")
    (src / "ci" / "deploy-password").write_text(canaries["ci_secret"] + "\n")

    home, prefect_home, forge_root = tmp_path / "home", tmp_path / "prefect", tmp_path / "forge"
    settings = Settings(home=home)
    settings.health.url = "http://127.0.0.1:9/health"
    settings.store_key = SecretStr(canaries["store_key"])
    settings.github.token = SecretStr(canaries["github_token"])
    settings.github.webhook_secret = SecretStr(canaries["webhook_secret"])
    settings.openhands.session_api_key = SecretStr(canaries["session_key"])
    request = DevRequest(
        prompt=f"Add GET /version and make the deploy job log in with {canaries['prompt_secret']} from now on",
        repository=REPO,
        auto_merge=True,
    )

    with (
        running_prefect_server(prefect_home) as server,
        using_prefect(server),
        running_forge(forge_root, webhook_secret=canaries["webhook_secret"]) as forge,
    ):
        forge.add_user(OWNER, token=canaries["github_token"])
        forge.seed_repository(OWNER, NAME, src)
        assert forge.wait_idle(120)
        from promptship.adapters.github import GitHubHost

        host = GitHubHost(
            forge_github(forge, canaries["github_token"]),
            token=SecretStr(canaries["github_token"]),
            clock=RecordingClock(),
            backoff=Backoff(initial_s=1.0, factor=1.5, max_s=5.0),
        )
        agent = ReadingAgent()
        services = fake_services(settings, code_host=host, agent=agent)
        with running_sandbox_gateway(
            settings, engine=services.sink.engine, openrouter_key=canaries["openrouter_key"]
        ) as sandbox:
            services.llm = sandbox.gateway
            with installed(services):
                # sealed before it is submitted, as `promptship run` and the webhook receiver do (a run started
                # with the prompt itself, the UI form's case, is docs/SECURITY.md's known limit)
                report = dev_cycle(services.sink.seal(request))
            assert report.outcome == "deployed", report
            steps = {s.step: s.verdict for s in report.steps}
            assert steps["wait_for_ci#1"] == "failed" and steps["wait_for_ci#2"] == "passed"
            # the planted values really travelled: the agent got a per-run key and used it; CI printed its secret
            assert len(agent.keys) == 1 and agent.llm_answers == [200]
            canaries["run_key"] = agent.keys[0]
            objects = {
                **prefect_api_objects(server.api_url, expect=("flow_run", "task_run", "log", "event")),
                **forge_api_objects(forge.api_url, canaries["github_token"], [REPO], git_root=forge_root / "git"),
                **llm_stand_in_objects(sandbox.llm.requests),
                "report": report.model_dump_json(),
            }
            roots = {"home": home, "prefect": prefect_home, "forge": forge_root}
            scan = scan_leaks(roots, canaries, ALLOWLIST, objects=objects)

    print("\n".join(scan.lines()))
    (tmp_path / "leak-report.txt").write_text("\n".join(scan.lines()))
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    assert scan.leaks == (), "\n".join(h.line() for h in scan.leaks)
    # the scan saw the places it claims to have seen: files of each root, git objects, API objects of each kind
    assert scan.files > 20 and scan.git_objects > 10 and scan.api_objects > 20
    kinds: set[Any] = {p.split("/")[0] for p in objects}
    # the CI printed its secret into the job log (kept by the forge only), and the PR text is redacted
    assert any(h.canary == "ci_secret" and "/actions/jobs/" in h.place for h in scan.allowed), scan.lines()
    assert any("[REDACTED" in t for p, t in objects.items() if p.startswith("forge:demo/app/pulls/"))
    # the agent's LLM call carried the repository's key to the gateway: it reached only the local model, if any
    assert any(p.startswith("llm-stand-in:") and ".body" in p for p in objects)
    assert {"prefect:flow_run", "prefect:task_run", "prefect:log", "prefect:event", "forge:demo"} <= kinds
