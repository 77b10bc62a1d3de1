"""The last step: the run's report, as Prefect artifacts and a row in the store."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext

from promptship.domain.report import RunOutcome, RunReport, StepRecord, render_markdown, table_rows
from promptship.domain.request import DevRequest
from promptship.wiring import services
from tasks._support import now, step_record


@task(name="report")
def publish_report(
    request: DevRequest,
    records: list[StepRecord],
    outcome: RunOutcome,
    started_at: datetime,
    pr_url: str | None = None,
    image: str | None = None,
    compiled: bool | None = None,
    error: str | None = None,
) -> RunReport:
    """Write the run's story (markdown) and its steps (table) as artifacts, and keep the report in the store.

    The prompt is shown with detected secrets and personal data redacted; no credential is ever part of it.
    ``error`` (the exception that ended a failed run) is redacted the same way and kept on the report step.
    """
    s = services()
    t0 = now()
    flow_ctx = FlowRunContext.get()
    flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
    final = step_record(request.run_key, "report", t0, outcome, error=s.llm.redact(error) if error else None)
    s.sink.record_step(final)
    report = RunReport(
        run_key=request.run_key,
        repository=request.repository,
        prompt_redacted=s.llm.redact(request.prompt),
        requester=request.requester,
        outcome=outcome,
        started_at=started_at,
        ended_at=now(),
        steps=(*records, final),
        pr_url=pr_url,
        image=image,
        compiled=compiled,
        flow_run_id=flow_run_id,
    )
    s.sink.record_run(report)
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=f"run-{request.run_key}",
        description=f"promptship run {request.run_key}: {outcome}",
    )
    create_table_artifact(
        table=table_rows(report),  # type: ignore[arg-type]
        key=f"steps-{request.run_key}",
        description=f"Steps of promptship run {request.run_key}",
    )
    return report
