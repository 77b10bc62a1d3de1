"""In-process fakes of every port, scripted per test. Each says so in the demo's boundary list.

They hold state the way the real services do (a PR exists once per run key, a Deployment has an image and a
history), so tests can assert outcomes on them rather than on call lists.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from promptship.domain.kpi import MergedPR
from promptship.domain.redaction import redact
from promptship.domain.request import DeployTarget, TaskClass
from promptship.domain.results import (
    AgentHandle,
    AgentResult,
    AgentTask,
    ApplyResult,
    ChangeSize,
    CheckOutcome,
    CIResult,
    CIVerdict,
    CompileResult,
    HealthResult,
    HealthVerdict,
    LLMCall,
    LLMReply,
    MergeResult,
    PullRequestInfo,
    Remark,
    RollbackResult,
    RolloutResult,
    RolloutVerdict,
    RouteDecision,
    Usage,
)
from promptship.domain.writeback import issue_in
from promptship.errors import ServiceError
from promptship.ports import AgentLLMAccess
from promptship.settings import Settings
from promptship.wiring import Boundary, Ports


@dataclass
class Faults:
    """Exceptions to raise on the next calls of a named method: ``{"complete": deque([exc, ...])}``."""

    queue: dict[str, deque[BaseException]] = field(default_factory=dict)

    def add(self, method: str, *excs: BaseException) -> None:
        self.queue.setdefault(method, deque()).extend(excs)

    def maybe_raise(self, method: str) -> None:
        q = self.queue.get(method)
        if q:
            raise q.popleft()


class FakeLLMGateway:
    """Routes with the domain policy when present; answers with a fixed text; ledger in memory."""

    def __init__(self, faults: Faults | None = None, cost_per_call_usd: float = 0.001):
        self.faults = faults or Faults()
        self.cost_per_call_usd = cost_per_call_usd
        self.ledger: dict[str, float] = {}
        self.expired_runs: set[str] = set()
        self._lock = threading.Lock()

    def route(self, text: str, *, task_class: TaskClass | None = None, force_local: bool = False) -> RouteDecision:
        self.faults.maybe_raise("route")
        cls: TaskClass = "sensitive" if force_local else (task_class or "default")
        local = cls in ("sensitive", "tests", "default")
        return RouteDecision(
            task_class=cls,
            model={"sensitive": "llama3", "tests": "mistral", "default": "mistral", "docs": "claude-docs"}.get(
                cls, "gpt-4-code"
            ),
            mode="local" if local else "cloud",
            reason=f"fake policy: class {cls}",
            sensitive=force_local,
        )

    def open_run(self, run_key: str, *, budget_usd: float | None = None, repository: str | None = None) -> None:
        self.ledger.setdefault(run_key, 0.0)

    def complete(self, call: LLMCall) -> LLMReply:
        self.faults.maybe_raise("complete")
        decision = self.route(
            "\n".join(m.content for m in call.messages), task_class=call.task_class, force_local=call.force_local
        )
        cost = 0.0 if decision.mode == "local" else self.cost_per_call_usd
        with self._lock:
            self.ledger[call.run_key] = self.ledger.get(call.run_key, 0.0) + cost
        text = "\n".join(m.content for m in call.messages)
        return LLMReply(
            content=f"[{call.step}] {text.splitlines()[-1][:80] if text else ''}",
            decision=decision,
            model=decision.model,
            usage=Usage(prompt_tokens=len(text) // 4, completion_tokens=20, cost_usd=cost),
        )

    def agent_access(self, run_key: str, decision: RouteDecision, budget_usd: float) -> AgentLLMAccess:
        return AgentLLMAccess(
            base_url="http://127.0.0.1:9/v1", api_key=SecretStr(f"fake-run-{run_key}"), model=decision.model
        )

    def expire_agent_access(self, run_key: str) -> None:
        self.expired_runs.add(run_key)

    def run_cost_usd(self, run_key: str) -> float:
        return self.ledger.get(run_key, 0.0)

    def redact(self, text: str) -> str:
        return redact(text)


class FakeCompileChecker:
    """Compiled unless a changed file's name contains 'broken'."""

    def check(self, workspace: str, changed_files: tuple[str, ...]) -> CompileResult:
        broken = [f for f in changed_files if "broken" in f]
        return CompileResult(compiled=not broken, command="fake compile", output=", ".join(broken))


class FakeCodeAgent:
    """Writes one file into the workspace per instruction; conversations are found again by id."""

    def __init__(self, verdicts: list[str] | None = None, faults: Faults | None = None, write_files: bool = True):
        self.verdicts: deque[str] = deque(verdicts or [])
        self.faults = faults or Faults()
        self.conversations: dict[str, dict[str, Any]] = {}
        self.write_files = write_files
        self.cancelled: set[str] = set()

    def start(self, task: AgentTask, llm: AgentLLMAccess) -> AgentHandle:
        self.faults.maybe_raise("start")
        existing = self.conversations.get(task.conversation_id)
        if existing is not None:
            return AgentHandle(conversation_id=task.conversation_id, created=False)
        self.conversations[task.conversation_id] = {"task": task, "instructions": [task.instruction], "runs": 0}
        return AgentHandle(conversation_id=task.conversation_id, created=True)

    def send(self, handle: AgentHandle, instruction: str) -> None:
        self.faults.maybe_raise("send")
        self.conversations[handle.conversation_id]["instructions"].append(instruction)

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        self.faults.maybe_raise("result")
        conv = self.conversations[handle.conversation_id]
        if conv.get("answered") == len(conv["instructions"]) and "last" in conv:
            return conv["last"]  # like the agent-server: a finished conversation is read, not run again
        conv["runs"] += 1
        verdict = self.verdicts.popleft() if self.verdicts else "finished"
        task: AgentTask = conv["task"]
        changed: tuple[str, ...] = ()
        if verdict == "finished" and self.write_files:
            path = Path(task.workspace) / f"change_{len(conv['instructions'])}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                f"# {task.run_key}: {conv['instructions'][-1][:60]!r}\nVALUE = {len(conv['instructions'])}\n"
            )
            changed = (path.name,)
        conv["last"] = AgentResult(
            verdict=verdict,  # type: ignore[arg-type]
            conversation_id=handle.conversation_id,
            final_message="done" if verdict == "finished" else f"agent ended {verdict}",
            changed_files=changed,
            usage=Usage(prompt_tokens=1000, completion_tokens=200, cost_usd=0.0),
            error=None if verdict == "finished" else f"scripted {verdict}",
        )
        conv["answered"] = len(conv["instructions"])
        return conv["last"]

    def cancel(self, handle: AgentHandle) -> None:
        self.cancelled.add(handle.conversation_id)
        self.conversations.pop(handle.conversation_id, None)


class FakeCodeHost:
    """PRs keyed by run key, CI verdicts scripted per SHA round, merges that produce a merge SHA."""

    def __init__(
        self,
        ci: list[CIVerdict] | None = None,
        merge: list[str] | None = None,
        faults: Faults | None = None,
        failure_log: str = "E   assert 1 == 2",
    ):
        self.ci: deque[CIVerdict] = deque(ci or [])
        self.failure_log = failure_log  # the log excerpt of a red check
        self.merges: deque[str] = deque(merge or [])
        self.faults = faults or Faults()
        self.prs: dict[str, PullRequestInfo] = {}
        self.branches: dict[tuple[str, str], str] = {}
        self.comments: list[tuple[str, int, str]] = []
        self.review_remarks: list[tuple[str, int, Remark]] = []
        self.pr_creations = 0
        self.merged: list[MergedPR] = []
        self.merged_numbers: dict[tuple[str, int], str] = {}
        self.reverts: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def prepare_workspace(self, repository: str, base_branch: str, branch: str, path: str) -> str:
        self.faults.maybe_raise("prepare_workspace")
        Path(path).mkdir(parents=True, exist_ok=True)
        return path

    def push_branch(self, repository: str, workspace: str, branch: str) -> str:
        self.faults.maybe_raise("push_branch")
        digest = hashlib.sha1()
        for f in sorted(Path(workspace).rglob("*")):
            if f.is_file():
                digest.update(f.name.encode() + f.read_bytes())
        sha = digest.hexdigest()
        self.branches[(repository, branch)] = sha
        return sha

    def change_size(self, workspace: str, base_branch: str) -> ChangeSize:
        files = [f for f in Path(workspace).rglob("*") if f.is_file()]
        return ChangeSize(files_changed=len(files), lines_changed=sum(len(f.read_text().splitlines()) for f in files))

    def find_pull_request(self, repository: str, run_key: str) -> PullRequestInfo | None:
        pr = self.prs.get(run_key)
        if pr is None:
            return None
        head = self.branches.get((repository, pr.branch), pr.head_sha)
        merged = (repository, pr.number) in self.merged_numbers
        return pr.model_copy(update={"created": False, "head_sha": head, "merged": merged})

    def find_or_create_pull_request(
        self,
        repository: str,
        *,
        run_key: str,
        branch: str,
        base_branch: str,
        title: str,
        body: str,
        labels: tuple[str, ...] = (),
    ) -> PullRequestInfo:
        self.faults.maybe_raise("find_or_create_pull_request")
        with self._lock:
            found = self.find_pull_request(repository, run_key)
            if found is not None:
                return found
            self.pr_creations += 1
            number = len(self.prs) + 1
            pr = PullRequestInfo(
                number=number,
                url=f"https://forge.invalid/{repository}/pull/{number}",
                head_sha=self.branches.get((repository, branch), "0" * 40),
                branch=branch,
                created=True,
                issue_number=issue_in(body),
            )
            self.prs[run_key] = pr
            return pr

    def wait_for_ci(self, repository: str, sha: str, *, timeout_s: float) -> CIResult:
        self.faults.maybe_raise("wait_for_ci")
        verdict: CIVerdict = self.ci.popleft() if self.ci else "passed"
        checks = (
            CheckOutcome(name="test", state="success")
            if verdict == "passed"
            else CheckOutcome(name="test", state="failure", log_excerpt=self.failure_log)
        )
        return CIResult(verdict=verdict, sha=sha, checks=(checks,))

    def merge(self, repository: str, pr_number: int, *, auto_merge: bool, timeout_s: float) -> MergeResult:
        self.faults.maybe_raise("merge")
        if (repository, pr_number) in self.merged_numbers:
            sha = self.merged_numbers[(repository, pr_number)]
            return MergeResult(verdict="merged", merge_sha=sha, found=True)
        verdict = self.merges.popleft() if self.merges else ("merged" if auto_merge else "waiting")
        if verdict == "merged":
            sha = self.merged_numbers[(repository, pr_number)] = hashlib.sha1(f"m{pr_number}".encode()).hexdigest()
            return MergeResult(verdict="merged", merge_sha=sha)
        return MergeResult(verdict=verdict, detail=f"scripted {verdict}")  # type: ignore[arg-type]

    def image_for(self, repository: str, sha: str, component: str, *, timeout_s: float) -> str:
        return f"forge.local/{repository}/{component}:{sha}"

    def comment(self, repository: str, number: int, body: str) -> None:
        self.comments.append((repository, number, body))

    def discussion(self, repository: str, number: int) -> list[Remark]:
        return [
            Remark(author="someone", body=b)
            for (r, n, b) in self.comments
            if (r, n) == (repository, number) and "<!-- promptship-" not in b
        ]

    def review_comments(self, repository: str, pr_number: int) -> list[Remark]:
        return [c for (r, n, c) in self.review_remarks if (r, n) == (repository, pr_number)]

    def upsert_comment(self, repository: str, number: int, marker: str, body: str) -> None:
        for i, (repo, n, old) in enumerate(self.comments):
            if (repo, n) == (repository, number) and marker in old:
                self.comments[i] = (repo, n, body)
                return
        self.comments.append((repository, number, body))

    def open_revert(
        self, repository: str, *, merge_sha: str, base_branch: str, title: str, body: str, workspace: str
    ) -> PullRequestInfo:
        self.faults.maybe_raise("open_revert")
        key = f"revert-{merge_sha}"
        with self._lock:
            if key in self.prs:
                return self.prs[key].model_copy(update={"created": False})
            self.pr_creations += 1
            number = len(self.prs) + 1
            pr = PullRequestInfo(
                number=number,
                url=f"https://forge.invalid/{repository}/pull/{number}",
                head_sha=hashlib.sha1(key.encode()).hexdigest(),
                branch=f"promptship/revert-{merge_sha[:12]}",
                created=True,
            )
            self.prs[key] = pr
            self.reverts[key] = (title, body)
            return pr

    def delete_branch(self, repository: str, branch: str) -> bool:
        return self.branches.pop((repository, branch), None) is not None

    def merged_pull_requests(self, repository: str, since: datetime) -> list[MergedPR]:
        return [p for p in self.merged if p.repository == repository and p.merged_at >= since]


class FakeCluster:
    """A Deployment with an image and a revision history; rollout verdicts scripted."""

    def __init__(self, rollouts: list[RolloutVerdict] | None = None, faults: Faults | None = None):
        self.rollouts: deque[RolloutVerdict] = deque(rollouts or [])
        self.faults = faults or Faults()
        self.history: dict[str, list[str]] = {}
        self.rolled_out_by: dict[str, str] = {}
        self.rollout_count = 0

    def _key(self, target: DeployTarget) -> str:
        return f"{target.namespace}/{target.deployment}"

    def apply_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> ApplyResult:
        self.faults.maybe_raise("apply_manifests")
        return ApplyResult(applied=tuple(f"{m.get('kind')}/{m.get('metadata', {}).get('name')}" for m in manifests))

    def roll_out(self, target: DeployTarget, image: str, *, run_key: str, timeout_s: float) -> RolloutResult:
        self.faults.maybe_raise("roll_out")
        hist = self.history.get(self._key(target), [])
        if hist and hist[-1] == image and self.rolled_out_by.get(self._key(target)) == run_key:
            # like the adapter: this request's image already runs (found by the run-key annotation)
            return RolloutResult(verdict="complete", image=image, revision=len(hist), found=True)
        self.rolled_out_by[self._key(target)] = run_key
        self.rollout_count += 1
        verdict: RolloutVerdict = self.rollouts.popleft() if self.rollouts else "complete"
        hist = self.history.setdefault(self._key(target), [])
        hist.append(image)
        return RolloutResult(
            verdict=verdict,
            image=image,
            revision=len(hist),
            reason="" if verdict == "complete" else "ProgressDeadlineExceeded (scripted)",
        )

    def rollback(self, target: DeployTarget, *, timeout_s: float) -> RollbackResult:
        self.faults.maybe_raise("rollback")
        hist = self.history.get(self._key(target), [])
        if len(hist) < 2:
            return RollbackResult(verdict="failed", detail="no previous revision")
        hist.append(hist[-2])
        return RollbackResult(verdict="restored", restored_image=hist[-1], time_to_restore_s=0.01)

    def current_image(self, target: DeployTarget) -> str | None:
        hist = self.history.get(self._key(target))
        return hist[-1] if hist else None


class FakeHealthProbe:
    def __init__(self, verdicts: list[HealthVerdict] | None = None, faults: Faults | None = None):
        self.verdicts: deque[HealthVerdict] = deque(verdicts or [])
        self.faults = faults or Faults()

    def check(self, url: str) -> HealthResult:
        self.faults.maybe_raise("check")
        verdict: HealthVerdict = self.verdicts.popleft() if self.verdicts else "healthy"
        return HealthResult(
            verdict=verdict,
            url=url,
            attempts=3,
            consecutive_ok=3 if verdict == "healthy" else 0,
            detail="" if verdict == "healthy" else "HTTP 503 (scripted)",
        )


def transient(service_error: type[ServiceError], message: str = "503 Service Unavailable") -> ServiceError:
    """A retryable service error, as adapters raise for 5xx/timeouts."""
    return service_error(message, retryable=True, status=503)


def fake_services(settings: Settings, **overrides: Any) -> Ports:
    """A Ports whose ports are these fakes (each overridable) around a real store from ``settings``.

    Every boundary is marked ``in-process fake`` except the store (``real``) and the overridden ports, whose
    kind the caller states in ``overrides["boundaries"]`` if it matters.
    """
    from promptship.wiring import build_store

    store = build_store(settings)
    ports: dict[str, Any] = {
        "llm": FakeLLMGateway(),
        "agent": FakeCodeAgent(),
        "code_host": FakeCodeHost(),
        "cluster": FakeCluster(),
        "health": FakeHealthProbe(),
        "sink": store,
        "compiler": FakeCompileChecker(),
    }
    boundaries: dict[str, Boundary] = {name: "in-process fake" for name in ports}
    boundaries["sink"] = "real"
    boundaries.update(overrides.pop("boundaries", {}))
    ports.update(overrides)
    return Ports(settings=settings, boundaries=boundaries, **ports)
