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
    "roll_out",
    "check_health",
    "rollback",
    "report",
]
RunOutcome = Literal["deployed", "rolled_back", "stopped", "failed", "cancelled", "waiting"]


class StepRecord(BaseModel):
    """What one step did: when, with which model and why, what it cost, and its verdict."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    step: str = Field(description="Step name; repeated steps carry a round suffix, e.g. 'wait_for_ci#2'.")
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
    detail: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


class RunReport(BaseModel):
    """The whole run: request summary (redacted), steps, outcome, links, totals."""

    model_config = ConfigDict(frozen=True)

    run_key: str
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

    @property
    def total_cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.steps), 6)

    @property
    def cost_missing(self) -> bool:
        return any(s.cost_missing for s in self.steps)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: RunReport) -> str:
    """The run's story as markdown (Prefect artifact and CLI output)."""
    lines = [
        f"# promptship run `{report.run_key}` — {report.outcome}",
        "",
        f"- **Repository**: `{report.repository}`  ",
        f"- **Requested by**: {_cell(report.requester)}  ",
        f"- **Request**: {_cell(report.prompt_redacted)}  ",
        f"- **Pull request**: {report.pr_url or '—'}  ",
        f"- **Image deployed**: {report.image or '—'}  ",
        f"- **Compiled**: {'—' if report.compiled is None else ('yes' if report.compiled else 'no')}  ",
        f"- **LLM cost**: ${report.total_cost_usd:.4f}"
        + (" (a cloud cost was not reported by its provider)" if report.cost_missing else ""),
        f"- **Duration**: {(report.ended_at - report.started_at).total_seconds():.1f} s",
        "",
        "| step | verdict | model | why | tokens | cost (USD) | seconds | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report.steps:
        tokens = s.prompt_tokens + s.completion_tokens
        lines.append(
            f"| {_cell(s.step)} | {_cell(s.verdict)} | {_cell(s.model or '—')} | {_cell(s.route_reason or '—')} "
            f"| {tokens} | {s.cost_usd:.4f} | {s.seconds:.2f} | {_cell(s.error or '')} |"
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
