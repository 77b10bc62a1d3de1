"""The run context: one per flow run — the request, its key, the attempt, the ports and the run's limits.

``open_run`` resolves it once, before the first step: it binds the flow run to its attempt (continued or new,
see ``promptship.domain.attempt``) under the request's lease, so at most one flow run works on a request at a
time, and keeps the lease alive with a heartbeat while the run lasts. Every step receives the context.

The context also carries the run's progress artifact (``report_progress``): created when the run opens, moved
on by the step mechanism as each step starts (``tasks/_step.py``) and finished by the report — the one place
the Prefect UI's run page learns which stage a run has reached (``promptship.domain.progress``).
"""

from __future__ import annotations

import contextvars
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
        self._progress: _ProgressSender | None = None  # a Prefect flow run's (a direct call has none)
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
        """Show ``progress`` in the run's progress artifact (key ``progress-<request key>``). Only step names,
        rounds and outcomes go into it — never the prompt. It is sent from a background thread, so no step
        waits on it; ``close`` waits for the last one. A Prefect hiccup is logged and the run goes on: the
        artifact is a view, nothing depends on it."""
        if self._progress is not None:
            self._progress.send(progress)

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

    def hold_lease_while_suspended(self, seconds: float) -> None:
        """Before the flow run suspends: stop the heartbeat and keep the request's lease for ``seconds`` (the wait
        plus a margin), so no other run takes the request while this one waits without a process. Its resume is
        the same flow run, which may take its own lease again (``Store.begin_attempt``)."""
        self._stop.set()
        self.ports.sink.renew_lease(self.request_key, self.holder, seconds)

    def from_deployment(self) -> bool:
        """Whether this flow run belongs to a deployment (only those can suspend: Prefect reschedules a resumed
        run through its deployment's work pool)."""
        flow_run = _flow_run()
        return flow_run is not None and getattr(flow_run, "deployment_id", None) is not None

    def close(self, outcome: str | None) -> None:
        """Stop the heartbeat and show the last progress; with an ``outcome``, end the attempt, release the lease
        and expire the attempt's agent keys."""
        self._stop.set()
        if self._progress is not None:
            self._progress.close()
        if outcome is not None:
            self.ports.sink.end_attempt(self.attempt.id, outcome, holder=self.holder)
            self.ports.llm.expire_agent_access(self.attempt.id)  # its agent keys die with it (docs/AGENT.md)


class _ProgressSender:
    """Shows a run's latest progress in its Prefect progress artifact from one background thread (created on
    the first send, updated in place after): a send only records the progress, so the flow never waits on the
    API; a newer progress replaces one not yet shown. The thread runs in a copy of the context it was started
    from (the flow run's), so the artifact belongs to that flow run."""

    def __init__(self, key: str, *, flush_timeout_s: float = 15.0):
        self.key = key
        self.flush_timeout_s = flush_timeout_s
        self._artifact_id: UUID | None = None
        self._pending: Progress | None = None
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(self, progress: Progress) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = progress
            if self._thread is None:
                run_in = contextvars.copy_context()
                self._thread = threading.Thread(target=run_in.run, args=(self._loop,), name=self.key, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Wait (at most ``flush_timeout_s``) until the last progress is shown, then stop the thread."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=self.flush_timeout_s)
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:  # closed, nothing left to show
                    return
                progress, self._pending, self._busy = self._pending, None, True
            try:
                self._show(progress)
            except Exception as exc:
                logging.getLogger("promptship.progress").warning(
                    "progress of %s not shown (%s): %s", self.key, progress.step, type(exc).__name__
                )
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _show(self, progress: Progress) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self._artifact_id is None:
            created = create_progress_artifact(progress=progress.percent, key=self.key, description=progress.describe())
            self._artifact_id = cast(UUID, created)  # the sync variant: this thread runs no event loop
        else:
            update_progress_artifact(self._artifact_id, progress.percent, description=progress.describe())


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


def keep_prompt_out_of_prefect(flow_run: Any, sealed: DevRequest, forget_old_bytes: Callable[[], str | None]) -> None:
    """A run started with the prompt itself as its parameter (the UI form, an in-process call) gets its
    ``request`` parameter replaced by the sealed form — prompt redacted, the prompt kept encrypted in the store —
    so Prefect's API and UI stop showing it, and a retry or ``promptship resume`` of this flow run reads the
    prompt from the store (a run that moves to its repository's work queue, ``tasks/queues.py``, does the same
    before it moves). Then ``forget_old_bytes`` (``Ports.forget_replaced_parameters``) makes Prefect's database
    drop the first bytes where it can — a SQLite file here: its WAL checkpointed and truncated; what it could not
    do is logged in one line and never fails the run. (Starters that can seal before they submit — the webhook
    receiver, ``promptship run``, the demo — do, and leave Prefect nothing to forget.)"""
    given = (flow_run.parameters or {}).get("request")
    if isinstance(given, DevRequest):
        given = given.model_dump(mode="json")
    if isinstance(given, dict) and given.get("sealed"):
        return
    from prefect.client.orchestration import get_client

    parameters = {**(flow_run.parameters or {}), "request": sealed.model_dump(mode="json")}
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, parameters=parameters)
    not_done = forget_old_bytes()
    if not_done:
        _logger().warning("the prompt's first copy may stay in Prefect's database: %s", not_done)


def _logger() -> Any:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


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
        keep_prompt_out_of_prefect(flow_run, ports.sink.seal(request), ports.forget_replaced_parameters)
    ctx = RunContext(request=request, request_key=key, attempt=attempt, ports=ports, limits=limits, holder=holder)
    ctx.run_url = _run_url(flow_run)
    if flow_run is not None:
        ctx._progress = _ProgressSender(f"progress-{key}")
    ctx.report_progress(progress_started(attempt.number))
    ctx.start_heartbeat()
    return ctx
