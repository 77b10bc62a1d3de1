"""The dev cycle: route → generate code → open PR → wait for CI (repair) → merge → roll out → health → report.

A run of a deployment that would wait long for CI, a human merge or the base branch's image suspends instead of
holding its process (``tasks/waiting.py``); resumed, it runs again from the start and takes every finished step
from the cache.

The flow only orders the steps and branches on their verdicts. It resolves the run context once (the ports,
the request key, the attempt under the request's lease: ``tasks/context.py``) and hands it to every step;
each step is cached per attempt, so a resumed attempt redoes nothing it already did, and finds its side
effects by request key, so a new attempt repeats none. How many runs work at once is Prefect's to say: a run is
started only when its repository's work queue and the work pool have room (``tasks/queues.py``); a run that
arrived in its deployment's own queue moves to its repository's first.
"""

# No `from __future__ import annotations` here: a worker loads this file from its entrypoint and Prefect builds
# the parameter model from the annotations, which must be real types (DevRequest), not strings.
from typing import Any
from uuid import UUID

from prefect import Flow, State, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Crashed

from promptship.domain.report import RunOutcome, RunReport
from promptship.domain.request import DevRequest, conversation_id_for, run_name_for
from promptship.domain.results import AgentHandle, GenerationResult, PullRequestInfo
from promptship.domain.writeback import status_target
from promptship.errors import AttemptInProgress, InvalidRequest, PromptshipError
from promptship.faults import BETWEEN_MERGE_AND_ROLLOUT, kill_point
from promptship.wiring import Ports, process_ports
from tasks.context import RunContext, open_run, resuming
from tasks.queues import move_to_repository_queue
from tasks.report import build_report, publish_report
from tasks.status import note_queued, publish_status
from tasks.steps import (
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
    wait_for_image,
    write_back,
)
from tasks.waiting import before_ci, before_image, before_merge


def _on_cancellation(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:  # noqa: ARG001
    """A cancelled run interrupts its agent, tells its PR, and records the state of its attempt."""
    try:
        request = DevRequest.model_validate(flow_run.parameters["request"])
    except Exception:  # parameters unreadable: nothing of ours to clean up
        return
    ports = process_ports()
    attempt = ports.sink.attempt_of_flow_run(str(flow_run.id))
    if attempt is None:  # cancelled before its first step: nothing was started
        return
    key = attempt.request_key
    try:
        ports.agent.cancel(AgentHandle(conversation_id=conversation_id_for(key), created=False))
    except PromptshipError:
        pass
    try:
        pr = ports.code_host.find_pull_request(request.repository, key)
        if pr is not None:
            ports.code_host.comment(request.repository, pr.number, f"promptship run `{key}` was cancelled.")
    except PromptshipError:
        pass
    build_report(ports, request, attempt, "cancelled", error="cancelled", flow_run_id=str(flow_run.id))
    ports.sink.end_attempt(attempt.id, "cancelled", holder=str(flow_run.id))
    ports.llm.expire_agent_access(attempt.id)


def _run_name() -> str:
    """What a run is, in its name: repository, issue or PR, and the start of the prompt — redacted."""
    from prefect.runtime import flow_run

    raw = (flow_run.parameters or {}).get("request") or {}
    try:
        request = raw if isinstance(raw, DevRequest) else DevRequest.model_validate(raw)
    except Exception:  # an unreadable request fails in the flow with its message; the name stays plain
        return "dev-cycle"
    return run_name_for(request)


@flow(name="dev-cycle", flow_run_name=_run_name, on_cancellation=[_on_cancellation], log_prints=False)
def dev_cycle(request: DevRequest) -> RunReport:
    """Take one development request from prompt to a verified deployment, recording every step.

    Ends in one of: deployed, rolled_back (health gate or rollout failed, previous version restored), stopped
    (agent error, CI red after the repair rounds, merge conflict, PR closed without merge), waiting (no human
    merge in time),
    already_done (a later attempt that found everything done), failed. A run that started outside its
    repository's work queue moves there first and ends Completed without a report (the moved run makes it).
    """
    ports = process_ports()
    # fair under load: a run a schedule, the UI form or the event trigger put in its deployment's own work queue
    # moves to its repository's, where Prefect starts it when the limits allow (tasks/queues.py), and ends here
    moved = move_to_repository_queue(ports.limits(), request, ports.sink.seal, ports.forget_replaced_parameters)
    if moved is not None:
        get_run_logger().info("moved to the work queue of %s as flow run %s", request.repository, moved)
        # a flow that returns a state ends in it: Completed, with no report (the moved run makes the report)
        return Completed(message=f"moved to its repository's work queue as flow run {moved}")  # type: ignore[return-value]
    # a sealed request (what Prefect holds of a prompt that may carry a secret) stands for the one in the store
    request = ports.sink.unseal(request)
    return _dev_cycle(ports, request)


def _dev_cycle(ports: Ports, request: DevRequest) -> RunReport:
    log = get_run_logger()
    try:
        # a follow-up waits (up to a human merge's wait) behind the attempt it continues; others are refused
        queue_s = ports.limits().merge_timeout_s if request.continues else 0.0
        ctx = open_run(
            ports,
            request,
            queue_s=queue_s,
            on_queued=lambda exc: note_queued(ports, request, request.run_key, str(exc)),
        )
    except AttemptInProgress as exc:
        log.warning("%s", exc)
        _tell_requester(ports, request, str(exc))
        raise
    log.info("request %s: attempt %s", ctx.request_key, ctx.attempt.id)

    def finish(outcome: RunOutcome, error: str | None = None) -> RunReport:
        report = publish_report(ctx, outcome, error)
        _status(ctx)
        log.info("request %s attempt %s ended: %s", ctx.request_key, ctx.attempt.id, report.outcome)
        return report

    try:
        decision = route_request(ctx, request)
        _status(ctx)
        generation = generate_code(ctx, request, decision)
        if generation.agent.verdict != "finished" or not generation.head_sha:
            return finish("stopped")
        generation = compile_check(ctx, generation)

        pr = open_pull_request(ctx, request, generation)
        _status(ctx)

        generation, green = _ci_with_repairs(ctx, request, generation)
        if not green:
            return finish("stopped")

        merged = merge(ctx, request, pr, timeout_s=before_merge(ctx, request, pr))
        if merged.verdict != "merged" or not merged.merge_sha:
            return finish("waiting" if merged.verdict in ("waiting", "timed_out") else "stopped")
        _status(ctx)
        merge_sha = merged.merge_sha
        kill_point(BETWEEN_MERGE_AND_ROLLOUT)

        image = wait_for_image(ctx, request, merge_sha, timeout_s=before_image(ctx, request, merge_sha))

        rollout = roll_out(ctx, request, generation, image)
        if rollout.verdict != "complete":
            events = "; ".join(rollout.events[:5])
            why = f"rollout {rollout.verdict}: {rollout.reason}" + (f" (events: {events})" if events else "")
            return finish(_roll_back(ctx, request, pr, merge_sha, why=why))

        health = check_health(ctx, request)
        if health.verdict != "healthy":
            return finish(_roll_back(ctx, request, pr, merge_sha, why=f"health gate: {health.detail}"))
        return finish("deployed")
    except Exception as exc:  # a service error that retries did not cure, or a bug: record it, then fail the run
        done = [s.step for s in ports.sink.attempt_steps(ctx.attempt.id) if s.name != "report"]
        after = done[-1] if done else "start"
        log.error("run %s failed after %s: %s: %s", ctx.request_key, after, type(exc).__name__, exc)
        finish("failed", error=f"after {after}: {type(exc).__name__}: {exc}")
        raise


def _ci_with_repairs(
    ctx: RunContext, request: DevRequest, generation: GenerationResult
) -> tuple[GenerationResult, bool]:
    """Wait for CI; on red, send the failure back to the agent and wait again, at most N rounds."""
    rounds = ctx.limits.repair_rounds
    for round_number in range(1, rounds + 2):
        assert generation.head_sha is not None
        sha = generation.head_sha
        ci = wait_for_ci(ctx, request, sha, round_number, timeout_s=before_ci(ctx, request, sha, round_number))
        if ci.verdict == "passed":
            return generation, True
        _status(ctx)
        if ci.verdict == "timed_out" or round_number > rounds:
            return generation, False
        repaired = repair(ctx, request, generation, ci, round_number)
        if repaired.skipped or repaired.agent.verdict != "finished" or not repaired.head_sha:
            return repaired, False
        generation = compile_check(ctx, repaired, round_number=round_number + 1)
    return generation, False


def _roll_back(ctx: RunContext, request: DevRequest, pr: PullRequestInfo, merge_sha: str, why: str) -> RunOutcome:
    """Restore the previous revision, check it is healthy again, and revert the merge on the base branch."""
    restored = rollback(ctx, request, why)
    if restored.verdict != "restored":
        return "failed"
    health = check_health(ctx, request, after_rollback=True)
    if health.verdict != "healthy":
        return "failed"
    write_back(ctx, request, pr, merge_sha, restored, why)
    return "rolled_back"


def _status(ctx: RunContext) -> None:
    """Update the request's status comment — a task run only when the request has an issue or PR to write to."""
    if status_target(ctx.request) is not None:
        publish_status(ctx)


def _tell_requester(ports: Any, request: DevRequest, message: str) -> None:
    """A request refused because another run works on it gets a comment where it came from (GitHub issue)."""
    if request.issue_number is None:
        return
    try:
        ports.code_host.comment(request.repository, request.issue_number, f"promptship: {message}")
    except PromptshipError:
        pass


def resume_dev_cycle(flow_run_id: str, *, force: bool = False) -> RunReport:
    """Continue the attempt of an earlier flow run (crashed, failed, or killed with its process).

    Reads the run's ``request`` parameter from the Prefect API and runs ``dev_cycle`` again as a new flow run
    bound to the same attempt: every step's result is persisted and cached per attempt, so the new run takes
    the finished steps from the cache (no second branch, conversation, PR or rollout) and continues after the
    last one.

    A run still marked Running/Pending may still be alive; it is only taken over with ``force`` (its process
    is known to be dead, e.g. SIGKILLed: Prefect never marks such a run Crashed by itself), and is then marked
    Crashed so the UI does not show a zombie and its hold on the request ends.
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
    attempt = process_ports().sink.attempt_of_flow_run(flow_run_id)
    with resuming(attempt.id if attempt else None):
        return dev_cycle.with_options(flow_run_name=f"{old.name}-resumed")(request)
