"""Fakes whose state lives in a JSON file, so several processes (a flow run that is killed, the run that resumes
it, a Runner executing cancellation hooks) see one code host, one agent and one cluster.

``services_from_env`` is a ``PROMPTSHIP_SERVICES_FACTORY``: a subprocess sets
``PROMPTSHIP_SERVICES_FACTORY=promptship_sandbox.durable_fakes:services_from_env`` and ``PROMPTSHIP_TEST_FAKES_DIR``
(``PROMPTSHIP_TEST_LEASE_TTL_S`` shortens the request lease, so a dead run's lease expires in seconds).
Every side effect is counted in the shared state (pushes, conversations and their runs, PR creations, merges,
rollouts, rollbacks, reverts, LLM charges): the reliability campaign compares those counts between runs.
While ``<dir>/unhealthy`` exists the health probe fails for any image rolled out by a run, so the run rolls back
(the previous image is restored and the merge reverted).
Holding points: while ``<dir>/hold-<point>`` exists, the fake writes ``<dir>/at-<point>`` and waits there
(``agent`` inside the agent's run, ``agent-<run key>`` the same for one request's runs only, ``ci`` while CI runs,
``merge`` inside the merge), which is where tests kill or cancel the process, or look at the run from outside.

Real boundaries (the reliability campaign's whole-run fault cases): while ``<dir>/boundaries.json`` exists,
``services_from_env`` replaces the fakes it names with the real adapter, built when the process starts (a
resumed run's process reads the file again): ``{"forge": {"api_url", "git_url", "token"}}`` — ``GitHubHost``
(PyGithub + git) for the local forge's REST base URL and git base URL; ``{"llm": {"base_url"}}`` — the real
``LiteLLMGateway`` (ledger in the store) with the LLM stand-in at ``base_url`` as Ollama and as OpenRouter
(``gateway_url``, optional: the gateway service whose URL the agent's per-run access names);
``{"health": {"url"}}`` — ``HttpHealthProbe`` probing ``url``; ``{"agent": {"url", "session_key"}}`` — the real
``OpenHandsAgent`` (``wiring.build_code_agent``) on the OpenHands agent-server at ``url``. The file holds the
forge's token and the agent-server's session key: it is written 0600 under the request's own directory, never
into the environment or a flow parameter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptship.domain.limits import RunLimits
from promptship.domain.request import DeployTarget
from promptship.domain.results import (
    AgentHandle,
    AgentResult,
    AgentTask,
    ApplyResult,
    ChangeSize,
    CheckOutcome,
    CIResult,
    HealthResult,
    LLMCall,
    LLMReply,
    MergeResult,
    PullRequestInfo,
    Remark,
    RollbackResult,
    RolloutResult,
    Usage,
)
from promptship.ports import AgentLLMAccess
from promptship.settings import Settings
from promptship.wiring import Ports
from promptship_sandbox.fakes import FakeLLMGateway

BASE_IMAGE = "forge.local/base:previous"  # what serves before any run rolled out


class JsonState:
    """One JSON document shared by processes, edited under an exclusive file lock."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.json"

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        with (self.dir / "state.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)

    def read(self) -> dict[str, Any]:
        with self.edit() as data:
            return json.loads(json.dumps(data))

    def hold(self, point: str) -> None:
        """Wait here while ``hold-<point>`` exists (announcing it with ``at-<point>``)."""
        if not (self.dir / f"hold-{point}").exists():
            return
        (self.dir / f"at-{point}").write_text(str(os.getpid()))
        while (self.dir / f"hold-{point}").exists():
            time.sleep(0.05)


class DurableCodeAgent:
    def __init__(self, state: JsonState):
        self.state = state

    def start(self, task: AgentTask, llm: AgentLLMAccess) -> AgentHandle:
        with self.state.edit() as d:
            convs = d.setdefault("conversations", {})
            if task.conversation_id in convs:
                return AgentHandle(conversation_id=task.conversation_id, created=False)
            convs[task.conversation_id] = {
                "workspace": task.workspace,
                "instructions": [task.instruction],
                "runs": 0,
                "run_key": task.run_key,
            }
        return AgentHandle(conversation_id=task.conversation_id, created=True)

    def send(self, handle: AgentHandle, instruction: str) -> None:
        with self.state.edit() as d:
            d["conversations"][handle.conversation_id]["instructions"].append(instruction)

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        # like the agent-server, a conversation works only on instructions it has not finished yet: asking again
        # for the result of a finished one (a resumed step) waits for nothing and starts no new work
        with self.state.edit() as d:
            conv = d["conversations"][handle.conversation_id]
            workspace, n = conv["workspace"], len(conv["instructions"])
            fresh = conv.get("done", 0) < n
            if fresh:
                conv["runs"] += 1
        if fresh:
            self.state.hold("agent")
            self.state.hold(f"agent-{conv.get('run_key')}")  # one request's run only
        path = Path(workspace) / f"change_{n}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {n}\n")
        with self.state.edit() as d:
            d["conversations"][handle.conversation_id]["done"] = n
        return AgentResult(
            verdict="finished",
            conversation_id=handle.conversation_id,
            final_message="done",
            changed_files=(path.name,),
            usage=Usage(prompt_tokens=1000, completion_tokens=200, cost_usd=0.0),
        )

    def cancel(self, handle: AgentHandle) -> None:
        with self.state.edit() as d:
            d.setdefault("cancelled", []).append(handle.conversation_id)


class DurableCodeHost:
    def __init__(self, state: JsonState):
        self.state = state

    def prepare_workspace(self, repository: str, base_branch: str, branch: str, path: str) -> str:
        Path(path).mkdir(parents=True, exist_ok=True)
        return path

    def push_branch(self, repository: str, workspace: str, branch: str) -> str:
        digest = hashlib.sha1(branch.encode())  # the same change on two requests' branches: two commits
        for f in sorted(Path(workspace).rglob("*")):
            if f.is_file():
                digest.update(f.name.encode() + f.read_bytes())
        with self.state.edit() as d:
            d.setdefault("branches", {})[branch] = digest.hexdigest()
            d["pushes"] = d.get("pushes", 0) + 1
            pushed = d.setdefault("pushed", [])
            if branch not in pushed:
                pushed.append(branch)  # every branch ever pushed (a merged PR's branch is deleted afterwards)
        return digest.hexdigest()

    def change_size(self, workspace: str, base_branch: str) -> ChangeSize:
        files = [f for f in Path(workspace).rglob("*") if f.is_file()]
        return ChangeSize(files_changed=len(files), lines_changed=sum(len(f.read_text().splitlines()) for f in files))

    def find_pull_request(self, repository: str, run_key: str) -> PullRequestInfo | None:
        pr = self.state.read().get("prs", {}).get(run_key)
        return PullRequestInfo.model_validate({**pr, "created": False}) if pr else None

    def find_or_create_pull_request(self, repository: str, *, run_key: str, branch: str, **_: Any) -> PullRequestInfo:
        with self.state.edit() as d:
            prs = d.setdefault("prs", {})
            if run_key in prs:
                return PullRequestInfo.model_validate({**prs[run_key], "created": False})
            d["pr_creations"] = d.get("pr_creations", 0) + 1
            number = len(prs) + 1
            pr = PullRequestInfo(
                number=number,
                url=f"https://forge.invalid/{repository}/pull/{number}",
                head_sha=d.get("branches", {}).get(branch, "0" * 40),
                branch=branch,
                created=True,
            )
            prs[run_key] = pr.model_dump(mode="json")
        return pr

    def wait_for_ci(self, repository: str, sha: str, *, timeout_s: float) -> CIResult:
        """Passed — unless ``<dir>/ci-pending`` exists: then CI is still running until it is removed, and a wait
        longer than ``timeout_s`` ends ``timed_out``."""
        self.state.hold("ci")
        deadline = time.monotonic() + timeout_s
        while (self.state.dir / "ci-pending").exists():
            if time.monotonic() >= deadline:
                return CIResult(verdict="timed_out", sha=sha)
            time.sleep(0.05)
        return CIResult(verdict="passed", sha=sha, checks=(CheckOutcome(name="test", state="success"),))

    def merge(self, repository: str, pr_number: int, *, auto_merge: bool, timeout_s: float) -> MergeResult:
        """Auto-merge merges at once (counted in ``merges``), and once: an already merged PR answers with its
        merge commit, as GitHub's PR shows it. Without auto-merge a person decides: ``set_pr_state`` (open until
        then; ``waiting`` after ``timeout_s``)."""
        self.state.hold("merge")
        sha = hashlib.sha1(f"m{pr_number}".encode()).hexdigest()
        if str(pr_number) in self.state.read().get("merged", {}):
            return MergeResult(verdict="merged", merge_sha=sha, found=True)
        if not auto_merge:
            deadline = time.monotonic() + timeout_s
            while True:
                state = self.state.read().get("pr_states", {}).get(str(pr_number), "open")
                if state == "merged":
                    return MergeResult(verdict="merged", merge_sha=sha)
                if state == "closed":
                    return MergeResult(verdict="closed", detail="the pull request was closed without merging")
                if time.monotonic() >= deadline:
                    return MergeResult(verdict="waiting", detail=f"not merged within {timeout_s:.0f} s")
                time.sleep(0.05)
        with self.state.edit() as d:
            d["merges"] = d.get("merges", 0) + 1
            d.setdefault("merged", {})[str(pr_number)] = sha
        return MergeResult(verdict="merged", merge_sha=sha)

    def set_pr_state(self, pr_number: int, state: str) -> None:
        """What a person did to PR ``pr_number``: ``merged`` or ``closed``."""
        with self.state.edit() as d:
            d.setdefault("pr_states", {})[str(pr_number)] = state

    def image_for(self, repository: str, sha: str, component: str, *, timeout_s: float) -> str:
        return f"forge.local/{repository}/{component}:{sha}"

    def comment(self, repository: str, number: int, body: str) -> None:
        with self.state.edit() as d:
            d.setdefault("comments", []).append([repository, number, body])

    def discussion(self, repository: str, number: int) -> list[Remark]:
        comments = self.state.read().get("comments", [])
        return [Remark(author="someone", body=c[2]) for c in comments if c[:2] == [repository, number]]

    def review_comments(self, repository: str, pr_number: int) -> list[Remark]:
        return []

    def upsert_comment(self, repository: str, number: int, marker: str, body: str) -> None:
        with self.state.edit() as d:
            comments = d.setdefault("comments", [])
            for c in comments:
                if c[:2] == [repository, number] and marker in c[2]:
                    c[2] = body
                    return
            comments.append([repository, number, body])

    def open_revert(self, repository: str, *, merge_sha: str, **_: Any) -> PullRequestInfo:
        """The one revert PR of ``merge_sha`` (found again by it)."""
        with self.state.edit() as d:
            reverts = d.setdefault("reverts", {})
            if merge_sha in reverts:
                return PullRequestInfo.model_validate({**reverts[merge_sha], "created": False})
            d["revert_creations"] = d.get("revert_creations", 0) + 1
            number = 1000 + len(reverts) + 1
            pr = PullRequestInfo(
                number=number,
                url=f"https://forge.invalid/{repository}/pull/{number}",
                head_sha=hashlib.sha1(f"revert-{merge_sha}".encode()).hexdigest(),
                branch=f"revert-{merge_sha[:12]}",
                created=True,
            )
            reverts[merge_sha] = pr.model_dump(mode="json")
        return pr

    def delete_branch(self, repository: str, branch: str) -> bool:
        with self.state.edit() as d:
            return d.setdefault("branches", {}).pop(branch, None) is not None


class DurableCluster:
    def __init__(self, state: JsonState):
        self.state = state

    def apply_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> ApplyResult:
        return ApplyResult(applied=())

    def roll_out(self, target: DeployTarget, image: str, *, run_key: str, timeout_s: float) -> RolloutResult:
        """Roll out once per run key and image: the Deployment annotated with the run key is found, as
        ``KubeCluster`` finds it."""
        with self.state.edit() as d:
            rolled = d.setdefault("rolled", {})
            if rolled.get(run_key, {}).get("image") == image and d.get("serving") == image:
                return RolloutResult(verdict="complete", image=image, revision=rolled[run_key]["revision"], found=True)
            d.setdefault("images", []).append(image)
            by_key = d.setdefault("rollouts_by_key", {})  # several requests may share one fakes directory
            by_key[run_key] = by_key.get(run_key, 0) + 1
            d["serving"] = image
            revision = len(d["images"])
            rolled[run_key] = {"image": image, "revision": revision}
        return RolloutResult(verdict="complete", image=image, revision=revision)

    def rollback(self, target: DeployTarget, *, timeout_s: float) -> RollbackResult:
        """Put the image before the run's back (the base image when the run rolled out only one)."""
        with self.state.edit() as d:
            d["rollbacks"] = d.get("rollbacks", 0) + 1
            images = d.get("images", [])
            restored = images[-2] if len(images) > 1 else BASE_IMAGE
            d["serving"] = restored
        return RollbackResult(verdict="restored", restored_image=restored, time_to_restore_s=0.1)

    def current_image(self, target: DeployTarget) -> str | None:
        return self.state.read().get("serving", BASE_IMAGE)


class DurableHealthProbe:
    """Healthy, except while ``<dir>/unhealthy`` exists and an image a run rolled out is serving."""

    def __init__(self, state: JsonState):
        self.state = state

    def check(self, url: str) -> HealthResult:
        serving = self.state.read().get("serving", BASE_IMAGE)
        bad = (self.state.dir / "unhealthy").exists() and serving != BASE_IMAGE
        return HealthResult(
            verdict="unhealthy" if bad else "healthy",
            url=url,
            attempts=3,
            consecutive_ok=0 if bad else 3,
            detail="HTTP 503 (scripted)" if bad else "",
        )


class DurableLLMGateway(FakeLLMGateway):
    """The fake gateway, with every charged completion counted in the shared state (the ledger's charges)."""

    def __init__(self, state: JsonState):
        super().__init__()
        self.state = state

    def complete(self, call: LLMCall) -> LLMReply:
        reply = super().complete(call)
        with self.state.edit() as d:
            d.setdefault("charges", []).append([call.run_key, call.step])
        return reply


class _Ports(Ports):
    """Ports whose request lease lasts ``lease_ttl_s`` (a dead run's lease expires in seconds)."""

    lease_ttl_s: float | None = None

    def limits(self) -> RunLimits:
        limits = super().limits()
        return limits if self.lease_ttl_s is None else limits.model_copy(update={"lease_ttl_s": self.lease_ttl_s})


def durable_services(
    directory: Path,
    settings: Settings | None = None,
    *,
    lease_ttl_s: float | None = None,
    database_url: str | None = None,
) -> Ports:
    """The durable fakes under ``directory`` with the store at ``database_url`` (SQLite under ``directory`` when
    empty: the settings' own database URL is never used, so a test's store is its own)."""
    from promptship.wiring import build_store
    from promptship_sandbox.fakes import FakeCompileChecker

    state = JsonState(directory)
    settings = settings or Settings()
    settings = settings.model_copy(update={"home": directory / "home", "database_url": database_url})
    settings.health.url = "http://127.0.0.1:9/health"
    store = build_store(settings)
    ports = _Ports(
        settings=settings,
        llm=DurableLLMGateway(state),
        agent=DurableCodeAgent(state),
        code_host=DurableCodeHost(state),
        cluster=DurableCluster(state),
        health=DurableHealthProbe(state),
        sink=store,
        compiler=FakeCompileChecker(),
    )
    ports.lease_ttl_s = lease_ttl_s
    return ports


def services_from_env(settings: Settings) -> Ports:
    """The ``PROMPTSHIP_SERVICES_FACTORY`` entry point for subprocesses (``PROMPTSHIP_TEST_DATABASE_URL``: the
    store's database, when not SQLite under the fakes' directory); the real boundaries ``boundaries.json``
    names replace their fakes."""
    ttl = os.environ.get("PROMPTSHIP_TEST_LEASE_TTL_S")
    directory = Path(os.environ["PROMPTSHIP_TEST_FAKES_DIR"])
    ports = durable_services(
        directory,
        settings,
        lease_ttl_s=float(ttl) if ttl else None,
        database_url=os.environ.get("PROMPTSHIP_TEST_DATABASE_URL") or None,
    )
    real = directory / BOUNDARIES_FILE
    if real.exists():
        with_real_boundaries(ports, json.loads(real.read_text()))
    return ports


BOUNDARIES_FILE = "boundaries.json"
REAL_BOUNDARIES = ("forge", "llm", "health", "agent")
CLIENT_TIMEOUT_S = 3.0  # every real adapter's read timeout here (as in the step-level fault cases)


def write_boundaries(directory: Path, boundaries: dict[str, dict[str, str]]) -> None:
    """Name the real boundaries of the request under ``directory`` (read by every process that starts after)."""
    unknown = set(boundaries) - set(REAL_BOUNDARIES)
    if unknown:
        raise ValueError(f"unknown boundaries {sorted(unknown)}; known: {list(REAL_BOUNDARIES)}")
    path = directory / BOUNDARIES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(boundaries))
    tmp.chmod(0o600)
    tmp.replace(path)


def with_real_boundaries(ports: Ports, boundaries: dict[str, dict[str, str]]) -> Ports:
    """Replace the fakes of ``ports`` that ``boundaries`` names with the real adapters (see the module docstring)."""
    import httpx
    from pydantic import SecretStr

    settings = ports.settings
    if "forge" in boundaries:
        from github import Auth, Github

        from promptship.adapters.github import GitHubHost
        from promptship.domain.ci import Backoff

        forge = boundaries["forge"]
        gh = Github(
            base_url=forge["api_url"],
            auth=Auth.Token(forge["token"]),
            retry=None,
            timeout=int(CLIENT_TIMEOUT_S),
            seconds_between_requests=0,
            seconds_between_writes=0,
        )
        git_url = forge["git_url"].rstrip("/")
        ports.code_host = GitHubHost(
            gh,
            token=SecretStr(forge["token"]),
            git_url_for=lambda repository: f"{git_url}/{repository}.git",
            backoff=Backoff(initial_s=0.2, max_s=1.0),
            git_stall_s=CLIENT_TIMEOUT_S,
        )
        ports.boundaries["code_host"] = "protocol stand-in"
    if "llm" in boundaries:
        from promptship.wiring import build_llm_gateway

        base_url = boundaries["llm"]["base_url"].rstrip("/")
        llm_settings = settings.llm.model_copy(
            update={
                "ollama_base_url": base_url,
                "openrouter_base_url": base_url + "/v1",
                "timeout_s": CLIENT_TIMEOUT_S,
                "openrouter_api_key": settings.llm.openrouter_api_key or SecretStr("sk-or-v1-" + "0" * 64),
            }
        )
        store = ports.sink
        ports.llm = build_llm_gateway(
            settings.model_copy(update={"llm": llm_settings}),
            engine=store.engine,  # type: ignore[attr-defined]  # the store's ledger
        )
        if boundaries["llm"].get("gateway_url"):  # the gateway service the agent's per-run keys are for
            ports.llm.gateway_url = boundaries["llm"]["gateway_url"].rstrip("/")
        ports.boundaries["llm"] = "protocol stand-in"
    if "health" in boundaries:
        from promptship.adapters.health import HttpHealthProbe

        settings.health.url = boundaries["health"]["url"]
        ports.health = HttpHealthProbe(httpx.Client(), consecutive=3, retries=10, timeout_s=1.0, interval_s=0.05)
        ports.boundaries["health"] = "protocol stand-in"
    if "agent" in boundaries:
        from promptship.wiring import build_code_agent

        agent = boundaries["agent"]
        oh = settings.openhands.model_copy(
            update={"url": agent["url"], "session_api_key": SecretStr(agent["session_key"])}
        )
        ports.agent = build_code_agent(settings.model_copy(update={"openhands": oh}))
        ports.boundaries["agent"] = "real"
    return ports
