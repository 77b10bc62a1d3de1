"""The dev cycle: route → generate code → open PR → wait for CI (repair) → merge → roll out → health → report.

The flow only orders the steps and branches on their verdicts; every side effect is in a task, cached by run
key + step so that a resumed or re-submitted run redoes nothing it already did.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, State, flow, get_run_logger
from prefect.client.schemas.objects import FlowRun

from promptship.domain.report import RunOutcome, RunReport, StepRecord
from promptship.domain.request import DevRequest, conversation_id_for
from promptship.domain.results import AgentHandle, GenerationResult
from promptship.errors import PromptshipError
from promptship.wiring import services
from tasks._support import now
from tasks.report import publish_report
from tasks.steps import (
    build_image,
    check_health,
    compile_check,
    generate_code,
    merge,
    open_pull_request,
    repair,
    roll_out,
    rollback,
    route_request,
    wait_for_ci,
)


def _on_cancellation(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:  # noqa: ARG001
    """A cancelled run interrupts its agent, tells its PR, and records the state."""
    try:
        request = DevRequest.model_validate(flow_run.parameters["request"])
    except Exception:  # parameters unreadable: nothing of ours to clean up
        return
    s = services()
    key = request.run_key
    try:
        s.agent.cancel(AgentHandle(conversation_id=conversation_id_for(key), created=False))
    except PromptshipError:
        pass
    try:
        pr = s.code_host.find_pull_request(request.repository, key)
        if pr is not None:
            s.code_host.comment(request.repository, pr.number, f"promptship run `{key}` was cancelled.")
    except PromptshipError:
        pass
    t = now()
    s.sink.record_step(
        StepRecord(run_key=key, step="report", started_at=t, ended_at=t, verdict="cancelled", error="cancelled")
    )
    s.sink.record_run(
        RunReport(
            run_key=key,
            repository=request.repository,
            prompt_redacted=s.llm.redact(request.prompt),
            requester=request.requester,
            outcome="cancelled",
            started_at=t,
            ended_at=t,
            steps=(),
            flow_run_id=str(flow_run.id),
        )
    )


@flow(name="dev-cycle", on_cancellation=[_on_cancellation], log_prints=False)
def dev_cycle(request: DevRequest) -> RunReport:
    """Take one development request from prompt to a verified deployment, recording every step.

    Ends in one of: deployed, rolled_back (health gate or rollout failed, previous version restored), stopped
    (agent error, CI red after the repair rounds, merge conflict), waiting (no human merge in time), failed.
    """
    log = get_run_logger()
    started = now()
    records: list[StepRecord] = []
    pr_url: str | None = None
    image: str | None = None
    compiled: bool | None = None

    def finish(outcome: RunOutcome) -> RunReport:
        log.info("run %s ended: %s", request.run_key, outcome)
        return publish_report(request, records, outcome, started, pr_url=pr_url, image=image, compiled=compiled)

    try:
        decision, rec = route_request(request)
        records.append(rec)

        generation, rec = generate_code(request, decision)
        records.append(rec)
        if generation.agent.verdict != "finished" or not generation.head_sha:
            return finish("stopped")
        generation, rec = compile_check(request, generation)
        records.append(rec)
        compiled = generation.compile.compiled if generation.compile else None

        pr, rec = open_pull_request(request, generation)
        records.append(rec)
        pr_url = pr.url

        generation, green = _ci_with_repairs(request, generation, records)
        if not green:
            return finish("stopped")

        merged, rec = merge(request, pr)
        records.append(rec)
        if merged.verdict != "merged" or not merged.merge_sha:
            return finish("waiting" if merged.verdict in ("waiting", "timed_out") else "stopped")

        image, rec = build_image(request, merged.merge_sha)
        records.append(rec)

        rollout, rec = roll_out(request, generation, image)
        records.append(rec)
        if rollout.verdict != "complete":
            return finish(_roll_back(request, records, why=f"rollout {rollout.verdict}: {rollout.reason}"))

        health, rec = check_health(request)
        records.append(rec)
        if health.verdict != "healthy":
            return finish(_roll_back(request, records, why=f"health gate: {health.detail}"))
        return finish("deployed")
    except PromptshipError as exc:
        log.error("run %s failed: %s: %s", request.run_key, type(exc).__name__, exc)
        finish("failed")
        raise


def _ci_with_repairs(
    request: DevRequest, generation: GenerationResult, records: list[StepRecord]
) -> tuple[GenerationResult, bool]:
    """Wait for CI; on red, send the failure back to the agent and wait again, at most N rounds."""
    rounds = services().settings.github.repair_rounds
    for round_number in range(1, rounds + 2):
        assert generation.head_sha is not None
        ci, rec = wait_for_ci(request, generation.head_sha, round_number)
        records.append(rec)
        if ci.verdict == "passed":
            return generation, True
        if ci.verdict == "timed_out" or round_number > rounds:
            return generation, False
        generation, rec = repair(request, generation, ci, round_number)
        records.append(rec)
        if rec.verdict != "finished" or not generation.head_sha:
            return generation, False
        generation, rec = compile_check(request, generation, label=f"compile_check#{round_number + 1}")
        records.append(rec)
    return generation, False


def _roll_back(request: DevRequest, records: list[StepRecord], why: str) -> RunOutcome:
    """Restore the previous revision and check it is healthy again."""
    restored, rec = rollback(request, why)
    records.append(rec)
    if restored.verdict != "restored":
        return "failed"
    health, rec = check_health(request, label="check_health:after_rollback")
    records.append(rec)
    return "rolled_back" if health.verdict == "healthy" else "failed"
