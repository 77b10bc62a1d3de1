"""The sweeper: dead dev-cycle runs found and resumed without a person.

A SIGKILLed flow run (its process or its worker gone) stays ``Running`` in Prefect forever: Prefect marks a
run Crashed only when its own process sees the crash, and never retries a crashed run (PrefectHQ/prefect#10211).
(A run whose worker survived is marked Crashed by that worker, and also stays unfinished.) What tells a dead
run from a slow one is the request's lease: a live run's heartbeat renews it every ``lease_ttl_s / 4``
(``tasks/context.py``), so a Running, Pending or Crashed dev-cycle run whose attempt is not over and whose
request nobody holds (the lease expired) is dead; when another live run holds the request, it was taken over.
The sweeper resumes each dead one exactly the way
``promptship resume --force`` does (``resume_dev_cycle``): the run is marked Crashed and a new flow run
continues its attempt from the step cache.

``promptship sweep`` runs this pass in each round, after the pass over suspended runs whose wait is over
(``--every N`` keeps sweeping); ``sweep_dead_runs`` is this pass alone as a flow, for a scheduled deployment.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed

from promptship.domain.report import RunReport
from promptship.wiring import process_ports

SweepAction = Literal["resumed", "alive", "not_started", "taken_over", "over", "closed", "failed"]
SWEPT_STATES = (StateType.RUNNING, StateType.PENDING, StateType.CRASHED)


@dataclass(frozen=True)
class SweptRun:
    """What the sweeper did with one Running/Pending dev-cycle run."""

    flow_run_id: str
    name: str
    action: SweepAction
    outcome: str | None = None
    detail: str = ""


def sweep(
    *, resume: Callable[[str], RunReport] | None = None, within_s: float = 86400.0, limit: int = 200
) -> list[SweptRun]:
    """One pass: every dev-cycle flow run Prefect shows Running, Pending or Crashed (crashed within
    ``within_s``), judged by its attempt and its request's lease; the dead ones resumed (``resume``:
    ``resume_dev_cycle(id, force=True)`` by default), one after the other."""
    from flows.dev_cycle import resume_dev_cycle

    resume = resume or (lambda run_id: resume_dev_cycle(run_id, force=True))
    sink = process_ports().sink
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["dev-cycle"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(SWEPT_STATES)))
            ),
            limit=limit,
        )
    swept: list[SweptRun] = []
    now = datetime.now(UTC)
    for run in sorted(runs, key=lambda r: r.start_time or r.created or datetime.now(UTC)):
        run_id = str(run.id)
        crashed = run.state is not None and run.state.type == StateType.CRASHED
        if crashed and run.state is not None and (now - run.state.timestamp).total_seconds() > within_s:
            continue
        attempt = sink.attempt_of_flow_run(run_id)
        if attempt is None:  # waiting for a worker, or before its first step: nothing to take over
            swept.append(SweptRun(run_id, run.name, "not_started"))
            continue
        if attempt.status == "ended":  # resumed already, or it ended but died before Prefect heard of it
            if crashed:
                swept.append(SweptRun(run_id, run.name, "over", attempt.outcome))
                continue
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Crashed(message=f"attempt ended {attempt.outcome}; process gone"))
            swept.append(SweptRun(run_id, run.name, "closed", attempt.outcome))
            continue
        holder = sink.lease_holder(attempt.request_key)
        if holder == run_id and not crashed:  # its heartbeat renews the lease: alive
            swept.append(SweptRun(run_id, run.name, "alive"))
            continue
        if holder is not None:  # another run (or this crashed one, until its lease expires) holds the request
            swept.append(SweptRun(run_id, run.name, "taken_over" if holder != run_id else "alive"))
            continue
        try:
            report = resume(run_id)
        except Exception as exc:  # one dead run that cannot be resumed must not stop the others
            swept.append(SweptRun(run_id, run.name, "failed", detail=f"{type(exc).__name__}: {exc}"))
            continue
        swept.append(SweptRun(run_id, run.name, "resumed", report.outcome))
    return swept


@flow(name="sweep-dead-runs", log_prints=False)
def sweep_dead_runs() -> list[str]:
    """Find dev-cycle runs whose process died (Running in Prefect, their request's lease expired) and resume
    them; returns one line per run looked at."""
    log = get_run_logger()
    lines = []
    for s in sweep():
        line = f"{s.flow_run_id} {s.name}: {s.action}" + (f" ({s.outcome})" if s.outcome else "")
        line += f" {s.detail}" if s.detail else ""
        if s.action in ("resumed", "closed", "failed"):
            log.info("%s", line)
        lines.append(line)
    return lines
