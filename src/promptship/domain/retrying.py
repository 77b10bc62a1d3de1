"""When to call a service again — pure functions, no sleeping.

The one place that reads how long a service asks us to wait (``Retry-After`` in seconds or as an HTTP-date,
OpenAI's ``retry-after-ms``, a rate-limit reset once the limit is exhausted) and how long to back off before
the next attempt. Adapters use it for their own retries and for their poll loops; the step layer for its
retries. Whoever sleeps does it on its own (injected) clock.

One retry policy per layer (docs/CONTRACTS.md, "Retries"): ``ServiceError.retryable`` means "the step layer
may try this whole call again". An adapter that retried an error itself raises the last one through
``after_attempts`` — not retryable, "after N attempts" in the message, ``status`` and ``retry_after_s`` kept —
so attempts never multiply across layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

from promptship.errors import ServiceError

E = TypeVar("E", bound=ServiceError)

# x-ratelimit-reset above this is in epoch milliseconds (OpenRouter), below it in epoch seconds (GitHub).
_EPOCH_MS_ABOVE = 1e11


def _seconds(value: str) -> float | None:
    """A non-negative, finite number of seconds, or None."""
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after_s(headers: Mapping[str, str], now_epoch: float, *, default_s: float | None = 60.0) -> float | None:
    """Seconds an answer asks us to wait before calling again, or None when it does not ask.

    - ``retry-after-ms: 1500`` → 1.5 (OpenAI-style APIs; preferred, it is the more precise);
    - ``Retry-After: 7`` → 7.0; ``Retry-After: <HTTP-date>`` → seconds from ``now_epoch`` until then (0 if past);
    - without either, ``x-ratelimit-remaining: 0`` with ``x-ratelimit-reset`` → seconds until the reset
      (epoch seconds as GitHub sends it, epoch milliseconds as OpenRouter does);
    - a Retry-After that is neither a number nor a date (garbage, negative) → ``default_s``: the service
      said to wait, not how long.

    Header names compare case-insensitively.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None and (ms := _seconds(millis)) is not None:
        return ms / 1000.0
    value = lowered.get("retry-after")
    if value is not None:
        seconds = _seconds(value)
        if seconds is not None:
            return seconds
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return default_s
        if when.tzinfo is None:  # asctime and "-0000" dates carry no zone; HTTP-dates are always GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now_epoch)
    if lowered.get("x-ratelimit-remaining", "").strip() == "0":
        reset = _seconds(lowered.get("x-ratelimit-reset", ""))
        if reset is not None:
            reset_epoch = reset / 1000.0 if reset > _EPOCH_MS_ABOVE else reset
            return max(0.0, reset_epoch - now_epoch)
    return None


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, retry_after_s: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first) before the next one:
    ``base_s`` doubling per attempt, never shorter than the service's ``retry_after_s``, never longer than
    ``cap_s``. (A caller that must not call sooner than a Retry-After above its cap stops retrying instead.)"""
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more (the attempt that just failed), got {attempt}")
    planned = base_s * 2.0 ** (attempt - 1)
    return max(0.0, min(cap_s, max(planned, retry_after_s or 0.0)))


def after_attempts(error: E, attempts: int) -> E:
    """The final error of an adapter that made ``attempts`` attempts itself: same class, ``status`` and
    ``retry_after_s``, not retryable, and the message says so. One attempt: ``error`` unchanged (nothing was
    retried, so the step layer may still retry it)."""
    if attempts <= 1:
        return error
    return type(error)(
        f"{error} (after {attempts} attempts)",
        retryable=False,
        status=error.status,
        retry_after_s=error.retry_after_s,
    )
