"""What every step task shares: cache keys by run key, the retry condition, and step records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from promptship.domain.report import StepRecord
from promptship.domain.results import Usage
from promptship.errors import is_retryable


def now() -> datetime:
    return datetime.now(UTC)


def keyed(step: str, *extra: str) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """A cache key of ``<run key>:<step>[:<param>…]`` — the same for every run of the same request.

    ``extra`` names parameters whose values take part in the key (e.g. the round of a repair).
    """

    def key(_ctx: TaskRunContext, params: dict[str, Any]) -> str:
        parts = [params["request"].run_key, step]
        parts += [str(params.get(name)) for name in extra]
        return ":".join(parts)

    return key


def retry_if_retryable(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed with a retryable ServiceError (5xx, timeout, rate limit)."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises its exception here
        return is_retryable(exc)
    return False


def step_record(
    run_key: str,
    step: str,
    started_at: datetime,
    verdict: str,
    *,
    model: str | None = None,
    mode: str | None = None,
    reason: str | None = None,
    usage: Usage | None = None,
    error: str | None = None,
    **detail: str | int | float | bool | None,
) -> StepRecord:
    usage = usage or Usage()
    return StepRecord(
        run_key=run_key,
        step=step,
        started_at=started_at,
        ended_at=now(),
        verdict=verdict,
        model=model,
        mode=mode,
        route_reason=reason,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        cost_missing=usage.cost_missing,
        error=error,
        detail=detail,
    )


def durable_task(name: str, cache_key_fn: Callable[[TaskRunContext, dict[str, Any]], str], *, retries: int = 3):
    """A step task: result persisted and cached by ``cache_key_fn``; retried only on retryable errors."""
    return task(
        name=name,
        cache_key_fn=cache_key_fn,
        persist_result=True,
        retries=retries,
        retry_delay_seconds=[1.0, 3.0, 9.0][: max(retries, 1)],
        retry_condition_fn=retry_if_retryable,
    )
