"""`/metrics`: the KPIs in Prometheus' text format, computed from the store on each scrape, and the runs of each
repository that are queued, running or waiting right now, read from Prefect (``prefect_run_census``).

The census comes from Prefect, not from the store: a queued run has not started yet (Scheduled in its repository's
work queue until the queue's and the pool's limits have room), so the store has never heard of it; Prefect has
every run and its state: Scheduled is queued, Pending/Running is running, Paused (Suspended) is waiting without a
process (``promptship.domain.fairness.run_census``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptship.domain.fairness import RunSeen, RunState, run_census
from promptship.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEV_CYCLE_FLOW = "dev-cycle"
_PAGE = 200  # Prefect's default most rows per read

Census = dict[tuple[str, RunState], int]
log = logging.getLogger("promptship.metrics")


def _repository(flow_run: Any) -> str | None:
    request = (flow_run.parameters or {}).get("request")
    repository = request.get("repository", "demo/chat-app") if isinstance(request, dict) else None
    return repository if isinstance(repository, str) and "/" in repository else None


def _counts(flow_run: Any, now: datetime) -> bool:
    """A run that has not ended counts, except a schedule's future occurrence (not asked for yet)."""
    state = flow_run.state
    if state is None or state.is_final():
        return False
    if state.is_scheduled() and getattr(flow_run, "auto_scheduled", False):
        when = flow_run.expected_start_time or state.state_details.scheduled_time
        return when is None or when <= now
    return True


async def _every(read: Callable[[int], Awaitable[list[Any]]]) -> AsyncIterator[Any]:
    """Every row of a paged Prefect read (``read(offset)`` returns at most ``_PAGE`` rows)."""
    offset = 0
    while True:
        page = await read(offset)
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        offset += _PAGE


async def prefect_run_census() -> Census:
    """Queued, running and waiting dev-cycle runs per repository, from the Prefect API the settings point at."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    live_types = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED]
    now = datetime.now(UTC)
    seen: list[RunSeen] = []
    async with get_client() as client:
        runs = _every(
            lambda offset: client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[DEV_CYCLE_FLOW])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live_types))),
                limit=_PAGE,
                offset=offset,
            )
        )
        async for flow_run in runs:
            repository = _repository(flow_run)
            if repository is not None and _counts(flow_run, now):
                assert flow_run.state is not None
                seen.append(RunSeen(repository, state_type=flow_run.state.type.value))
    return run_census(seen)


def census_text(census: Census) -> bytes:
    """The census as the gauge ``promptship_runs_by_state{repository, state}``."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    g = Gauge(
        "promptship_runs_by_state",
        "Dev-cycle runs now, per repository: queued (scheduled, no process: waiting for room in its work queue or "
        "pool, or for a worker), running (pending or running), "
        "waiting (suspended for CI, a merge or an image, without a process)",
        ["repository", "state"],
        registry=registry,
    )
    for (repository, state), n in sorted(census.items()):
        g.labels(repository=repository, state=state).set(n)
    return generate_latest(registry)


def metrics_endpoint(
    settings: Settings, census: Callable[[], Awaitable[Census]] | None = prefect_run_census
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint function serving the KPIs and the run census (mountable on any Starlette/FastAPI app).
    ``census`` None serves the KPIs alone. When Prefect cannot be read the KPIs are still served: the census
    gauge is missing from that scrape (and the reason logged), never made up."""
    from promptship.kpi_outputs import kpis_from_store, prometheus_text
    from promptship.wiring import build_store

    store = build_store(settings)

    async def endpoint(_request: Request) -> Response:
        report, _ = kpis_from_store(store, settings)
        body = prometheus_text(report)
        if census is not None:
            try:
                body += census_text(await census())
            except Exception as exc:  # Prefect down or refusing: the KPIs still answer
                log.warning("run census not read from Prefect: %s: %s", type(exc).__name__, exc)
        return Response(body, media_type=CONTENT_TYPE)

    return endpoint


def create_metrics_app(settings: Settings) -> Starlette:
    """A small app with only ``GET /metrics``."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(settings), methods=["GET"])])
