"""The one step mechanism: ``@step`` turns a step body into a Prefect task that times it, records it, caches it
and retries it.

A body takes the ``RunContext`` and its inputs, calls ports and domain functions, and returns ``Done``: its
typed result, verdict and facts. The wrapper

- times the body and builds the ``StepRecord`` (request key, attempt, label, name, round, facts), writes it
  once to the sink, and returns the typed result alone;
- caches the result by attempt (id and start) + step label (+ named inputs) + the *code version* of the
  step — a digest of the step's module, the domain, the ports and the module of every port object it uses —
  with an expiry (``RunLimits.step_cache_days``): a resumed attempt takes finished steps from the cache;
  another attempt, an upgraded step or an expired result runs the body again (which first finds its side
  effect by request key);
- retries a failed body only for a ``ServiceError`` whose ``retryable`` is true (adapters mark errors they
  already retried themselves as not retryable), up to 3 times, waiting at least the error's ``retry_after_s``;
- moves the run's progress artifact to the step's stage before the step starts (``RunContext.report_progress``,
  ``promptship.domain.progress``) — also for a step the cache answers, so a resumed run shows where it is.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from prefect import task
from prefect.context import TaskRunContext

from promptship.domain.progress import progress_at
from promptship.domain.report import StepFacts, StepName, StepRecord
from promptship.domain.results import Usage
from promptship.errors import is_retryable
from promptship.faults import after_step, before_step, kill_point
from tasks.context import RunContext

P = ParamSpec("P")
T = TypeVar("T")

RETRY_DELAYS_S = (1.0, 3.0, 9.0)
MAX_RETRY_AFTER_S = 120.0


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a step body returns: its typed result and what its record says about it."""

    value: T
    verdict: str
    facts: StepFacts = field(default_factory=StepFacts)
    model: str | None = None
    mode: str | None = None
    reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    detail: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)


Label = Callable[[Mapping[str, Any]], tuple[str, int | None]]


def plain(name: str) -> Label:
    return lambda _params: (name, None)


def by_round(name: str, param: str = "round_number", *, first_plain: bool = False) -> Label:
    """``name#N`` for round N (``name`` alone for round 1 when ``first_plain``)."""

    def label(params: Mapping[str, Any]) -> tuple[str, int | None]:
        number = int(params.get(param) or 1)
        return (name if first_plain and number == 1 else f"{name}#{number}"), number

    return label


# -- code version ------------------------------------------------------------------------------------------
_digests: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    found = _digests.get(key)
    if found is None:
        found = _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _module_files(modules: Iterable[str]) -> list[Path]:
    files: set[Path] = set()
    for name in modules:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py"):
            files.add(Path(file).resolve())
    return sorted(files)


def _package_modules(package: str) -> list[str]:
    module = sys.modules.get(package)
    paths = getattr(module, "__path__", None)
    if not paths:
        return []
    out = []
    for directory in paths:
        for file in Path(directory).glob("*.py"):
            name = f"{package}.{file.stem}" if file.stem != "__init__" else package
            if name not in sys.modules:
                __import__(name)
            out.append(name)
    return out


def code_version(body: Callable[..., Any], port_objects: Iterable[object]) -> str:
    """A digest of the code a step runs: its own module, the domain, the ports, the errors, and the module of
    each port object it uses (an adapter, a stand-in or a fake). Any edit to one of them changes it."""
    import promptship.domain  # noqa: F401  (its package path is walked below)

    modules = {body.__module__, "promptship.ports", "promptship.errors", "tasks._step", "tasks.context"}
    modules.update(_package_modules("promptship.domain"))
    for obj in port_objects:
        if obj is not None:
            modules.update(c.__module__ for c in type(obj).__mro__ if c.__module__ not in ("builtins", "typing"))
    digest = hashlib.sha256()
    for path in _module_files(modules):
        digest.update(path.name.encode() + _file_digest(path).encode())
    return digest.hexdigest()[:16]


# -- retries -----------------------------------------------------------------------------------------------
def retry_if_retryable(_task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed with a retryable ServiceError (5xx, timeout, rate limit); wait at least
    the error's Retry-After before the retry (Prefect then adds its own fixed delay)."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises its exception here
        if not is_retryable(exc):
            return False
        wanted = min(float(getattr(exc, "retry_after_s", None) or 0.0), MAX_RETRY_AFTER_S)
        done = max(int(getattr(task_run, "run_count", 1) or 1), 1)
        planned = RETRY_DELAYS_S[min(done - 1, len(RETRY_DELAYS_S) - 1)]
        if wanted > planned:
            time.sleep(wanted - planned)
        return True
    return False


# -- the decorator -----------------------------------------------------------------------------------------
def step(
    name: StepName,
    *,
    uses: tuple[str, ...],
    label: Label | None = None,
    key: tuple[str, ...] = (),
    retries: int = len(RETRY_DELAYS_S),
) -> Callable[[Callable[Concatenate[RunContext, P], Done[T]]], Callable[Concatenate[RunContext, P], T]]:
    """Make ``body`` a step (see the module docstring). ``uses``: the ports it calls ("deployer" for the
    request's cluster or GitOps deployer); ``key``: names of inputs that take part in the cache key."""
    labeller = label or plain(name)

    def decorate(body: Callable[Concatenate[RunContext, P], Done[T]]) -> Callable[Concatenate[RunContext, P], T]:
        signature = inspect.signature(body)

        def ports_of(ctx: RunContext) -> list[object]:
            return [ctx.deployer() if p == "deployer" else getattr(ctx.ports, p) for p in uses]

        def cache_key(_task_ctx: TaskRunContext, params: dict[str, Any]) -> str:
            ctx: RunContext = params["ctx"]
            step_label, _ = labeller(params)
            # the attempt's start makes the key unique to this store's attempt: another store (a test, a reset
            # database) reuses ids like KEY-a1, and Prefect's result storage outlives stores
            born = ctx.attempt.started_at.astimezone(UTC).isoformat()
            parts = [ctx.attempt.id, born, step_label, *(str(params.get(n)) for n in key)]
            parts.append(code_version(body, ports_of(ctx)))
            return ":".join(parts)

        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> Any:
            params = signature.bind(*args, **kwargs)
            params.apply_defaults()
            ctx: RunContext = params.arguments["ctx"]
            step_label, number = labeller(params.arguments)
            started = now()
            ctx.renew()
            kill_point(before_step(step_label))
            done = body(*args, **kwargs)
            usage = done.usage or Usage()
            ctx.ports.sink.record_step(
                StepRecord(
                    run_key=ctx.request_key,
                    attempt_id=ctx.attempt.id,
                    step=step_label,
                    name=name,
                    round=number,
                    started_at=started,
                    ended_at=now(),
                    verdict=done.verdict,
                    model=done.model,
                    mode=done.mode,
                    route_reason=done.reason,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost_usd=usage.cost_usd,
                    cost_missing=usage.cost_missing,
                    error=done.error,
                    facts=done.facts,
                    detail=dict(done.detail),
                )
            )
            kill_point(after_step(step_label))
            return done.value

        prefect_task = task(
            name=name,
            cache_key_fn=cache_key,
            persist_result=True,
            retries=retries,
            retry_delay_seconds=list(RETRY_DELAYS_S[: max(retries, 1)]),
            retry_condition_fn=retry_if_retryable,
        )(run)

        @functools.wraps(body)
        def call(ctx: RunContext, *args: P.args, **kwargs: P.kwargs) -> T:
            params = signature.bind(ctx, *args, **kwargs)
            params.apply_defaults()
            ctx.report_progress(progress_at(name, *labeller(params.arguments)))
            expiring = prefect_task.with_options(cache_expiration=timedelta(days=ctx.limits.step_cache_days))
            return expiring(ctx, *args, **kwargs)  # type: ignore[return-value]

        call.task = prefect_task  # type: ignore[attr-defined]
        return call

    return decorate
