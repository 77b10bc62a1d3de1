"""Bench of the agent area: a real agent-server conversation driven by the scripted LLM stand-in.

Prints
- the round trip of one conversation (create → 3 scripted tool calls: file, commit, finish → result collected),
  through ``OpenHandsAgent`` with its default backoff, median/p99;
- the same workload observed by a tight 20 ms poll loop (the baseline, measured in the same run): the ratio is
  what the adapter's backoff adds to a short run;
- HTTP requests the adapter made per run, and one bare ``GET /health`` round trip.

Needs ``make openhands-install``; starts its own agent-server (scripts/openhands.sh) on a free port.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
from pydantic import SecretStr

from promptship.bench.stats import percentile, summary

RUNS = int(os.environ.get("PROMPTSHIP_BENCH_AGENT_RUNS", "6"))


def _git(cwd: Path, *args: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _workspace(root: Path) -> Path:
    ws = root / uuid.uuid4().hex[:8]
    ws.mkdir()
    (ws / "README.md").write_text("bench\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", "-A")
    _git(ws, "-c", "user.name=b", "-c", "user.email=b@b.invalid", "commit", "-qm", "init")
    return ws


def run() -> None:
    from promptship.adapters.openhands import OpenHandsAgent
    from promptship.domain.results import AgentTask
    from promptship.ports import AgentLLMAccess
    from promptship_sandbox.agent_server import running_agent_server
    from promptship_sandbox.llm_server import ToolCall, running_llm_stand_in

    with tempfile.TemporaryDirectory(prefix="promptship-bench-agent-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        stack = ExitStack()
        server = stack.enter_context(running_agent_server(tmpdir / "state"))
        print(f"   agent-server start (scripts/openhands.sh up): {time.perf_counter() - t0:.1f} s")
        url = server.url
        requests = 0

        def count(_request: httpx.Request) -> None:
            nonlocal requests
            requests += 1

        try:
            with (
                running_llm_stand_in() as llm,
                httpx.Client(base_url=url, timeout=30, event_hooks={"request": [count]}) as http,
            ):
                key = SecretStr(server.session_key)
                agent = OpenHandsAgent(http, session_api_key=key, llm_num_retries=0)
                access = AgentLLMAccess(
                    base_url=llm.base_url + "/v1", api_key=SecretStr("psk-bench"), model="openai/bench"
                )
                health = []
                for _ in range(20):
                    t = time.perf_counter()
                    http.get("/health")
                    health.append((time.perf_counter() - t) * 1000)

                def one(tight: bool) -> tuple[float, int]:
                    nonlocal requests
                    ws = _workspace(tmpdir)
                    llm.script(
                        "bench",
                        [
                            [
                                ToolCall(
                                    "file_editor", {"command": "create", "path": f"{ws}/a.py", "file_text": "A=1\n"}
                                )
                            ],
                            [ToolCall("terminal", {"command": "git add -A && git commit -qm a"})],
                            [ToolCall("finish", {"message": "done"})],
                        ],
                    )
                    task = AgentTask(
                        run_key=uuid.uuid4().hex[:16],
                        conversation_id=str(uuid.uuid4()),
                        instruction="create a.py and commit",
                        workspace=str(ws),
                        model="openai/bench",
                        max_iterations=10,
                    )
                    before = requests
                    t = time.perf_counter()
                    handle = agent.start(task, access)
                    if tight:  # baseline: notice the end within 20 ms, then collect the same result
                        while http.get(
                            f"/api/conversations/{handle.conversation_id}",
                            headers={"X-Session-API-Key": key.get_secret_value()},
                        ).json()["execution_status"] not in ("finished", "error", "stuck"):
                            time.sleep(0.02)
                    result = agent.result(handle, timeout_s=120)
                    elapsed = time.perf_counter() - t
                    if result.verdict != "finished" or len(result.commits) != 1:
                        raise RuntimeError(f"bench run ended {result.verdict}: {result.error}")
                    agent.cancel(handle)
                    return elapsed, requests - before

                one(False)  # warm-up (first terminal session, imports)
                adapter, tight, reqs = [], [], []
                for _ in range(RUNS):
                    elapsed, n = one(False)
                    adapter.append(elapsed * 1000)
                    reqs.append(n)
                    tight.append(one(True)[0] * 1000)
        finally:
            stack.close()

    print(f"   GET /health round trip: {summary(health)}")
    print(f"   conversation round trip, OpenHandsAgent (backoff 0.25 s x1.5): {summary(adapter)}")
    print(f"   conversation round trip, baseline 20 ms poll:               {summary(tight)}")
    ratio = statistics.median(adapter) / statistics.median(tight)
    print(
        f"   polling overhead: median {statistics.median(adapter) - statistics.median(tight):+.0f} ms "
        f"(ratio {ratio:.2f}x the baseline), p99 adapter {percentile(adapter, 99):.0f} ms"
    )
    print(f"   HTTP requests by the adapter per run (start..collect..cancel): median {statistics.median(reqs):.0f}")
