"""Part 6: the soak — 50 sequential and then 10 concurrent requests, each a signed GitHub delivery, through the
long-lived services as separate processes started once for the whole soak:

- the forge (``promptship forge serve``: REST + git, CI on every push), one repository per request (so that its
  PRs and merges are counted exactly), its webhooks going to the receiver;
- the webhook receiver (``promptship webhook serve --starter deployment``): a request is an issue opened on the
  forge with the bot's label; the forge signs and delivers ``issues.labeled`` to the receiver, which seals the
  prompt into the store and starts the ``dev-cycle`` deployment run on the campaign's Prefect server, run by the
  campaign's worker;
- the gateway service (``promptship gateway serve``) with the LLM stand-in (in this process) as both providers:
  the agent's model endpoint (the per-run keys the flow mints, ``agent_access``, name it);
- the Prefect server and the worker of the campaign.

Every soak run shares one fakes directory (``<work>/soak/fakes``: the worker's ``PROMPTSHIP_TEST_FAKES_DIR``,
since a run started by the receiver has no job variables of its own) whose ``boundaries.json`` makes the
flow-run process use the real ``GitHubHost`` on the forge and the real ``LiteLLMGateway`` (ledger in the shared
store) on the LLM stand-in; the code agent, the cluster and the health probe stay durable fakes. The flow's own
LLM calls (the PR text) go from the flow-run process's ``LiteLLMGateway`` straight to the stand-in: promptship has
no adapter that sends the LLMGateway port's calls to the gateway service.

Webhook requests are not auto-merged (``DevRequest.auto_merge`` is off for them): the soak plays the person, who
squash-merges a request's PR on the forge once its CI is green; the run's merge step finds it merged.

Each request is judged on what the real parts and the store hold for it (``judge``): one flow run, one PR, one
merge, one agent conversation run once, one rollout, one attempt, ledger charges equal to the completions the
LLM stand-in answered for it, the run ``Completed`` with the report ``deployed`` within the time limit.
"""

from __future__ import annotations

import contextvars
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from promptship_sandbox.durable_fakes import JsonState, write_boundaries
from promptship_sandbox.net import free_port
from promptship_sandbox.reliability import campaign as kc
from promptship_sandbox.reliability.faults import conversations_tagged

OWNER = "demo"
LABEL = "promptship"  # settings.github.trigger_label's default
REQUEST_TIMEOUT_S = 2 * kc.RUN_TIMEOUT_S  # one request, from its issue to its run's end, on a loaded machine
START_TIMEOUT_S = 120.0

Verdict = Literal["ok", "lost", "stuck", "duplicate"]
ONCE = ("flow runs", "prs", "merges", "conversations", "agent runs", "rollouts", "attempts")


@dataclass
class RequestCounts:
    """What the real parts, the store and Prefect hold for one soak request."""

    tag: str
    ended: bool = False  # its run ended (Completed, Failed or Crashed) within the time limit
    state: str = "NONE"  # the flow run's state type (NONE: the delivery started no run)
    outcome: str | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # ONCE, "charges", "completions"


def judge(r: RequestCounts) -> tuple[Verdict, list[str]]:
    """The soak's rule for one request: ``duplicate`` when a side effect happened more than once or a charge has
    no completion of its own (or a completion no charge); else ``lost`` when no run was started, or it ended
    without deploying; ``stuck`` when its run had not ended in time; ``ok``."""
    c = r.counts
    twice = [f"{k} {c.get(k, 0)}" for k in ONCE if c.get(k, 0) > 1]
    if c.get("charges", 0) != c.get("completions", 0):
        twice.append(f"charges {c.get('charges', 0)} vs completions {c.get('completions', 0)}")
    if twice:
        return "duplicate", twice
    if c.get("flow runs", 0) == 0:
        return "lost", ["no flow run started"]
    if not r.ended:
        return "stuck", [f"flow run {r.state} after {REQUEST_TIMEOUT_S:.0f} s"]
    missing = [f"{k} 0" for k in ONCE if c.get(k, 0) == 0]
    if r.state != "COMPLETED" or r.outcome != "deployed" or missing:
        return "lost", [f"flow run {r.state}, outcome {r.outcome}", *missing]
    return "ok", []


@dataclass
class PhaseResult:
    phase: str
    requests: list[RequestCounts]
    seconds: float

    def verdicts(self) -> list[tuple[RequestCounts, Verdict, list[str]]]:
        return [(r, *judge(r)) for r in self.requests]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for _, v, _ in self.verdicts() if v == verdict)


def process_usage(pid: int) -> tuple[int, int]:
    """(resident memory in KiB, open file descriptors) of a process and the live processes below it (a worker's
    flow-run processes, the forge's CI jobs); (0, 0) once it is gone."""
    from promptship_sandbox.prefect_server import live_descendants

    rss = fds = 0
    for p in [pid, *live_descendants(pid)]:
        try:
            status = (Path("/proc") / str(p) / "status").read_text()
            rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            fds += len(list((Path("/proc") / str(p) / "fd").iterdir()))
        except (OSError, ValueError):
            continue
    return rss, fds


def _wait_port(port: int, proc: Any, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited {proc.returncode}: {log.read_text()[-1500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the {what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f} s")


class SoakParts:
    """The long-lived services of the soak (see the module docstring), started once, stopped with ``stack``."""

    def __init__(self, stack: ExitStack, harness: kc.Harness, work: Path, tags: list[str], *, agent: bool = True):
        from promptship_sandbox import credentials
        from promptship_sandbox.agent_server import agent_server_installed, running_agent_server
        from promptship_sandbox.llm_server import running_llm_stand_in

        self.harness = harness
        self.work = work
        self.fakes = work / "fakes"
        self.fakes.mkdir(parents=True, exist_ok=True)
        home = self.fakes / "home"  # the store the flow runs use (durable_services): receiver and gateway share it
        self.repositories = {tag: f"{OWNER}/{tag}" for tag in tags}
        self.token = credentials.github_token("ghp_")  # the forge owner's; in boundaries.json (0600), not a canary
        self.secret = harness.canaries.get("webhook_secret") or credentials.webhook_secret()
        self.llm = stack.enter_context(running_llm_stand_in())
        seed = work / "seed"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "README.md").write_text("soak\n")
        (seed / "Makefile").write_text("test:\n\t@echo ok\n")
        python = sys.executable
        self.procs: dict[str, Any] = {}

        receiver_port, gateway_port = free_port(), free_port()
        self.receiver_url = f"http://127.0.0.1:{receiver_port}"
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        seeds = [a for tag in tags for a in ("--seed", f"{self.repositories[tag]}={seed}")]
        self.procs["forge"] = self._spawn(
            "forge",
            [
                python,
                "-m",
                "promptship.cli",
                "forge",
                "serve",
                "--port",
                "0",
                "--root",
                str(work / "forge"),
                *seeds,
                "--webhook-url",
                f"{self.receiver_url}/github/webhook",
            ],
            PROMPTSHIP_GITHUB__TOKEN=self.token,
            PROMPTSHIP_GITHUB_WEBHOOK_SECRET=self.secret,
        )
        self.api_url = self._forge_api_url(self.procs["forge"], work / "forge.log")
        self.web_url = self.api_url.removesuffix("/api/v3")
        self.http = stack.enter_context(
            httpx.Client(base_url=self.api_url, headers={"Authorization": f"token {self.token}"}, timeout=30)
        )
        llm_env = {
            "PROMPTSHIP_HOME": str(home),
            "PROMPTSHIP_LLM__OLLAMA_BASE_URL": self.llm.base_url,
            "PROMPTSHIP_LLM__OPENROUTER_BASE_URL": self.llm.base_url + "/v1",
        }
        self.procs["gateway service"] = self._spawn(
            "gateway", [python, "-m", "promptship.cli", "gateway", "serve", "--port", str(gateway_port)], **llm_env
        )
        boundaries = {
            "forge": {"api_url": self.api_url, "git_url": self.web_url, "token": self.token},
            "llm": {"base_url": self.llm.base_url, "gateway_url": self.gateway_url},
        }
        self.agent: Any = None
        self.agent_note = ""
        installed, why = agent_server_installed()
        if agent and installed:
            state = work / "openhands"
            state.mkdir(parents=True, exist_ok=True)
            self.agent = stack.enter_context(running_agent_server(state))
            self.agent_http = stack.enter_context(
                httpx.Client(base_url=self.agent.url, headers={"X-Session-API-Key": self.agent.session_key}, timeout=30)
            )
            boundaries["agent"] = {"url": self.agent.url, "session_key": self.agent.session_key}
        else:
            self.agent_note = why or "the agent-server was left out (agent=False)"
        write_boundaries(self.fakes, boundaries)
        self.procs["receiver"] = self._spawn(
            "receiver",
            [
                python,
                "-m",
                "promptship.cli",
                "webhook",
                "serve",
                "--port",
                str(receiver_port),
                "--starter",
                "deployment",
            ],
            PROMPTSHIP_HOME=str(home),
            PROMPTSHIP_TEST_FAKES_DIR=str(self.fakes),
            PROMPTSHIP_GITHUB_WEBHOOK_SECRET=self.secret,
            PROMPTSHIP_GITHUB__ALLOWED_REPOSITORIES=json.dumps(sorted(self.repositories.values())),
        )
        for name, port in (("gateway service", gateway_port), ("receiver", receiver_port)):
            _wait_port(port, self.procs[name], work / f"{name.split()[0]}.log", name)
        for proc in self.procs.values():
            stack.callback(kc.stop_process, proc)

    def objects(self) -> dict[str, str]:
        """What the soak's services keep only in memory, for the campaign's leak scan (their files are under the
        campaign's work directory, scanned as files): the LLM stand-in's request log and the forge's API objects of
        every soak repository — as Part 3b's ``wholeruns.Parts.objects``."""
        from promptship_sandbox.reliability.leaks import forge_api_objects, llm_stand_in_objects

        return llm_stand_in_objects(self.llm.requests) | forge_api_objects(
            self.api_url, self.token, list(self.repositories.values()), git_root=self.work / "forge" / "git"
        )

    def _spawn(self, name: str, args: list[str], **env: str) -> Any:
        return self.harness.spawn(args, str((self.work / f"{name}.log").relative_to(self.harness.work)), **env)

    @staticmethod
    def _forge_api_url(proc: Any, log: Path) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(r"forge API\s+(http://\S+/api/v3)", log.read_text() if log.exists() else "")
            if found:
                return found.group(1)
            if proc.poll() is not None:
                raise RuntimeError(f"the forge exited {proc.returncode}: {log.read_text()[-1500:]}")
            time.sleep(0.2)
        raise RuntimeError(f"the forge did not start within {START_TIMEOUT_S:.0f} s")

    # -- a request, and the person who merges its PR ----------------------------------------------------------
    def ask(self, tag: str) -> None:
        """Open the request's issue on the forge with the bot's label: the forge delivers ``issues.labeled``.
        With the agent-server, the LLM stand-in first gets the request's developer: the agent's conversation
        (its instruction names the prompt, so its tag) writes one file with the terminal tool and finishes."""
        if self.agent is not None:
            from promptship_sandbox.llm_server import ToolCall

            self.llm.script_conversation(
                f"[{tag}]",
                [
                    [ToolCall("terminal", {"command": f"echo ok > soak_{tag.replace('-', '_')}.txt"})],
                    [ToolCall("finish", {"message": "wrote the change"})],
                ],
            )
        r = self.http.post(
            f"/repos/{self.repositories[tag]}/issues",
            json={"title": kc.request_for(tag, "deploy").prompt, "body": "From the soak.", "labels": [LABEL]},
        )
        r.raise_for_status()

    def merge_green(self, tag: str) -> None:
        """The person: squash-merge the request's open PRs whose head's CI is green."""
        repo = self.repositories[tag]
        pulls = self.http.get(f"/repos/{repo}/pulls", params={"state": "open"})
        if pulls.status_code != 200:
            return
        for pr in pulls.json():
            sha = pr["head"]["sha"]
            status = self.http.get(f"/repos/{repo}/commits/{sha}/status")
            if status.status_code == 200 and status.json().get("state") == "success":
                self.http.put(f"/repos/{repo}/pulls/{pr['number']}/merge", json={"merge_method": "squash", "sha": sha})

    # -- what the parts hold ----------------------------------------------------------------------------------
    def forge_counts(self, tag: str) -> dict[str, int]:
        r = self.http.get(f"/repos/{self.repositories[tag]}/pulls", params={"state": "all", "per_page": 100})
        r.raise_for_status()
        prs = [p for p in r.json() if not p["head"]["ref"].startswith("revert-")]
        return {"prs": len(prs), "merges": sum(1 for p in prs if p.get("merged_at"))}

    def agent_counts(self, key: str) -> dict[str, int]:
        """The agent-server's conversations of request ``key`` (tagged with it) and the instructions they got."""
        found = conversations_tagged(self.agent_http, key)
        instructions = 0
        for c in found:
            r = self.agent_http.get(
                f"/api/conversations/{c['id']}/events/search",
                params={"kind": "MessageEvent", "source": "user", "limit": 100},
            )
            r.raise_for_status()
            instructions += len(r.json().get("items") or [])
        return {"conversations": len(found), "agent runs": instructions}

    def usage(self) -> dict[str, tuple[int, int]]:
        out = {name: process_usage(proc.pid) for name, proc in self.procs.items() if proc.poll() is None}
        if self.agent is not None:
            pid = int((self.agent.state_dir / "agent-server.pid").read_text().strip())
            out["agent-server"] = process_usage(pid)
        out["prefect server"] = process_usage(self.harness.server.process.pid)
        worker = self.harness.worker
        if worker is not None and worker.poll() is None:
            out["worker"] = process_usage(worker.pid)
        return out


def flow_runs_by_repository() -> dict[str, list[Any]]:
    """The receiver's flow runs (tag ``github-webhook``) by the repository of their request."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    found: dict[str, list[Any]] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["github-webhook"])),
                limit=200,
                offset=offset,
            )
            for run in page:
                repository = str((run.parameters.get("request") or {}).get("repository", ""))
                found.setdefault(repository, []).append(run)
            if len(page) < 200:
                return found
            offset += 200


def request_counts(parts: SoakParts, tag: str, runs: list[Any], started: float, ended: bool) -> RequestCounts:
    from sqlalchemy import func, select

    from promptship.domain.request import DevRequest
    from promptship.store.ledger import LLMCallRow

    out = RequestCounts(tag, ended=ended, seconds=time.monotonic() - started)
    counts = {"flow runs": len(runs), **parts.forge_counts(tag)}
    store = kc._store(parts.fakes)
    state = JsonState(parts.fakes).read()
    key = DevRequest.model_validate(runs[0].parameters["request"]).run_key if runs else None
    attempts = store.attempts(key) if key else []
    if runs:
        out.state = runs[0].state.type.value if runs[0].state is not None else "NONE"
        report = store.run(key) if key else None
        out.outcome = report.outcome if report else None
    if parts.agent is not None:
        counts |= parts.agent_counts(key) if key else {"conversations": 0, "agent runs": 0}
    else:
        conversations = [c for c in state.get("conversations", {}).values() if c.get("run_key") == key]
        counts["conversations"] = len(conversations)
        counts["agent runs"] = sum(c.get("runs", 0) for c in conversations)
    counts["rollouts"] = int(state.get("rollouts_by_key", {}).get(key, 0)) if key else 0
    counts["attempts"] = len(attempts)
    ids = [a.id for a in attempts]
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        counts["charges"] = (
            int(conn.execute(select(func.count()).where(LLMCallRow.run_key.in_(ids))).scalar() or 0) if ids else 0
        )
    counts["completions"] = sum(1 for r in parts.llm.completions() if r.contains(f"[{tag}]"))
    out.counts = counts
    return out


def _run_ended(parts: SoakParts, runs: list[Any]) -> bool:
    from promptship.domain.request import DevRequest

    if not runs:
        return False
    key = DevRequest.model_validate(runs[0].parameters["request"]).run_key
    attempt = kc._store(parts.fakes).latest_attempt(key)
    final = kc.flow_state(str(runs[0].id)) in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    return final and attempt is not None and attempt.status == "ended"


def run_phase(
    parts: SoakParts, phase: str, tags: list[str], at_once: bool, echo: Callable[[str], None] = print
) -> PhaseResult:
    """Ask for ``tags`` (one after the other, each waited for; or all at once) and count what each left."""
    started = time.monotonic()
    stop = threading.Event()
    active: set[str] = set()

    def person() -> None:
        while not stop.is_set():
            for tag in sorted(active):
                try:
                    parts.merge_green(tag)
                except httpx.HTTPError:
                    pass
            stop.wait(0.5)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(person,), daemon=True)
    thread.start()
    results: dict[str, RequestCounts] = {}
    asked: dict[str, float] = {}

    def settle(pending: list[str]) -> None:
        deadline = {t: asked[t] + REQUEST_TIMEOUT_S for t in pending}
        left = list(pending)
        while left:
            by_repo = flow_runs_by_repository()
            for tag in list(left):
                runs = by_repo.get(parts.repositories[tag], [])
                done = _run_ended(parts, runs)
                if done or time.monotonic() > deadline[tag]:
                    time.sleep(1.0 if done else 0)  # a late second run or PR would still be counted
                    runs = flow_runs_by_repository().get(parts.repositories[tag], [])
                    results[tag] = found = request_counts(parts, tag, runs, asked[tag], done)
                    verdict, why = judge(found)
                    echo(f"[soak] {tag}: {verdict} in {found.seconds:.0f} s" + (f" ({'; '.join(why)})" if why else ""))
                    active.discard(tag)
                    left.remove(tag)
            time.sleep(0.5)

    try:
        if at_once:
            with ThreadPoolExecutor(max_workers=len(tags)) as pool:
                for tag in tags:
                    active.add(tag)
                    asked[tag] = time.monotonic()
                list(pool.map(parts.ask, tags))
            settle(tags)
        else:
            for tag in tags:
                active.add(tag)
                asked[tag] = time.monotonic()
                parts.ask(tag)
                settle([tag])
    finally:
        stop.set()
        thread.join(timeout=10)
    return PhaseResult(phase, [results[t] for t in tags], time.monotonic() - started)


@dataclass
class SoakRun:
    phases: list[PhaseResult] = field(default_factory=list)
    usage_start: dict[str, tuple[int, int]] = field(default_factory=dict)
    usage_end: dict[str, tuple[int, int]] = field(default_factory=dict)
    note: str = ""
    agent_note: str = ""
    objects: dict[str, str] = field(default_factory=dict)  # what the services kept in memory, for the leak scan

    @property
    def lost(self) -> int:
        return sum(p.count("lost") + p.count("stuck") for p in self.phases) + (1 if self.note else 0)

    @property
    def duplicates(self) -> int:
        return sum(p.count("duplicate") for p in self.phases)


def run_soak(harness: kc.Harness, sequential: int, concurrent: int, echo: Callable[[str], None]) -> SoakRun:
    """Start the soak's services, restart the worker on the soak's fakes, run both phases, stop the services."""
    seq = [f"soak-seq-{i:02d}" for i in range(sequential)]
    par = [f"soak-par-{i:02d}" for i in range(concurrent)]
    run = SoakRun()
    work = harness.work / "soak"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        try:
            parts = SoakParts(stack, harness, work, seq + par)
        except RuntimeError as exc:
            run.note = str(exc)
            return run
        # a run the receiver starts has no job variables: the worker's environment names the soak's fakes
        if harness.worker is not None:
            kc.stop_process(harness.worker)
        harness.worker_env = {"PROMPTSHIP_TEST_FAKES_DIR": str(parts.fakes)}
        harness.start_worker()
        time.sleep(3.0)  # the worker's first poll: its figures at the start are those of a polling worker
        run.usage_start = parts.usage()
        run.agent_note = parts.agent_note
        echo(f"soak: services up ({', '.join(f'{n} pid {p.pid}' for n, p in parts.procs.items())})")
        run.phases.append(run_phase(parts, f"{sequential} sequential", seq, at_once=False, echo=echo))
        echo(f"soak: {sequential} sequential done in {run.phases[-1].seconds:.0f} s")
        run.phases.append(run_phase(parts, f"{concurrent} concurrent", par, at_once=True, echo=echo))
        # the figures at the end once the last flow-run processes are gone (they exit after their run ended)
        kc.wait_for(lambda: not harness.worker_children(), 60, poll_s=1.0)
        run.usage_end = parts.usage()
        run.objects = parts.objects()  # before the services stop: the stand-in's log and the forge's objects
        kc.stop_process(harness.worker)  # type: ignore[arg-type]
        harness.worker_env = {}
        harness.start_worker()
    return run


def table_lines(run: SoakRun) -> list[str]:
    if run.note:
        return [f"the soak did not start: {run.note}"]
    header = (
        f"{'phase':<14} {'runs':>4} {'ok':>3} {'lost':>4} {'stuck':>5} {'duplicates':>10} {'seconds':>8} "
        f"{'per run median/max':>18}"
    )
    lines = [header, "-" * len(header)]
    for p in run.phases:
        took = sorted(r.seconds for r in p.requests)
        median = took[len(took) // 2] if took else 0.0
        lines.append(
            f"{p.phase:<14} {len(p.requests):>4} {p.count('ok'):>3} {p.count('lost'):>4} {p.count('stuck'):>5} "
            f"{p.count('duplicate'):>10} {p.seconds:>8.1f} {f'{median:.1f}/{max(took, default=0):.1f} s':>18}"
        )
    for p in run.phases:
        for r, verdict, why in p.verdicts():
            if verdict != "ok":
                lines.append(f"  {r.tag}: {verdict}: {'; '.join(why)}")
    totals: dict[str, int] = {}
    for p in run.phases:
        for r in p.requests:
            for k, v in r.counts.items():
                totals[k] = totals.get(k, 0) + v
    runs = sum(len(p.requests) for p in run.phases)
    lines.append(f"counted over the {runs} requests: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    lines.append("")
    lines.append(f"{'process':<16} {'RSS start':>10} {'RSS end':>10} {'fds start':>9} {'fds end':>7}")
    for name, (rss0, fd0) in run.usage_start.items():
        rss1, fd1 = run.usage_end.get(name, (0, 0))
        lines.append(f"{name:<16} {rss0 / 1024:>6.0f} MiB {rss1 / 1024:>6.0f} MiB {fd0:>9} {fd1:>7}")
    lines.append(
        "(each process with the live processes below it: the worker's flow-run processes, the forge's CI jobs, "
        "the agent-server's terminals; the LLM stand-in runs in the campaign's process)"
    )
    if run.agent_note:
        lines.append(f"(no agent-server in this soak — the agent was the durable fake: {run.agent_note})")
    return lines
