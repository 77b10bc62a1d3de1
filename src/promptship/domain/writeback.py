"""Written back: what promptship tells the repository and the requester — the revert PR after a rollback and
the one status comment of a request, edited in place. Pure: markers, branch names and texts.

Every write-back is found again by a hidden marker, like the PR of a request: the revert PR by the merge
commit it reverts (so a second rollback of another change gets its own), the status comment by request key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from promptship.domain.attempt import Attempt
from promptship.domain.report import StepRecord
from promptship.domain.request import DevRequest

REVERT_MARKER_PREFIX = "<!-- promptship-revert: "
STATUS_MARKER_PREFIX = "<!-- promptship-status: "


def revert_branch_for(merge_sha: str) -> str:
    """The branch of the revert of ``merge_sha`` (derived from the reverted commit, not from the request)."""
    return f"promptship/revert-{merge_sha[:12]}"


def revert_marker(merge_sha: str) -> str:
    return f"{REVERT_MARKER_PREFIX}{merge_sha} -->"


def status_marker(request_key: str) -> str:
    return f"{STATUS_MARKER_PREFIX}{request_key} -->"


def status_target(request: DevRequest) -> int | None:
    """Where a request's status comment goes: the issue it came from, else the PR a follow-up was written on."""
    return request.issue_number or request.source_pr


def issue_reference(issue_number: int | None, *, closes: bool) -> str | None:
    """How the PR names the issue it came from: ``Fixes #n`` only when the request says so."""
    if issue_number is None:
        return None
    return f"Fixes #{issue_number}" if closes else f"Requested in #{issue_number}."


def issue_in(pr_body: str | None) -> int | None:
    """The issue a PR's body references the way ``issue_reference`` writes it (the inverse), if any. The
    reference follows the model-written description, so the last one counts."""
    found = re.findall(r"^(?:Fixes #(\d+)|Requested in #(\d+)\.)$", pr_body or "", re.M)
    return int(found[-1][0] or found[-1][1]) if found else None


class RevertEvidence(BaseModel):
    """Why a merged change was reverted, as the revert PR's body shows it."""

    model_config = ConfigDict(frozen=True)

    merge_sha: str
    original_pr_url: str
    why: str
    restored_image: str | None = None
    time_to_restore_s: float | None = None
    run_url: str | None = None
    request_key: str


def revert_title(original_title: str, pr_number: int) -> str:
    return f'Revert "{original_title}" (#{pr_number})'[:120]


def revert_body(e: RevertEvidence) -> str:
    restore = f"{e.time_to_restore_s:.1f} s" if e.time_to_restore_s is not None else "—"
    return "\n".join(
        [
            f"promptship rolled back the deployment of {e.original_pr_url} (merge commit `{e.merge_sha}`).",
            "This PR reverts that merge so the base branch says what is running again.",
            "",
            "| evidence | |",
            "|---|---|",
            f"| why | {e.why.replace('|', '/').replace(chr(10), ' ')} |",
            f"| image restored | `{e.restored_image or '—'}` |",
            f"| time to restore | {restore} |",
            f"| run | {e.run_url or e.request_key} |",
            "",
            revert_marker(e.merge_sha),
            "",
        ]
    )


def revert_comment(revert_url: str, state: str) -> str:
    waiting = {
        "merged": "merged",
        "open": "open — waiting for a person to merge it",
    }.get(state, f"not merged: {state.replace('_', ' ')}")
    return f"promptship rolled this change back and opened the revert {revert_url} ({waiting})."


def _fmt_cost(usd: float) -> str:
    return f"${usd:.4f}"


def _attempt_lines(attempt: Attempt, steps: Sequence[StepRecord]) -> list[str]:
    lines = [f"**Attempt {attempt.number}** (`{attempt.id}`)"]
    for s in steps:
        f = s.facts
        if s.name == "route":
            why = f" — {s.route_reason}" if s.route_reason else ""
            lines.append(f"- started: class `{f.task_class}`, model `{s.model}` ({s.mode}){why}")
        elif s.name == "open_pull_request":
            lines.append(f"- PR {'found' if f.found else 'opened'}: {f.pr_url}")
        elif s.name == "wait_for_ci" and s.verdict != "passed":
            lines.append(f"- CI {s.verdict} (round {s.round}): {f.failing_checks or '—'}")
        elif s.name == "repair":
            lines.append(f"- repair round {s.round}: {s.verdict}")
        elif s.name == "wait_for_ci":
            lines.append(f"- CI passed (round {s.round})")
        elif s.name == "merge":
            lines.append(f"- merge: {s.verdict}" + (f" (`{f.merge_sha[:12]}`)" if f.merge_sha else ""))
        elif s.name == "roll_out":
            lines.append(f"- rollout of `{f.image}`: {s.verdict}")
        elif s.name == "check_health" and not f.after_rollback:
            lines.append(f"- health gate at {f.health_url}: {s.verdict}" + (f" ({s.error})" if s.error else ""))
        elif s.name == "rollback":
            lines.append(
                f"- rolled back to `{f.restored_image}` in {f.time_to_restore_s or 0:.1f} s"
                + (f": {s.detail.get('why')}" if s.detail.get("why") else "")
            )
        elif s.name == "write_back":
            lines.append(f"- revert PR: {f.pr_url} ({s.verdict})")
        elif s.name == "report":
            lines.append(f"- **{s.verdict}**" + (f": {s.error}" if s.error and s.verdict != "cancelled" else ""))
    cost = sum(s.facts.ledger_cost_usd if s.facts.ledger_cost_usd is not None else s.cost_usd for s in steps)
    lines.append(f"- cost so far: {_fmt_cost(cost)}")
    return lines


def render_status(request_key: str, attempts: Sequence[tuple[Attempt, Sequence[StepRecord]]], note: str = "") -> str:
    """The request's one status comment: a section per attempt, newest last, and its hidden marker."""
    lines = [f"### promptship — request `{request_key}`", ""]
    if note:
        lines += [note, ""]
    for attempt, steps in attempts:
        lines += [*_attempt_lines(attempt, steps), ""]
    lines.append(status_marker(request_key))
    return "\n".join(lines) + "\n"
