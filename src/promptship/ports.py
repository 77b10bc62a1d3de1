"""One Protocol per outside service. Ports speak in promptship's own models, never in vendor types.

Adapters (``promptship.adapters``) implement them against real services; the sandbox
(``promptship_sandbox``) holds local stand-ins and in-process fakes that implement them too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from promptship.domain.attempt import Attempt
from promptship.domain.gate import GateResult
from promptship.domain.kpi import MergedPR
from promptship.domain.report import RunReport, StepRecord
from promptship.domain.request import DeployTarget, DevRequest, TaskClass
from promptship.domain.results import (
    AgentHandle,
    AgentResult,
    AgentTask,
    ApplyResult,
    ChangeSize,
    CIResult,
    CompileResult,
    HealthResult,
    LLMCall,
    LLMReply,
    MergeResult,
    PullRequestInfo,
    Remark,
    RollbackResult,
    RolloutResult,
    RouteDecision,
    RunAccess,
)
from promptship.domain.routing import ModelSpec
from promptship.domain.webhooks import CISignal, WebhookTrigger


class AgentLLMAccess(BaseModel):
    """How the code agent reaches models: the gateway's URL and a per-run key (never logged or persisted)."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    api_key: SecretStr
    model: str
    # The gateway's prices for ``model``, handed to the agent so that the cost in its own stats is the cost
    # the gateway's ledger records (None: the agent's LiteLLM uses its price map, 0 for unknown models).
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None


class AppLLMAccess(BaseModel):
    """How an application (the chat app) reaches models through the gateway service: its base URL and an
    app's key whose calls are routed by the policy for ``caller`` (the key is shown once, never persisted)."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    api_key: SecretStr
    caller: str
    run_key: str = Field(description="The ledger run the app's calls are recorded under.")


@runtime_checkable
class Router(Protocol):
    """The routing policy behind the gateway: where a call would go, without calling a model."""

    def route(self, text: str, *, task_class: TaskClass | None = None, force_local: bool = False) -> RouteDecision:
        """Decide class, model and local/cloud for ``text`` without calling a model."""
        ...


@runtime_checkable
class Completer(Protocol):
    """One chat completion with the gateway's policy, sensitive-data gate and cost ledger."""

    def complete(self, call: LLMCall) -> LLMReply:
        """Route, gate, budget-check and send one chat completion; record its cost against the run."""
        ...


@runtime_checkable
class RunBudgets(Protocol):
    """A run's budget cap and what the ledger has recorded against it."""

    def open_run(self, run_key: str, *, budget_usd: float | None = None, repository: str | None = None) -> None:
        """Register a run's budget cap and repository with the ledger before its first call."""
        ...

    def run_cost_usd(self, run_key: str) -> float:
        """What the gateway's ledger has recorded for a run so far."""
        ...


@runtime_checkable
class Redactor(Protocol):
    """The sensitive-data gate's redaction, for text that goes into reports and stores."""

    def redact(self, text: str) -> str:
        """``text`` with every secret and personal datum the gate finds replaced (for reports and stores)."""
        ...


@runtime_checkable
class AgentAccessIssuer(Protocol):
    """Mints the code agent's access to models through the gateway."""

    def agent_access(self, run_key: str, decision: RouteDecision, budget_usd: float) -> AgentLLMAccess:
        """Credentials for the code agent's own LLM traffic, attributed to ``run_key`` and bound by budget."""
        ...

    def expire_agent_access(self, run_key: str) -> None:
        """``run_key`` (an attempt) ended: every agent key issued for it stops working (the gateway answers 401)."""
        ...


@runtime_checkable
class AppAccessIssuer(Protocol):
    """Mints an application's access to models through the gateway service (``promptship gateway key``)."""

    def app_access(self, caller: str, *, run_key: str | None = None, budget_usd: float | None = None) -> AppLLMAccess:
        """A key whose calls are routed by the policy for ``caller`` and recorded under it."""
        ...


@runtime_checkable
class LLMGateway(Router, Completer, RunBudgets, Redactor, AgentAccessIssuer, Protocol):
    """Every LLM call of the pipeline goes through here: routing policy, sensitive-data gate, cost ledger.

    The composite of the small ports above; a caller that needs one of them should ask for that one."""


@runtime_checkable
class RunKeys(Protocol):
    """The per-run API keys of the gateway service (the cost ledger keeps their hashes)."""

    def access_for(self, api_key: str, /) -> RunAccess | None:
        """The run ``api_key`` was minted for, or None for an unknown key."""
        ...


@runtime_checkable
class ChatRelay(Protocol):
    """The OpenAI-format chat the gateway service relays for the code agent: same policy, gate and ledger
    as ``Completer``, in the agent's wire format."""

    def model_groups(self) -> list[ModelSpec]:
        """The model groups a client may name (``GET /v1/models``)."""
        ...

    def chat(self, access: RunAccess, body: Mapping[str, Any], *, step: str = "agent") -> dict[str, Any]:
        """One non-streaming OpenAI-format chat completion for the run of ``access``."""
        ...

    async def stream_chat(
        self, access: RunAccess, body: Mapping[str, Any], *, step: str = "agent"
    ) -> AsyncIterator[bytes]:
        """One streaming completion, from the service's event loop: routing, gate, budget and the provider
        connection happen now (errors raise here); the iterator yields the SSE body (OpenAI's ``data:`` chunks,
        a usage chunk, ``data: [DONE]``) and records the cost when it ends; a provider failing mid-stream
        raises ``LLMError``."""
        ...


@runtime_checkable
class Scanner(Protocol):
    """The sensitive-data scanner the gateway's gate runs (``promptship.adapters.detectors.SensitiveDataScanner``)."""

    def scan(self, text: str) -> GateResult:
        """Findings in one text."""
        ...

    def scan_messages(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> GateResult:
        """Findings in everything a chat call would send out (messages, tool calls and results, tool schemas)."""
        ...


@runtime_checkable
class CodeAgent(Protocol):
    """The code-writing agent (OpenHands)."""

    def start(self, task: AgentTask, llm: AgentLLMAccess) -> AgentHandle:
        """Create the conversation for ``task`` — or find it, when a resumed run already created it."""
        ...

    def send(self, handle: AgentHandle, instruction: str) -> None:
        """Continue the conversation with a new instruction (a repair round)."""
        ...

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        """Wait until the agent is finished, in error or stuck, or the timeout passes (then interrupt it)."""
        ...

    def cancel(self, handle: AgentHandle) -> None:
        """Interrupt and remove the conversation."""
        ...


@runtime_checkable
class CompileChecker(Protocol):
    """Checks that generated code builds (byte-compile + import for Python, or the repo's build command)."""

    def check(self, workspace: str, changed_files: tuple[str, ...]) -> CompileResult:
        """Build or byte-compile what changed in ``workspace``."""
        ...


@runtime_checkable
class CodeHost(Protocol):
    """The code host (GitHub or the local forge): branches, pull requests, CI, merges, comments."""

    def prepare_workspace(self, repository: str, base_branch: str, branch: str, path: str) -> str:
        """A fresh checkout of ``repository`` at ``path`` on ``branch`` (created from ``base_branch``)."""
        ...

    def push_branch(self, repository: str, workspace: str, branch: str) -> str:
        """Push the work branch; return its head SHA."""
        ...

    def change_size(self, workspace: str, base_branch: str) -> ChangeSize:
        """Files and lines the work branch in ``workspace`` changes against ``base_branch``."""
        ...

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
        """The one PR of ``run_key``: found if it exists, else created."""
        ...

    def find_pull_request(self, repository: str, run_key: str) -> PullRequestInfo | None:
        """The PR of ``run_key`` if there is one."""
        ...

    def wait_for_ci(self, repository: str, sha: str, *, timeout_s: float) -> CIResult:
        """Combine checks and statuses of ``sha`` into one verdict, waiting until it is final or timed out."""
        ...

    def merge(self, repository: str, pr_number: int, *, auto_merge: bool, timeout_s: float) -> MergeResult:
        """Squash-merge (auto) or wait for a human merge; report conflicts."""
        ...

    def image_for(self, repository: str, sha: str, component: str, *, timeout_s: float) -> str:
        """The image CI built for commit ``sha`` of the base branch (``component`` = the build context
        directory, e.g. ``backend``), after waiting for that build. Raises CodeHostError if it failed."""
        ...

    def comment(self, repository: str, number: int, body: str) -> None:
        """Comment on an issue or pull request."""
        ...

    def discussion(self, repository: str, number: int) -> list[Remark]:
        """What people wrote on issue/PR ``number`` (its conversation comments, oldest first; promptship's own
        status and revert notes left out)."""
        ...

    def review_comments(self, repository: str, pr_number: int) -> list[Remark]:
        """The review comments on PR ``pr_number``'s diff (file, line, author, text), oldest first."""
        ...

    def upsert_comment(self, repository: str, number: int, marker: str, body: str) -> None:
        """Edit the comment of ours on issue/PR ``number`` whose body carries ``marker``, else create it
        (``body`` must contain ``marker``): one comment however often it is updated."""
        ...

    def open_revert(
        self, repository: str, *, merge_sha: str, base_branch: str, title: str, body: str, workspace: str
    ) -> PullRequestInfo:
        """The one revert PR of ``merge_sha`` (found by its branch and marker, else a checkout of
        ``base_branch`` at ``workspace``, ``git revert``, push, PR). ``body`` carries the revert marker."""
        ...

    def delete_branch(self, repository: str, branch: str) -> bool:
        """Delete a work branch; False when it was already gone."""
        ...

    def merged_pull_requests(self, repository: str, since: datetime) -> list[MergedPR]:
        """PRs merged since ``since``, each marked as opened by promptship or not (the KPIs' human baseline)."""
        ...


@runtime_checkable
class IssueCommenter(Protocol):
    """The part of the ``CodeHost`` port the webhook receiver uses."""

    def comment(self, repository: str, number: int, body: str) -> None:
        """Comment on an issue or pull request."""
        ...

    def upsert_comment(self, repository: str, number: int, marker: str, body: str) -> None:
        """Edit the comment of ours on issue/PR ``number`` whose body carries ``marker``, else create it
        (``body`` must contain ``marker``): one comment however often it is updated."""
        ...

    def open_revert(
        self, repository: str, *, merge_sha: str, base_branch: str, title: str, body: str, workspace: str
    ) -> PullRequestInfo:
        """The one revert PR of ``merge_sha`` (found by its branch and marker, else a checkout of
        ``base_branch`` at ``workspace``, ``git revert``, push, PR). ``body`` carries the revert marker."""
        ...

    def delete_branch(self, repository: str, branch: str) -> bool:
        """Delete a work branch; False when it was already gone."""
        ...


@runtime_checkable
class CIWakeups(Protocol):
    """Where CI events of a commit are announced (by the webhook receiver) and waited for (by CI waits).

    A CI wait (the ``GitHubHost`` adapter) uses it like this, so an event between two looks is never missed::

        seen = wakeups.generation(repository, sha)
        while True:
            result = look_at_checks()                  # one (conditional) request to the code host
            if final(result): return result
            seen = wakeups.wait(repository, sha, after=seen, timeout_s=min(remaining, fallback_poll_s))

    ``promptship.store.webhooks`` has both implementations: ``InProcessCIWakeups`` for one process (tests, the
    demo, a receiver started inside the worker) and ``StoreCIWakeups`` for a receiver and workers in different
    processes that share the store. Repository names compare case-insensitively.
    """

    def notify(self, signal: CISignal) -> None:
        """Announce a CI event of ``signal.sha`` (check_suite, check_run or status)."""
        ...

    def generation(self, repository: str, sha: str) -> int:
        """How many CI events of ``sha`` have been announced so far."""
        ...

    def wait(self, repository: str, sha: str, *, after: int, timeout_s: float) -> int:
        """Block until more than ``after`` events of ``sha`` were announced or ``timeout_s`` passed; return
        the generation then (equal to ``after`` on timeout)."""
        ...


@runtime_checkable
class Cluster(Protocol):
    """The Kubernetes cluster (push mode) or the GitOps repository (gitops mode)."""

    def apply_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> ApplyResult:
        """Dry-run all on the server, then apply all — or apply none and raise ClusterError."""
        ...

    def roll_out(self, target: DeployTarget, image: str, *, run_key: str, timeout_s: float) -> RolloutResult:
        """Set the image and wait for the rollout's verdict (complete, stalled, failed)."""
        ...

    def rollback(self, target: DeployTarget, *, timeout_s: float) -> RollbackResult:
        """Restore the previous revision and wait until it is complete again."""
        ...

    def current_image(self, target: DeployTarget) -> str | None:
        """The image the Deployment's container runs now, or None if it does not exist."""
        ...


@runtime_checkable
class HealthProbe(Protocol):
    """HTTP health gate."""

    def check(self, url: str) -> HealthResult:
        """Probe ``url`` until enough consecutive successes or the retries run out."""
        ...


@runtime_checkable
class MetricsSink(Protocol):
    """Where attempts, step records and run reports are kept (the one store), and the per-request lease."""

    def record_step(self, record: StepRecord) -> None:
        """Insert or replace the record of (attempt, step)."""
        ...

    def record_run(self, report: RunReport) -> None:
        """Insert or replace the report of an attempt."""
        ...

    def attempt_steps(self, attempt_id: str) -> list[StepRecord]:
        """The step records of one attempt, in the order they started."""
        ...

    def begin_attempt(
        self,
        run_key: str,
        *,
        flow_run_id: str,
        occurrence: str | None = None,
        attempt_id: str | None = None,
        lease_ttl_s: float = 120.0,
        holder_alive: Callable[[str], bool] = ...,
    ) -> Attempt:
        """Take the request's lease for ``flow_run_id`` and bind it to its attempt (continued or new); raise
        AttemptInProgress when another live flow run holds the request."""
        ...

    def renew_lease(self, run_key: str, holder: str, ttl_s: float) -> bool:
        """Extend ``holder``'s lease on the request."""
        ...

    def end_attempt(self, attempt_id: str, outcome: str, *, holder: str | None) -> None:
        """Record how the attempt ended and release the request's lease held by ``holder``."""
        ...

    def lease_holder(self, run_key: str) -> str | None:
        """The flow run holding the request's unexpired lease (its heartbeat is alive), if any."""
        ...

    def attempt_of_flow_run(self, flow_run_id: str) -> Attempt | None:
        """The attempt a flow run worked on."""
        ...

    def attempts(self, run_key: str) -> list[Attempt]:
        """Every attempt of a request, oldest first."""
        ...

    def remember_request(self, run_key: str, request: DevRequest) -> None:
        """Keep the request behind ``run_key`` and where it came from (for stop/retry from GitHub), sealed."""
        ...

    def seal(self, request: DevRequest) -> DevRequest:
        """Keep the request's prompt encrypted; return the sealed form (prompt redacted) Prefect may hold."""
        ...

    def unseal(self, request: DevRequest) -> DevRequest:
        """The request a sealed form stands for (an unsealed request as it is)."""
        ...


@runtime_checkable
class Starter(Protocol):
    """Starts the dev cycle for a webhook trigger (a Prefect event or ``run_deployment``). Must be idempotent
    per ``trigger.delivery_id``."""

    def start(self, trigger: WebhookTrigger) -> str:
        """Start (or find the already started) run; return its id (flow run id or event id)."""
        ...


class Clock(Protocol):
    """Time as an adapter sees it (tests inject a fake that records the waits)."""

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward (deadlines)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (to read Retry-After dates and rate-limit resets)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


@runtime_checkable
class RunResumer(Protocol):
    """Resumes flow runs suspended in a wait (``tasks/waiting.py``; the waits are in the store's ``run_waits``):
    the webhook receiver on a matching event, ``promptship sweep`` on a condition met or a deadline passed."""

    def resume_waiting(self, repository: str, *, sha: str | None = None, pr_number: int | None = None) -> list[str]:
        """Resume the suspended runs waiting for CI of ``sha`` or a merge of PR ``pr_number``; their flow run ids.
        A run that is not suspended (still looking, already resumed) is left alone."""
        ...


@runtime_checkable
class RunController(Protocol):
    """What ``/promptship stop`` and ``/promptship retry`` do to the runs of the request an issue or PR names.
    Each returns the sentence the receiver posts back."""

    def stop(self, repository: str, number: int, request_key: str | None) -> str:
        """Cancel the request's active attempt (its flow run), if one runs."""
        ...

    def retry(self, repository: str, number: int, request_key: str | None, requester: str, delivery_id: str) -> str:
        """Start a new run of the request (a new attempt once the last one finished)."""
        ...
