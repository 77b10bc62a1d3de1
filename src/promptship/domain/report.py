"""Step records and the run report: the story of one run, and the rows KPIs are computed from."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StepName = Literal[
    "route",
    "generate_code",
    "compile_check",
    "open_pull_request",
    "wait_for_ci",
    "repair",
    "merge",
    "wait_for_image",
    "roll_out",
    "check_health",
    "rollback",
    "write_back",
    "report",
]
RunOutcome = Literal["deployed", "rolled_back", "stopped", "failed", "cancelled", "waiting", "already_done"]


class StepFacts(BaseModel):
    """The typed facts a step writes: what KPIs and reports read (``domain/kpi.py`` names which ones it uses).

    ``found``: the step found its side effect already done by an earlier attempt (the PR by its marker, the
    conversation by its id, the rollout by its annotation) and made none of its own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    found: bool | None = None
    task_class: str | None = None
    sensitive: bool | None = None
    conversation_id: str | None = None
    head_sha: str | None = None
    files_changed: int | None = None
    lines_changed: int | None = None
    compiled: bool | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    ci_verdict: str | None = None
    failing_checks: str | None = None
    merge_sha: str | None = None
    image: str | None = None
    revision: int | None = None
    health_url: str | None = None
    probes: int | None = None
    restored_image: str | None = None
    after_rollback: bool | None = Field(default=None, description="A health check of the restored version.")
    time_to_restore_s: float | None = None
    ledger_cost_usd: float | None = Field(
        default=None, description="What the gateway's ledger recorded for this step's LLM calls (USD)."
    )


class StepRecord(BaseModel):
    """What one step did: when, with which model and why, what it cost, and its verdict."""

    model_config = ConfigDict(frozen=True)

    run_key: str = Field(description="The request key (the same for every attempt of a request).")
    attempt_id: str = Field(default="", description="The attempt this record belongs to.")
    step: str = Field(
        description="Step label, unique in an attempt; repeated steps carry their round, e.g. "
        "'wait_for_ci#2'. KPIs read ``name`` and ``round``, never the label."
    )
    name: StepName | None = None
    round: int | None = Field(default=None, description="CI round, repair round or compile round (1-based).")
    started_at: datetime
    ended_at: datetime
    verdict: str
    model: str | None = None
    route_reason: str | None = None
    mode: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_missing: bool = False
    error: str | None = None
    facts: StepFacts = Field(default_factory=StepFacts)
    detail: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Display-only extras (command, why); nothing computes with them."
    )

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


class RunReport(BaseModel):
    """The whole run: request summary (redacted), steps, outcome, links, totals."""

    model_config = ConfigDict(frozen=True)

    run_key: str = Field(description="The request key.")
    attempt_id: str = ""
    attempt_number: int = 1
    repository: str
    prompt_redacted: str
    requester: str
    outcome: RunOutcome
    started_at: datetime
    ended_at: datetime
    steps: tuple[StepRecord, ...]
    pr_url: str | None = None
    image: str | None = None
    compiled: bool | None = None
    flow_run_id: str | None = None
    revert_pr_url: str | None = None
    revert_state: str | None = Field(
        default=None, description="The revert PR after a rollback: merged, open (waiting for a person), ci_failed…"
    )

    @property
    def total_cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.steps), 6)

    @property
    def cost_missing(self) -> bool:
        return any(s.cost_missing for s in self.steps)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _link(url: str | None, label: str | None = None) -> str:
    """A markdown link (its label the PR number when the URL ends in one), or — without a URL."""
    if not url:
        return "—"
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return f"[{label or ('#' + tail if tail.isdigit() else url)}]({url})"


def _short(sha: str | None) -> str:
    return f"`{sha[:12]}`" if sha else "—"


def _story_line(s: StepRecord) -> str | None:
    """What one step did, as a sentence a person reads (None for a step that says nothing new)."""
    f = s.facts
    if s.name == "route":
        where = f"`{s.model}`" + (f" ({s.mode})" if s.mode else "")
        sensitive = " — sensitive: local models only" if f.sensitive else ""
        return f"Routed as **{f.task_class or 'default'}** to {where}{sensitive}: {_cell(s.route_reason or '—')}."
    if s.name == "generate_code":
        if f.found:
            return f"The code agent's earlier work was found (conversation `{f.conversation_id}`)."
        size = f"{f.files_changed} file(s)" + (f", {f.lines_changed} line(s)" if f.lines_changed is not None else "")
        return f"The code agent {s.verdict} with `{s.model}` ({size} changed; head {_short(f.head_sha)})."
    if s.name == "compile_check":
        which = "The change" if (s.round or 1) == 1 else f"The repaired change (round {s.round})"
        return f"{which} {'compiled' if f.compiled else 'did not compile'}."
    if s.name == "open_pull_request":
        return f"Pull request {_link(f.pr_url)} {'found' if f.found else 'opened'}."
    if s.name == "wait_for_ci":
        failing = f" (failing: {_cell(f.failing_checks)})" if f.failing_checks else ""
        return f"CI round {s.round or 1} on {_short(f.head_sha)}: **{s.verdict}**{failing}."
    if s.name == "repair":
        return f"Repair round {s.round or 1}: CI's failure went back to the agent, which {s.verdict}."
    if s.name == "merge":
        return f"Merge: **{s.verdict}**" + (f" as {_short(f.merge_sha)}" if f.merge_sha else "") + "."
    if s.name == "wait_for_image":
        return f"CI built the image `{f.image}` from the merge commit."
    if s.name == "roll_out":
        revision = f" (revision {f.revision})" if f.revision is not None else ""
        return f"Rollout: **{s.verdict}**{revision}" + (f" — {_cell(s.error)}" if s.error else "") + "."
    if s.name == "check_health":
        which = "Health gate of the restored version" if f.after_rollback else "Health gate"
        probes = f" after {f.probes} probe(s)" if f.probes is not None else ""
        return f"{which}: **{s.verdict}**{probes} of {f.health_url or '—'}."
    if s.name == "rollback":
        restore = f" in {f.time_to_restore_s:.1f} s" if f.time_to_restore_s is not None else ""
        why = f" — {_cell(s.detail['why'])}" if s.detail.get("why") else ""
        return f"Rollback: **{s.verdict}**, `{f.restored_image or '—'}` serving again{restore}{why}."
    if s.name == "write_back":
        return f"The merge was reverted in git: revert PR {_link(f.pr_url)} ({s.verdict})."
    if s.name == "report":
        return f"Outcome: **{s.verdict}**" + (f" — {_cell(s.error)}" if s.error else "") + "."
    return None


def story(report: RunReport) -> list[str]:
    """The run told step by step, one sentence each, in the order the steps ran."""
    return [line for s in report.steps if (line := _story_line(s)) is not None]


def cost_by_mode(report: RunReport) -> dict[str, float]:
    """LLM cost (USD) per routing mode (local, cloud…) of the steps that made calls."""
    out: dict[str, float] = {}
    for s in report.steps:
        if s.mode and (s.cost_usd or s.prompt_tokens or s.completion_tokens):
            out[s.mode] = round(out.get(s.mode, 0.0) + s.cost_usd, 6)
    return out


def render_markdown(report: RunReport) -> str:
    """The run's story as markdown (Prefect artifact and CLI output): summary with links, the story, the route
    decisions, the steps with their costs. Everything in it comes from the report, whose prompt and errors are
    already redacted."""
    attempt = f" (attempt {report.attempt_number})" if report.attempt_number > 1 else ""
    tokens = sum(s.prompt_tokens + s.completion_tokens for s in report.steps)
    by_mode = ", ".join(f"{mode} ${usd:.4f}" for mode, usd in sorted(cost_by_mode(report).items()))
    routes = [s for s in report.steps if s.route_reason]
    lines = [
        f"# promptship run `{report.run_key}`{attempt} — {report.outcome}",
        "",
        f"- **Repository**: `{report.repository}`  ",
        f"- **Requested by**: {_cell(report.requester)}  ",
        f"- **Request**: {_cell(report.prompt_redacted)}  ",
        f"- **Pull request**: {_link(report.pr_url)}  ",
        f"- **Image deployed**: {report.image or '—'}  ",
        *(
            [f"- **Revert PR**: {_link(report.revert_pr_url)} ({report.revert_state})  "]
            if report.revert_pr_url
            else []
        ),
        f"- **Compiled**: {'—' if report.compiled is None else ('yes' if report.compiled else 'no')}  ",
        f"- **LLM cost**: ${report.total_cost_usd:.4f}"
        + (f" ({by_mode})" if by_mode else "")
        + f", {tokens} tokens"
        + (" (a cloud cost was not reported by its provider)" if report.cost_missing else "")
        + "  ",
        f"- **Duration**: {(report.ended_at - report.started_at).total_seconds():.1f} s",
        "",
        "## What happened",
        "",
        *(f"{n}. {line}" for n, line in enumerate(story(report), start=1)),
        "",
        "## Route decisions",
        "",
        *(
            ["| step | model | mode | why |", "|---|---|---|---|"]
            + [
                f"| {_cell(s.step)} | {_cell(s.model or '—')} | {_cell(s.mode or '—')} | {_cell(s.route_reason)} |"
                for s in routes
            ]
            if routes
            else ["No LLM call was routed in this attempt."]
        ),
        "",
        "## Steps",
        "",
        "| step | verdict | model | mode | why | tokens | cost (USD) | seconds | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report.steps:
        tokens = s.prompt_tokens + s.completion_tokens
        lines.append(
            f"| {_cell(s.step)} | {_cell(s.verdict)} | {_cell(s.model or '—')} | {_cell(s.mode or '—')} "
            f"| {_cell(s.route_reason or '—')} | {tokens} | {s.cost_usd:.4f} | {s.seconds:.2f} "
            f"| {_cell(s.error or '')} |"
        )
    return "\n".join(lines) + "\n"


def table_rows(report: RunReport) -> list[dict[str, str | int | float]]:
    """One row per step, for a Prefect table artifact."""
    return [
        {
            "step": s.step,
            "verdict": s.verdict,
            "model": s.model or "",
            "mode": s.mode or "",
            "reason": s.route_reason or "",
            "tokens": s.prompt_tokens + s.completion_tokens,
            "cost_usd": round(s.cost_usd, 6),
            "seconds": round(s.seconds, 3),
            "error": s.error or "",
        }
        for s in report.steps
    ]
