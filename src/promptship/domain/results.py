"""What each step produced: small pydantic models with a verdict that flows branch on.

These are the shapes ports speak in; vendor objects never leave the adapters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptship.domain.request import TaskClass

AgentVerdict = Literal["finished", "error", "stuck", "timed_out"]
CIVerdict = Literal["passed", "failed", "timed_out"]
MergeVerdict = Literal["merged", "conflict", "waiting", "timed_out", "closed"]
RolloutVerdict = Literal["complete", "stalled", "failed"]
HealthVerdict = Literal["healthy", "unhealthy"]
RollbackVerdict = Literal["restored", "failed"]
LLMMode = Literal["local", "cloud"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RouteDecision(_Model):
    """Where an LLM call goes and why."""

    task_class: TaskClass
    model: str = Field(description="Model group or model name chosen by the policy.")
    mode: LLMMode
    reason: str
    sensitive: bool = False
    findings: tuple[str, ...] = Field(default=(), description="Kinds of sensitive data found (never the data).")
    class_source: Literal["rule", "caller"] | None = Field(
        default=None, description="How the class was decided: a classifier rule, or stated by the caller."
    )
    class_rule: str | None = Field(
        default=None, description="The classifier rule that fired (its name only, never the matched text)."
    )
    forced_local: bool = Field(default=False, description="Local-only was asked for (not found by the gate).")


class RunAccess(_Model):
    """What an API key of the gateway stands for. A run's key (the code agent's) pins the run's route; an
    app's key (``caller``, e.g. the chat app's ``chat``) has every call routed by the policy for that caller,
    and its calls are recorded under the caller's name."""

    run_key: str
    decision: RouteDecision | None = Field(default=None, description="The run's pinned route (a run's key).")
    budget_usd: float
    caller: str | None = Field(default=None, description="The caller an app's key speaks for (an app's key).")
    key_hash: str | None = Field(
        default=None,
        description="The SHA-256 of the key (never the key): the reservation checks that the key still stands.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RunAccess:
        if (self.decision is None) == (self.caller is None):
            raise ValueError("an access is either a run's (with its decision) or an app's (with its caller)")
        return self


class Usage(_Model):
    """Tokens and cost of one or more LLM calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_missing: bool = Field(default=False, description="A cloud call whose provider reported no cost.")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 10),
            cost_missing=self.cost_missing or other.cost_missing,
        )


class LLMMessage(_Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class LLMCall(_Model):
    """One request to the LLM gateway."""

    run_key: str
    step: str
    messages: tuple[LLMMessage, ...]
    task_class: TaskClass | None = None
    force_local: bool = False
    max_tokens: int | None = None
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="Most seconds the whole call may take, retries and fallbacks included (None: the policy's "
        "per-request timeout and retries only). For calls whose answer is optional, such as a CI-log summary.",
    )


class LLMReply(_Model):
    content: str
    decision: RouteDecision
    model: str = Field(description="The concrete model that answered.")
    usage: Usage = Field(default_factory=Usage)
    fallback_used: bool = False


class AgentTask(_Model):
    """What the code agent is asked to do, and within what bounds."""

    run_key: str
    conversation_id: str
    instruction: str
    workspace: str = Field(description="Directory of a fresh checkout of the repository on the work branch.")
    model: str
    base_url: str | None = Field(default=None, description="OpenAI-compatible URL the agent's LLM calls go to.")
    budget_usd: float = 1.0
    max_iterations: int = 50
    timeout_s: float = 1800.0


class AgentHandle(_Model):
    conversation_id: str
    created: bool = Field(description="False when an existing conversation was found (resumed run).")


class AgentResult(_Model):
    verdict: AgentVerdict
    conversation_id: str
    final_message: str = ""
    changed_files: tuple[str, ...] = ()
    commits: tuple[str, ...] = ()
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


class CompileResult(_Model):
    compiled: bool
    command: str
    output: str = ""


class PullRequestInfo(_Model):
    number: int
    url: str
    head_sha: str
    branch: str
    created: bool = Field(description="False when the PR of this run key already existed.")
    merged: bool = Field(default=False, description="The PR is merged (an earlier attempt's work is done).")
    issue_number: int | None = Field(
        default=None, description="The issue the PR's body references (``Fixes #n`` / ``Requested in #n.``)."
    )


class Remark(_Model):
    """Something a person wrote on an issue or PR: a conversation comment, or a review comment on a line
    (``path`` and ``line``; ``line`` None for a comment on a whole file)."""

    author: str
    body: str
    path: str | None = None
    line: int | None = None


class CheckOutcome(_Model):
    name: str
    state: Literal["pending", "success", "failure", "neutral", "skipped", "cancelled", "error"]
    log_excerpt: str = ""
    url: str = ""


class CIResult(_Model):
    verdict: CIVerdict
    sha: str
    checks: tuple[CheckOutcome, ...] = ()
    waited_s: float = 0.0

    @property
    def failing(self) -> tuple[CheckOutcome, ...]:
        return tuple(c for c in self.checks if c.state in ("failure", "error", "cancelled"))


class MergeResult(_Model):
    verdict: MergeVerdict
    merge_sha: str | None = None
    detail: str = ""
    found: bool = Field(default=False, description="The PR was already merged when the step first looked.")


class ChangeSize(_Model):
    """How big the change on a work branch is, against its base branch."""

    files_changed: int
    lines_changed: int = Field(description="Lines added plus lines deleted.")


class ApplyResult(_Model):
    applied: tuple[str, ...] = Field(default=(), description="kind/name of every object applied.")
    dry_run_only: bool = False


class RolloutResult(_Model):
    verdict: RolloutVerdict
    image: str
    revision: int | None = None
    reason: str = ""
    events: tuple[str, ...] = ()
    waited_s: float = 0.0
    found: bool = Field(
        default=False, description="The Deployment already ran this image for this request: nothing was changed."
    )


class HealthResult(_Model):
    verdict: HealthVerdict
    url: str
    attempts: int = 0
    consecutive_ok: int = 0
    detail: str = ""
    latency_ms_p50: float | None = None


class RollbackResult(_Model):
    verdict: RollbackVerdict
    restored_image: str | None = None
    time_to_restore_s: float = 0.0
    detail: str = ""


class GenerationResult(_Model):
    """What a code-generation (or repair) step left behind: the agent's result and the pushed head."""

    agent: AgentResult
    compile: CompileResult | None = None
    head_sha: str | None = None
    workspace: str
    model: str | None = Field(default=None, description="The model the agent works with (repairs use it too).")
    mode: LLMMode | None = None
    skipped: str | None = Field(default=None, description="Why the last repair round did not run (e.g. budget).")


class WriteBackResult(_Model):
    """What the write-back after a rollback left: the revert PR and whether it was merged."""

    revert: PullRequestInfo
    state: str = Field(description="merged, open (waiting for a person), ci_failed, ci_timed_out, conflict…")
    merge_sha: str | None = None
