"""The dev cycle: route → generate code → open PR → wait for CI (repair) → merge → roll out → health → report.

The flow only orders the steps and branches on their verdicts; every side effect is in a task, cached by run
key + step so that a resumed or re-submitted run redoes nothing it already did.
"""

# No `from __future__ import annotations` here: a worker loads this file from its entrypoint and Prefect builds
# the parameter model from the annotations, which must be real types (DevRequest), not strings.
from typing import Any
from uuid import UUID

from prefect import Flow, State, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed

from promptship.domain.report import RunOutcome, RunReport, StepRecord
from promptship.domain.request import DevRequest, conversation_id_for
from promptship.domain.results import AgentHandle, GenerationResult
from promptship.errors import InvalidRequest, PromptshipError
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
    final = StepRecord(run_key=key, step="report", started_at=t, ended_at=t, verdict="cancelled", error="cancelled")
    s.sink.record_step(final)
    read_steps = getattr(s.sink, "steps", None)  # the store can say which steps finished before the cancel
    found: list[StepRecord] = list(read_steps(key)) if callable(read_steps) else []  # type: ignore[call-overload]
    done = [r for r in found if r.step != "report"]
    done.sort(key=lambda r: r.started_at)
    s.sink.record_run(
        RunReport(
            run_key=key,
            repository=request.repository,
            prompt_redacted=s.llm.redact(request.prompt),
            requester=request.requester,
            outcome="cancelled",
            started_at=done[0].started_at if done else t,
            ended_at=t,
            steps=(*done, final),
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

    def finish(outcome: RunOutcome, error: str | None = None) -> RunReport:
        log.info("run %s ended: %s", request.run_key, outcome)
        return publish_report(
            request, records, outcome, started, pr_url=pr_url, image=image, compiled=compiled, error=error
        )

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
    except Exception as exc:  # a service error that retries did not cure, or a bug: record it, then fail the run
        after = records[-1].step if records else "start"
        log.error("run %s failed after %s: %s: %s", request.run_key, after, type(exc).__name__, exc)
        finish("failed", error=f"after {after}: {type(exc).__name__}: {exc}")
        raise


def _ci_with_repairs(
    request: DevRequest, generation: GenerationResult, records: list[StepRecord]
) -> tuple[GenerationResult, bool]:
    """Wait for CI; on red, send the failure back to the agent and wait again, at most N rounds."""
    rounds = services().settings.pipeline.repair_rounds
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


def resume_dev_cycle(flow_run_id: str, *, force: bool = False) -> RunReport:
    """Continue the dev cycle of an earlier flow run (crashed, failed, or killed with its process).

    Reads the run's ``request`` parameter from the Prefect API and runs ``dev_cycle`` again as a new flow run.
    Every step's result is persisted and cached by run key + step, so the new run takes the finished steps
    from the cache (no second branch, conversation, PR or rollout) and continues after the last one.

    A run still marked Running/Pending may still be alive; it is only taken over with ``force`` (its process
    is known to be dead, e.g. SIGKILLed: Prefect never marks such a run Crashed by itself), and is then marked
    Crashed so the UI does not show a zombie.
    """
    try:
        run_id = UUID(flow_run_id)
    except ValueError as exc:
        raise InvalidRequest(f"flow run id {flow_run_id!r} is not a UUID") from exc
    with get_client(sync_client=True) as client:
        old = client.read_flow_run(run_id)
        if "request" not in old.parameters:
            raise InvalidRequest(f"flow run {flow_run_id} has no 'request' parameter: not a dev-cycle run")
        request = DevRequest.model_validate(old.parameters["request"])
        state = old.state
        if state is not None and not state.is_final():
            if not force:
                raise InvalidRequest(
                    f"flow run {flow_run_id} is {state.name}: it may still be running. If its process is dead, "
                    "resume with --force."
                )
            client.set_flow_run_state(run_id, Crashed(message="process gone; resumed by promptship resume"), force=True)
    return dev_cycle.with_options(flow_run_name=f"{old.name}-resumed")(request)
