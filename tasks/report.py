"""The last step: the attempt's report — built in one place from the store — as Prefect artifacts and a row."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from promptship.domain.attempt import Attempt
from promptship.domain.progress import progress_finished
from promptship.domain.report import RunOutcome, RunReport, StepRecord, render_markdown, table_rows
from promptship.domain.request import DevRequest
from promptship.faults import DURING_REPORT, kill_point
from promptship.wiring import Ports
from tasks.context import RunContext

# the steps whose side effect a later attempt finds instead of repeating
_EFFECT_STEPS = ("generate_code", "open_pull_request", "merge", "roll_out")


def final_outcome(attempt: Attempt, steps: list[StepRecord], outcome: RunOutcome) -> RunOutcome:
    """``already_done`` for a later attempt that deployed only by finding what an earlier one had done."""
    effects = [s for s in steps if s.name in _EFFECT_STEPS]
    if outcome == "deployed" and attempt.number > 1 and effects and all(s.facts.found for s in effects):
        return "already_done"
    return outcome


def build_report(
    ports: Ports,
    request: DevRequest,
    attempt: Attempt,
    outcome: RunOutcome,
    *,
    error: str | None = None,
    flow_run_id: str | None = None,
) -> RunReport:
    """Record the ``report`` step and the attempt's report, from the attempt's step records in the store.

    The prompt is shown with detected secrets and personal data redacted; ``error`` (what ended a failed run)
    is redacted the same way and kept on the report step.
    """
    sink = ports.sink
    done = [s for s in sink.attempt_steps(attempt.id) if s.name != "report"]
    outcome = final_outcome(attempt, done, outcome)
    t = datetime.now(UTC)
    final = StepRecord(
        run_key=attempt.request_key,
        attempt_id=attempt.id,
        step="report",
        name="report",
        started_at=t,
        ended_at=t,
        verdict=outcome,
        error=ports.llm.redact(error) if error else None,
    )
    sink.record_step(final)

    def fact(name: str, attr: str) -> object:
        values = [getattr(s.facts, attr) for s in done if s.name == name and getattr(s.facts, attr) is not None]
        return values[-1] if values else None

    compiles = [s for s in done if s.name == "compile_check"]
    report = RunReport(
        run_key=attempt.request_key,
        attempt_id=attempt.id,
        attempt_number=attempt.number,
        repository=request.repository,
        prompt_redacted=ports.llm.redact(request.prompt),
        requester=request.requester,
        outcome=outcome,
        started_at=min([attempt.started_at, *(s.started_at for s in done)]),
        ended_at=datetime.now(UTC),
        steps=(*done, final),
        pr_url=fact("open_pull_request", "pr_url"),  # type: ignore[arg-type]
        image=fact("wait_for_image", "image"),  # type: ignore[arg-type]
        compiled=compiles[-1].facts.compiled if compiles else None,
        flow_run_id=flow_run_id,
        revert_pr_url=fact("write_back", "pr_url"),  # type: ignore[arg-type]
        revert_state=next((s.verdict for s in reversed(done) if s.name == "write_back"), None),
    )
    sink.record_run(report)
    return report


def _tag(ctx: RunContext, outcome: str) -> None:
    """Tag the flow run with its repository and outcome, so the UI can filter runs by them."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        run_id = UUID(ctx.holder)
    except ValueError:  # not a flow run (a direct call in a test): nothing to tag
        return
    try:
        with get_client(sync_client=True) as client:
            tags = set(client.read_flow_run(run_id).tags or [])
            tags |= {f"repo:{ctx.request.repository}", f"outcome:{outcome}"}
            client.update_flow_run(run_id, tags=sorted(tags))
    except Exception as exc:  # tags help people filter; a Prefect hiccup must not fail a finished run
        from prefect import get_run_logger

        get_run_logger().warning("tagging flow run %s failed: %s", run_id, type(exc).__name__)


@task(name="report", cache_policy=NO_CACHE)
def publish_report(ctx: RunContext, outcome: RunOutcome, error: str | None = None) -> RunReport:
    """Write the attempt's story (markdown) and its steps (table) as artifacts, keep the report in the store,
    end the attempt and release the request, and finish the run's progress with its outcome."""
    report = build_report(ctx.ports, ctx.request, ctx.attempt, outcome, error=error, flow_run_id=ctx.holder)
    ctx.report_progress(progress_finished(report.outcome))
    kill_point(DURING_REPORT)
    ctx.close(report.outcome)  # waits until that last progress is shown
    _tag(ctx, report.outcome)
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=f"run-{ctx.request_key}",
        description=f"promptship run {ctx.request_key} (attempt {ctx.attempt.number}): {report.outcome}",
    )
    create_table_artifact(
        table=table_rows(report),  # type: ignore[arg-type]
        key=f"steps-{ctx.request_key}",
        description=f"Steps of promptship run {ctx.request_key} (attempt {ctx.attempt.number})",
    )
    return report
