"""The run context: one per flow run — the request, its key, the attempt, the ports and the run's limits.

``open_run`` resolves it once, before the first step: it binds the flow run to its attempt (continued or new,
see ``promptship.domain.attempt``) under the request's lease, so at most one flow run works on a request at a
time, and keeps the lease alive with a heartbeat while the run lasts. Every step receives the context.

The context also carries the run's progress artifact (``report_progress``): created when the run opens, moved
on by the step mechanism as each step starts (``tasks/_step.py``) and finished by the report — the one place
the Prefect UI's run page learns which stage a run has reached (``promptship.domain.progress``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from promptship.domain.attempt import Attempt, occurrence_of
from promptship.domain.limits import RunLimits
from promptship.domain.progress import Progress, progress_started
from promptship.domain.request import DevRequest, request_key_for
from promptship.errors import AttemptInProgress, ConfigError
from promptship.ports import Cluster
from promptship.wiring import Ports

_resuming: ContextVar[str | None] = ContextVar("promptship_resuming_attempt", default=None)


@contextmanager
def resuming(attempt_id: str | None) -> Iterator[None]:
    """Flow runs started inside the block continue ``attempt_id`` (``promptship resume``)."""
    token = _resuming.set(attempt_id)
    try:
        yield
    finally:
        _resuming.reset(token)


class RunContext:
    """What every step of one flow run works with. Not a Prefect parameter of the flow: resolved in it."""

    def __init__(
        self, *, request: DevRequest, request_key: str, attempt: Attempt, ports: Ports, limits: RunLimits, holder: str
    ):
        self.request = request
        self.request_key = request_key
        self.attempt = attempt
        self.ports = ports
        self.limits = limits
        self.holder = holder  # the flow run id holding the request's lease
        self.run_url: str | None = None  # the flow run's page in the Prefect UI, when it has one
        self.in_flow_run = False  # a Prefect flow run (not a direct call): it has a progress artifact
        self._progress_id: UUID | None = None
        self._progress_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def deployer(self) -> Cluster:
        """The one deployer of the request's environment: the cluster (push) or the GitOps repository."""
        if self.request.deploy_mode == "push":
            return self.ports.cluster
        gitops = self.ports.gitops
        if gitops is None:
            raise ConfigError(
                "deploy_mode 'gitops' needs a GitOps repository: set PROMPTSHIP_KUBE__GITOPS_REPO_URL "
                "(and PROMPTSHIP_KUBE__GITOPS_APPLICATION when Argo CD runs)"
            )
        return gitops

    def health_url(self) -> str:
        url = self.request.deploy.health_url or self.limits.default_health_url
        if not url:
            raise ConfigError(
                "no health URL: set deploy.health_url in the request or PROMPTSHIP_HEALTH__URL in the environment"
            )
        return url

    def renew(self) -> None:
        """Extend the request's lease (every step does, and the heartbeat between steps)."""
        self.ports.sink.renew_lease(self.request_key, self.holder, self.limits.lease_ttl_s)

    def report_progress(self, progress: Progress) -> None:
        """Show ``progress`` in the run's progress artifact (key ``progress-<request key>``), creating it on the
        first call. Only step names, rounds and outcomes go into it — never the prompt. A Prefect hiccup is
        logged and the run goes on: the artifact is a view, nothing depends on it."""
        if not self.in_flow_run:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        try:
            with self._progress_lock:
                if self._progress_id is None:
                    created = create_progress_artifact(
                        progress=progress.percent, key=f"progress-{self.request_key}", description=progress.describe()
                    )
                    self._progress_id = cast(UUID, created)  # the sync variant (this is sync code)
                else:
                    update_progress_artifact(self._progress_id, progress.percent, description=progress.describe())
        except Exception as exc:
            logging.getLogger("promptship.progress").warning(
                "progress of %s not shown (%s): %s", self.request_key, progress.step, type(exc).__name__
            )

    def start_heartbeat(self) -> None:
        interval = max(1.0, self.limits.lease_ttl_s / 4)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except Exception:  # a store hiccup: the next beat tries again, the lease outlives a few misses
                    pass

        self._heartbeat = threading.Thread(target=beat, name=f"lease-{self.request_key}", daemon=True)
        self._heartbeat.start()

    def close(self, outcome: str | None) -> None:
        """Stop the heartbeat; with an ``outcome``, end the attempt, release the lease and expire the attempt's
        agent keys."""
        self._stop.set()
        if outcome is not None:
            self.ports.sink.end_attempt(self.attempt.id, outcome, holder=self.holder)
            self.ports.llm.expire_agent_access(self.attempt.id)  # its agent keys die with it (docs/AGENT.md)


def _flow_run() -> Any:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run if ctx is not None else None


def scheduled_occurrence(flow_run: Any) -> str | None:
    """The occurrence of a flow run Prefect's scheduler created (None for any other run)."""
    if flow_run is None:
        return None
    auto = bool(getattr(flow_run, "auto_scheduled", False)) or "auto-scheduled" in (flow_run.tags or [])
    when = getattr(flow_run, "expected_start_time", None)
    return occurrence_of(when) if auto and when is not None else None


def holder_alive(flow_run_id: str) -> bool:
    """Whether the flow run holding a lease may still run (Prefect does not show it in a final state)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # unknown to this Prefect server (or not a UUID): nobody runs it here
        return False
    return state is not None and not state.is_final()


def _keep_prompt_out_of_prefect(flow_run: Any, sealed: DevRequest) -> None:
    """A run started with the prompt itself as its parameter (the UI form, an in-process call) gets its
    ``request`` parameter replaced by the sealed form — prompt redacted, the prompt kept encrypted in the store —
    so Prefect's API and UI stop showing it, and a retry or ``promptship resume`` of this flow run reads the
    prompt from the store. (Prefect's database may keep the first bytes until its pages are reused: starters that
    can seal before they submit — the webhook receiver, ``promptship run``, the demo — do.)"""
    given = (flow_run.parameters or {}).get("request")
    if isinstance(given, DevRequest):
        given = given.model_dump(mode="json")
    if isinstance(given, dict) and given.get("sealed"):
        return
    from prefect.client.orchestration import get_client

    parameters = {**(flow_run.parameters or {}), "request": sealed.model_dump(mode="json")}
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, parameters=parameters)


def _run_url(flow_run: Any) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run.id}" if ui and flow_run is not None else None


def open_run(
    ports: Ports,
    request: DevRequest,
    *,
    queue_s: float = 0.0,
    on_queued: Callable[[AttemptInProgress], None] | None = None,
    poll_s: float = 2.0,
) -> RunContext:
    """Bind this flow run to its attempt of ``request`` (see the module docstring) and start its heartbeat.

    Raises AttemptInProgress, before anything happened, when another live flow run holds the request — after
    waiting up to ``queue_s`` for it to end (a follow-up queues behind the active attempt; ``on_queued`` is
    told once).
    """
    deadline = time.monotonic() + queue_s
    told = False
    while True:
        try:
            return _open_run(ports, request)
        except AttemptInProgress as exc:
            if time.monotonic() >= deadline:
                raise
            if on_queued is not None and not told:
                on_queued(exc)
                told = True
            time.sleep(poll_s)


def _open_run(ports: Ports, request: DevRequest) -> RunContext:
    flow_run = _flow_run()
    holder = str(flow_run.id) if flow_run is not None else f"local-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
    occurrence = scheduled_occurrence(flow_run)
    key = request_key_for(request, occurrence)
    limits = ports.limits()
    attempt = ports.sink.begin_attempt(
        key,
        flow_run_id=holder,
        occurrence=None if request.recurring else occurrence,
        attempt_id=_resuming.get(),
        lease_ttl_s=limits.lease_ttl_s,
        holder_alive=holder_alive,
    )
    ports.sink.remember_request(key, request)
    if flow_run is not None:
        _keep_prompt_out_of_prefect(flow_run, ports.sink.seal(request))
    ctx = RunContext(request=request, request_key=key, attempt=attempt, ports=ports, limits=limits, holder=holder)
    ctx.run_url = _run_url(flow_run)
    ctx.in_flow_run = flow_run is not None
    ctx.report_progress(progress_started(attempt.number))
    ctx.start_heartbeat()
    return ctx
