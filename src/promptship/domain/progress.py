"""How far a run is: the stage a step puts it in, as "stage n/N" with a percentage and a line of text.

The dev cycle's stages, in the order a run that deploys passes them. Steps that repeat or branch stay in the
stage they belong to, so the progress never goes backwards: a repair (and the compile check and CI round after
it) is part of the CI stage, a rollback and its write-back part of the health stage. The report is the last
stage; a run that ends early (stopped after CI, rolled back) jumps to it: the run is over.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from promptship.domain.report import StepName

STAGES: tuple[tuple[StepName, str], ...] = (
    ("route", "routing the request"),
    ("generate_code", "the code agent is working"),
    ("compile_check", "checking that the change builds"),
    ("open_pull_request", "opening the pull request"),
    ("wait_for_ci", "waiting for CI"),
    ("merge", "merging the pull request"),
    ("wait_for_image", "waiting for the merge commit's image"),
    ("roll_out", "rolling out"),
    ("check_health", "health gate"),
    ("report", "report"),
)
_INDEX: dict[StepName, int] = {name: n for n, (name, _) in enumerate(STAGES, start=1)}


class Progress(BaseModel):
    """Where a run is: ``stage`` of ``stages``, the step label that put it there, and what that means."""

    model_config = ConfigDict(frozen=True)

    stage: int
    stages: int = len(STAGES)
    step: str
    text: str

    @property
    def percent(self) -> float:
        """Stages finished, in percent: a run in stage n has finished n-1 of them; the report finishes all."""
        done = self.stages if self.step == "report" else self.stage - 1
        return round(100.0 * done / self.stages, 1)

    def describe(self) -> str:
        """One line for a person: ``Stage 5/10 · wait_for_ci#2 — waiting for CI (round 2, after repair 1)``."""
        return f"Stage {self.stage}/{self.stages} · {self.step} — {self.text}"


def progress_at(name: StepName, label: str, round_number: int | None = None) -> Progress:
    """The progress of a run whose step ``name`` (labelled ``label``, in round ``round_number``) just started."""
    n = round_number or 1
    ci, health = _INDEX["wait_for_ci"], _INDEX["check_health"]
    if name == "repair":
        return Progress(stage=ci, step=label, text=f"CI failed: the agent repairs (round {n})")
    if name == "compile_check" and n > 1:
        return Progress(stage=ci, step=label, text=f"checking that the repaired change builds (round {n})")
    if name == "wait_for_ci" and n > 1:
        return Progress(stage=ci, step=label, text=f"waiting for CI (round {n}, after repair {n - 1})")
    if name == "rollback":
        return Progress(stage=health, step=label, text="the change failed the gate: rolling back")
    if name == "write_back":
        return Progress(stage=health, step=label, text="rolled back: reverting the merge in git")
    if name == "check_health" and label.endswith("after_rollback"):
        return Progress(stage=health, step=label, text="health gate of the restored version")
    return Progress(stage=_INDEX[name], step=label, text=dict(STAGES)[name])


def progress_started(attempt_number: int) -> Progress:
    """Before the first step: the run holds its request and begins (or continues) an attempt."""
    return Progress(stage=1, step="start", text=f"attempt {attempt_number} started")


def progress_finished(outcome: str) -> Progress:
    """The run is over: the report is written, with the run's outcome."""
    return Progress(stage=_INDEX["report"], step="report", text=f"finished: {outcome}")
