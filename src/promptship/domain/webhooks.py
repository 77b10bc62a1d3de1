"""What a GitHub webhook delivery means for promptship — pure decisions, no I/O.

The receiver (``promptship.servers.webhook``) checks size and signature, then asks ``decide()`` what a
verified delivery asks for:

- ``trigger``  an allowed person asked for a run: an issue labelled with the trigger label, or a comment that
               starts with ``/promptship <prompt>`` (on a PR promptship opened: a follow-up of its request);
- ``control``  an allowed person wrote ``/promptship stop`` (cancel the request's active attempt) or
               ``/promptship retry`` (a new attempt of the last request of that issue or PR);
- ``refuse``   someone asked, but may not (author association) or asked for nothing usable: a polite comment;
- ``ci``       a ``check_suite`` / ``check_run`` / ``status`` event: wake the CI waits of that commit (and
               resume the suspended runs waiting for it);
- ``pull_request`` a ``pull_request`` closed event (merged or not): resume the runs suspended in a wait for a
               human merge of that PR;
- ``installation`` the GitHub App was installed on or removed from repositories (``installation``,
               ``installation_repositories``): the allowlist follows — a repository the App no longer reaches
               starts nothing until it is added again (and only if it is configured);
- ``forbidden`` the repository is not on the allowlist: nothing happens at all;
- ``ignore``   anything else (other events and actions, bots, comments without the command).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptship.domain.request import PR_MARKER_PREFIX, DevRequest

SIGNATURE_PREFIX = "sha256="
COMMAND = "/promptship"
CI_EVENTS = frozenset({"check_suite", "check_run", "status"})

INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})

DecisionKind = Literal["trigger", "control", "refuse", "ci", "pull_request", "installation", "forbidden", "ignore"]
Control = Literal["stop", "retry"]
CONTROLS: tuple[Control, ...] = ("stop", "retry")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is GitHub's HMAC-SHA256 of ``body`` under ``secret`` (constant-time compare)."""
    if not secret or not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"), header.strip().encode("ascii", "replace"))


class WebhookPolicy(BaseModel):
    """Who may start work through webhooks (from ``settings.github``)."""

    model_config = ConfigDict(frozen=True)

    allowed_repositories: frozenset[str] = Field(description="owner/name, compared case-insensitively.")
    allowed_associations: frozenset[str] = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
    trigger_label: str = "promptship"
    uninstalled: frozenset[str] = Field(
        default=frozenset(), description="Configured repositories the GitHub App was removed from (lower-case)."
    )

    @classmethod
    def of(cls, repositories: Collection[str], associations: Collection[str], trigger_label: str) -> WebhookPolicy:
        return cls(
            allowed_repositories=frozenset(r.strip().lower() for r in repositories if r.strip()),
            allowed_associations=frozenset(a.strip().upper() for a in associations if a.strip()),
            trigger_label=trigger_label,
        )

    def repository_allowed(self, repository: str) -> bool:
        """Configured, and not removed from the GitHub App's installation."""
        name = repository.lower()
        return name in self.allowed_repositories and name not in self.uninstalled

    def after(self, change: InstallationChange) -> WebhookPolicy:
        """This policy once ``change`` happened: removed repositories stop, added ones start again."""
        removed = {r.lower() for r in change.removed}
        added = {r.lower() for r in change.added}
        return self.model_copy(update={"uninstalled": frozenset((self.uninstalled | removed) - added)})


class InstallationChange(BaseModel):
    """Repositories a GitHub App installation gained or lost (owner/name)."""

    model_config = ConfigDict(frozen=True)

    installation_id: int | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class WebhookTrigger(BaseModel):
    """A run asked for through GitHub: the payload of the ``promptship.request`` event."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    repository: str
    issue_number: int
    requester: str
    delivery_id: str
    continues: str | None = Field(default=None, description="Follow-up on the open PR of this request key.")
    parent: str | None = Field(default=None, description="Follow-up on the merged/closed PR of this request key.")
    source_pr: int | None = None
    comment_id: int | None = None
    sealed: str | None = Field(
        default=None, description="The prompt is kept in promptship's store under this id; `prompt` is redacted."
    )

    @classmethod
    def again(cls, request: DevRequest, *, number: int, requester: str, delivery_id: str) -> WebhookTrigger:
        """The trigger that starts ``request`` again (``/promptship retry`` on issue/PR ``number``): the inverse
        of ``to_request`` for the fields a trigger carries."""
        return cls(
            prompt=request.prompt,
            repository=request.repository,
            issue_number=request.issue_number or request.source_pr or number,
            requester=requester,
            delivery_id=delivery_id,
            continues=request.continues,
            parent=request.parent,
            source_pr=request.source_pr,
            comment_id=request.comment_id,
            sealed=request.sealed,
        )

    def sealed_as(self, sealed: DevRequest) -> WebhookTrigger:
        """This trigger carrying ``sealed`` (the sealed form of its request) instead of its prompt."""
        return self.model_copy(update={"prompt": sealed.prompt, "sealed": sealed.sealed})

    def to_request(self) -> DevRequest:
        """The development request of this trigger (raises pydantic's ValidationError when unusable)."""
        return DevRequest(
            prompt=self.prompt,
            repository=self.repository,
            requester=self.requester,
            issue_number=None if self.source_pr is not None else self.issue_number,
            delivery_id=self.delivery_id,
            continues=self.continues,
            parent=self.parent,
            source_pr=self.source_pr,
            comment_id=self.comment_id,
            sealed=self.sealed,
        )


class CISignal(BaseModel):
    """A CI event for one commit: something the CI waits of ``sha`` should look at again."""

    model_config = ConfigDict(frozen=True)

    repository: str
    sha: str
    event: str
    action: str | None = None
    delivery_id: str = ""


class PullRequestSignal(BaseModel):
    """A pull request was closed (merged or not): runs waiting for a person to merge it should look again."""

    model_config = ConfigDict(frozen=True)

    repository: str
    number: int
    merged: bool
    delivery_id: str = ""


class WebhookDecision(BaseModel):
    """What to do with one verified delivery."""

    model_config = ConfigDict(frozen=True)

    kind: DecisionKind
    reason: str
    repository: str | None = None
    trigger: WebhookTrigger | None = None
    ci: CISignal | None = None
    pull_request: PullRequestSignal | None = None
    installation: InstallationChange | None = None
    comment_on: int | None = Field(default=None, description="Issue or PR to comment on (refusal, control).")
    comment: str | None = None
    control: Control | None = Field(default=None, description="`/promptship stop` or `/promptship retry`.")
    request_key: str | None = Field(default=None, description="The request a control names (from the PR).")
    requester: str | None = None


def _get(payload: Mapping[str, Any], *path: str) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def command_prompt(body: str | None) -> str | None:
    """The prompt of a ``/promptship <prompt>`` comment (the command must open the comment), else None."""
    if not body:
        return None
    text = body.strip()
    if not text.startswith(COMMAND):
        return None
    rest = text[len(COMMAND) :]
    if rest and not rest[0].isspace():  # "/promptshipfoo" is not the command
        return None
    return rest.strip()


def refusal_text(requester: str, association: str | None, allowed: Collection[str]) -> str:
    who = f"@{requester}" if requester else "there"
    return (
        f"Hello {who}, thank you for the request. promptship starts work only for people with write access to "
        f"this repository ({', '.join(sorted(allowed))}); your association here is "
        f"{(association or 'NONE').upper()}. A maintainer can start it by labelling the issue or commenting "
        f"`{COMMAND} <what to build>`."
    )


def invalid_prompt_text(requester: str, problem: str) -> str:
    who = f"@{requester}" if requester else "there"
    return (
        f"Hello {who}, promptship could not start from this request: {problem}. "
        f"Write what to build after the command, e.g. `{COMMAND} add a /health endpoint`."
    )


def decide(event: str, payload: Mapping[str, Any], delivery_id: str, policy: WebhookPolicy) -> WebhookDecision:
    """What a verified delivery of ``event`` asks promptship to do (see the module docstring)."""
    if event in INSTALLATION_EVENTS:
        return _installation_decision(event, payload)
    repository = _get(payload, "repository", "full_name")
    handled = event in CI_EVENTS or event in ("issues", "issue_comment", "pull_request")
    if not handled:
        return WebhookDecision(kind="ignore", reason=f"event {event!r} is not handled", repository=repository)
    if not isinstance(repository, str) or not repository:
        return WebhookDecision(kind="ignore", reason="payload names no repository")
    if not policy.repository_allowed(repository):
        return WebhookDecision(
            kind="forbidden", reason=f"repository {repository} is not on the allowlist", repository=repository
        )
    action = _get(payload, "action")

    if event in CI_EVENTS:
        return _ci_decision(event, action, payload, repository, delivery_id)
    if event == "pull_request":
        return _pull_request_decision(action, payload, repository, delivery_id)

    sender_type = _get(payload, "sender", "type")
    if sender_type == "Bot":
        return WebhookDecision(kind="ignore", reason="deliveries caused by bots start nothing", repository=repository)
    issue_number = _get(payload, "issue", "number")
    if not isinstance(issue_number, int):
        return WebhookDecision(kind="ignore", reason="payload names no issue", repository=repository)

    if event == "issues":
        if action != "labeled":
            return WebhookDecision(kind="ignore", reason=f"issues.{action} starts nothing", repository=repository)
        if _get(payload, "label", "name") != policy.trigger_label:
            return WebhookDecision(kind="ignore", reason="another label was added", repository=repository)
        # The prompt is the issue's text, so its author must be allowed; adding a label already needs triage
        # rights on GitHub.
        requester = _get(payload, "issue", "user", "login") or ""
        association = _get(payload, "issue", "author_association")
        title = _get(payload, "issue", "title") or ""
        body = _get(payload, "issue", "body") or ""
        prompt = f"{title.strip()}\n\n{body.strip()}".strip()
    else:  # issue_comment
        if action != "created":
            return WebhookDecision(
                kind="ignore", reason=f"issue_comment.{action} starts nothing", repository=repository
            )
        maybe_prompt = command_prompt(_get(payload, "comment", "body"))
        if maybe_prompt is None:
            return WebhookDecision(kind="ignore", reason="comment holds no /promptship command", repository=repository)
        prompt = maybe_prompt
        requester = _get(payload, "comment", "user", "login") or _get(payload, "sender", "login") or ""
        association = _get(payload, "comment", "author_association")

    if not isinstance(association, str) or association.upper() not in policy.allowed_associations:
        return WebhookDecision(
            kind="refuse",
            reason=f"requester {requester} has association {association or 'NONE'}",
            repository=repository,
            comment_on=issue_number,
            comment=refusal_text(requester, association, policy.allowed_associations),
        )
    if event == "issue_comment" and prompt.strip().lower() in CONTROLS:
        control: Control = "stop" if prompt.strip().lower() == "stop" else "retry"
        return WebhookDecision(
            kind="control",
            reason=f"/promptship {control} by {requester}",
            repository=repository,
            comment_on=issue_number,
            control=control,
            request_key=_promptship_pr_key(payload),
            requester=requester,
        )
    follow_up = _follow_up(event, payload)
    trigger = WebhookTrigger(
        prompt=prompt,
        repository=repository,
        issue_number=issue_number,
        requester=requester,
        delivery_id=delivery_id,
        **follow_up,
    )
    try:
        trigger.to_request()
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return WebhookDecision(
            kind="refuse",
            reason=f"unusable request: {problem}",
            repository=repository,
            comment_on=issue_number,
            comment=invalid_prompt_text(requester, problem),
        )
    return WebhookDecision(
        kind="trigger", reason=f"{event}.{action} by {requester}", repository=repository, trigger=trigger
    )


def _follow_up(event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/promptship`` comment on a PR that promptship opened (its body carries the request's marker) follows
    that request up: it continues it while the PR is open, and starts a new request linked to it once the PR
    is merged or closed. Any other comment is a request of its own (empty dict)."""
    key = _promptship_pr_key(payload) if event == "issue_comment" else None
    if key is None:
        return {}
    number = _get(payload, "issue", "number")
    comment_id = _get(payload, "comment", "id")
    ids = {"source_pr": number, "comment_id": comment_id if isinstance(comment_id, int) else None}
    if _get(payload, "issue", "state") == "open" and not _get(payload, "issue", "pull_request", "merged_at"):
        return {"continues": key, **ids}
    return {"parent": key, **ids}


def _promptship_pr_key(payload: Mapping[str, Any]) -> str | None:
    """The request key of the PR an issue_comment was written on, when promptship opened that PR."""
    if not isinstance(_get(payload, "issue", "pull_request"), Mapping):
        return None
    return request_key_in(_get(payload, "issue", "body"))


def request_key_in(body: Any) -> str | None:
    """The request key in a PR body's hidden marker (``<!-- promptship-run-key: KEY -->``), if any."""
    if not isinstance(body, str):
        return None
    match = re.search(re.escape(PR_MARKER_PREFIX) + r"([0-9a-f]{16}) -->", body)
    return match.group(1) if match else None


def _ci_decision(
    event: str, action: Any, payload: Mapping[str, Any], repository: str, delivery_id: str
) -> WebhookDecision:
    if event == "status":
        sha = _get(payload, "sha")
    else:
        sha = _get(payload, event, "head_sha")
    if not isinstance(sha, str) or not sha:
        return WebhookDecision(kind="ignore", reason=f"{event} without a commit sha", repository=repository)
    signal = CISignal(
        repository=repository,
        sha=sha,
        event=event,
        action=action if isinstance(action, str) else None,
        delivery_id=delivery_id,
    )
    return WebhookDecision(kind="ci", reason=f"{event} of {sha[:12]}", repository=repository, ci=signal)


def _pull_request_decision(
    action: Any, payload: Mapping[str, Any], repository: str, delivery_id: str
) -> WebhookDecision:
    number = _get(payload, "pull_request", "number")
    if not isinstance(number, int):
        number = _get(payload, "number")
    if action != "closed":
        return WebhookDecision(kind="ignore", reason=f"pull_request.{action} ends no wait", repository=repository)
    if not isinstance(number, int):
        return WebhookDecision(kind="ignore", reason="pull_request without a number", repository=repository)
    merged = bool(_get(payload, "pull_request", "merged"))
    signal = PullRequestSignal(repository=repository, number=number, merged=merged, delivery_id=delivery_id)
    how = "merged" if merged else "closed without merge"
    return WebhookDecision(kind="pull_request", reason=f"#{number} {how}", repository=repository, pull_request=signal)


# installation.<action> → which way its ``repositories`` go
_INSTALLATION_ACTIONS = {"created": "added", "unsuspend": "added", "deleted": "removed", "suspend": "removed"}


def _names(items: Any) -> tuple[str, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(sorted(n for item in items if isinstance(n := _get(item, "full_name"), str) and n))


def _installation_decision(event: str, payload: Mapping[str, Any]) -> WebhookDecision:
    action = _get(payload, "action")
    installation_id = _get(payload, "installation", "id")
    installation_id = installation_id if isinstance(installation_id, int) else None
    if event == "installation":
        direction = _INSTALLATION_ACTIONS.get(action if isinstance(action, str) else "")
        if direction is None:
            return WebhookDecision(kind="ignore", reason=f"installation.{action} changes no repositories")
        names = _names(payload.get("repositories"))
        change = InstallationChange(installation_id=installation_id, **{direction: names})
    else:
        if action not in ("added", "removed"):
            return WebhookDecision(kind="ignore", reason=f"installation_repositories.{action} is not handled")
        change = InstallationChange(
            installation_id=installation_id,
            added=_names(payload.get("repositories_added")),
            removed=_names(payload.get("repositories_removed")),
        )
    if not change.added and not change.removed:
        return WebhookDecision(kind="ignore", reason=f"{event}.{action} names no repositories")
    summary = ", ".join([*(f"+{n}" for n in change.added), *(f"-{n}" for n in change.removed)])
    return WebhookDecision(kind="installation", reason=f"{event}.{action}: {summary}", installation=change)
