"""The development request and the request key everything idempotent derives from (see ``domain/attempt.py``)."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TaskClass = Literal["sensitive", "complex_code", "tests", "docs", "default"]
DeployMode = Literal["push", "gitops"]

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BRANCH_RE = re.compile(r"^(?!/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<!/)(?<!\.lock)$")

# The namespace for conversation ids derived from run keys (a fixed, arbitrary UUID).
_RUN_NAMESPACE = uuid.UUID("6c1b2f0e-7f0a-4f57-9d0e-2f9b8d6a5c31")


class DeployTarget(BaseModel):
    """Where the change is rolled out and how its health is checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(default="demo", description="Kubernetes namespace of the application.")
    deployment: str = Field(default="backend", description="Deployment to roll out (the seed app's is `backend`).")
    container: str = Field(default="backend", description="Container in the Deployment whose image changes.")
    health_url: str | None = Field(
        default=None,
        description="URL of the service's health endpoint (GET, 2xx = healthy). Empty: taken from settings.",
    )

    @field_validator("namespace", "deployment", "container")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME_RE.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid Kubernetes name (lowercase letters, digits and '-')")
        return value

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("health_url must start with http:// or https://")
        return value


class DevRequest(BaseModel):
    """A development request: what to build, where, and how far the pipeline may take it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=3, max_length=20_000, description="What the agent should build or change.")
    repository: str = Field(
        default="demo/chat-app", description="Repository as owner/name on the configured code host."
    )
    base_branch: str = Field(default="main", description="Branch the change starts from and merges into.")
    requester: str = Field(default="promptship-ui", description="Who asked (GitHub login or UI user).")
    labels: tuple[str, ...] = Field(default=(), description="Labels to put on the pull request.")
    issue_number: int | None = Field(
        default=None, ge=1, description="GitHub issue the request came from, if any (gets a comment)."
    )
    task_class: TaskClass | None = Field(
        default=None, description="Task class hint for routing; empty lets the classifier decide."
    )
    sensitive: bool = Field(
        default=False, description="Force local-only models even if the gate finds nothing sensitive."
    )
    budget_usd: float = Field(default=2.0, ge=0, le=1000, description="Most this run may spend on LLM calls.")
    auto_merge: bool = Field(
        default=False, description="Squash-merge when CI is green; otherwise wait for a human merge."
    )
    deploy: DeployTarget = Field(default_factory=DeployTarget, description="Where to roll out.")
    deploy_mode: DeployMode = Field(
        default="push", description="push: promptship applies to the cluster; gitops: commit and let the syncer."
    )
    delivery_id: str | None = Field(
        default=None, max_length=100, description="GitHub webhook delivery id that started this run, if any."
    )
    continues: str | None = Field(
        default=None,
        max_length=64,
        description="Follow-up: the request key of the run whose open PR the /promptship comment was on; the "
        "same request goes on (same branch, PR and agent conversation) with this prompt as the instruction.",
    )
    parent: str | None = Field(
        default=None,
        max_length=64,
        description="Follow-up of a finished run (a comment on its merged or closed PR): that run's request key. "
        "A new request, whose PR starts from the base branch and references the old PR.",
    )
    source_pr: int | None = Field(default=None, ge=1, description="The PR the follow-up comment was written on.")
    comment_id: int | None = Field(default=None, ge=1, description="The GitHub comment that asked for it, if any.")
    closes_issue: bool = Field(
        default=False,
        description="The PR says 'Fixes #n' so that merging it closes the issue; otherwise it only references it.",
    )
    sealed: str | None = Field(
        default=None,
        max_length=64,
        description="Set by promptship, never by hand: the id under which the request's prompt is kept, encrypted, "
        "in promptship's store. `prompt` then holds only the redacted prompt, so Prefect (parameters, events, the "
        "UI) never holds a secret the prompt carried; the flow reads the real prompt back from the store.",
    )
    recurring: bool = Field(
        default=False,
        description="Each scheduled occurrence is a new request (its date in the request key: a new branch and "
        "PR each day, e.g. a daily canary). Off: every occurrence is a new attempt of the same request.",
    )

    @field_validator("repository")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        if not _REPO_RE.match(value):
            raise ValueError("repository must look like 'owner/name'")
        return value

    @field_validator("base_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not _BRANCH_RE.match(value):
            raise ValueError(f"base_branch {value!r} is not a valid git branch name")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @model_validator(mode="after")
    def _labels_clean(self) -> DevRequest:
        for label in self.labels:
            if not label.strip() or len(label) > 50:
                raise ValueError(f"label {label!r} must be 1-50 characters")
        return self

    @field_validator("continues", "parent", "source_pr", "comment_id", "sealed", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # Prefect's automation renders an absent event field as "" (or "None"): the field was not given
        return None if value in ("", "None", "null") else value

    @field_validator("continues", "parent")
    @classmethod
    def _a_request_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{16}", value):
            raise ValueError("must be a request key (16 hex digits)")
        return value

    @field_validator("sealed")
    @classmethod
    def _a_sealed_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{16}", value):
            raise ValueError("must be the id promptship gave a sealed request (request key, '-', digest)")
        return value

    @property
    def run_key(self) -> str:
        """The request key of a request that is not recurring (a recurring one's key also names its occurrence:
        ``request_key_for``)."""
        return run_key_for(self)


def sealed_id_for(request_key: str, digest: str) -> str:
    """The id a sealed request is kept under: its request key, then a digest of the request itself."""
    return f"{request_key}-{digest}"


def sealed_form(request: DevRequest, sealed_id: str) -> DevRequest:
    """What Prefect may hold of ``request`` once its prompt is kept in the store under ``sealed_id``: the same
    request with the prompt redacted (as run names and reports show it) and ``sealed`` set."""
    from promptship.domain.redaction import redact

    return request.model_copy(update={"prompt": redact(request.prompt), "sealed": sealed_id})


def run_key_for(request: DevRequest, occurrence: str | None = None) -> str:
    """The request key: same repository, base, prompt and origin → same key (and, for a ``recurring``
    request, the same occurrence).

    The branch name, the agent's conversation id, the PR lookup and the deployment annotation all derive
    from it, so a retried or re-submitted request finds its earlier work instead of redoing it.
    """
    if request.continues:
        return request.continues
    if request.sealed:  # the prompt is redacted here; the key was taken from the real one when it was sealed
        if request.recurring and occurrence:
            raise ValueError("the key of an occurrence of a sealed recurring request: unseal the request first")
        return request.sealed.split("-", 1)[0]
    normalized_prompt = " ".join(request.prompt.split())
    origin = f"issue:{request.issue_number}" if request.issue_number else ""
    if request.parent:
        origin += f"|follow-up:{request.parent}:{request.comment_id or ''}"
    parts = [request.repository.lower(), request.base_branch, origin, normalized_prompt]
    if request.recurring and occurrence:
        parts.append(f"occurrence:{occurrence}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


request_key_for = run_key_for


def branch_for(run_key: str) -> str:
    """The work branch of a run."""
    return f"promptship/{run_key}"


def conversation_id_for(run_key: str) -> str:
    """The agent conversation id of a run (a UUID, as the OpenHands agent-server expects)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, run_key))


RUN_KEY_ANNOTATION = "promptship.dev/run-key"
PR_MARKER_PREFIX = "<!-- promptship-run-key: "


def pr_marker(run_key: str) -> str:
    """A hidden marker in the PR body, so the PR of a run can be found again by its key."""
    return f"{PR_MARKER_PREFIX}{run_key} -->"


def run_name_for(request: DevRequest, *, width: int = 48) -> str:
    """A flow run's name: ``<repo> #<issue or PR>: <start of the prompt>`` with secrets and personal data
    redacted (the name is shown in the Prefect UI and stored by Prefect)."""
    from promptship.domain.redaction import redact

    where = request.repository.split("/", 1)[-1]
    number = request.issue_number or request.source_pr
    prompt = " ".join(redact(request.prompt).split())
    short = prompt if len(prompt) <= width else prompt[: width - 1].rstrip() + "…"
    return f"{where} #{number}: {short}" if number else f"{where}: {short}"
