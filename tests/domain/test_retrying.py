"""The one Retry-After reader and backoff of promptship (domain.retrying): tables, no doubles."""

from __future__ import annotations

import pickle

import pytest

from promptship.domain.retrying import after_attempts, backoff_delay, retry_after_s
from promptship.errors import AgentError, ClusterError, CodeHostError, LLMError, ServiceError, is_retryable

NOW = 60.0  # seconds after the epoch: "Thu, 01 Jan 1970 00:01:40 GMT" is 40 s later


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # (moved from tests/github/test_ci_domain.py, unchanged)
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, 40.0),  # an HTTP date, 100 s after the epoch
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "90"}, 30.0),
        ({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "90"}, None),
        ({}, None),
        # seconds
        ({"RETRY-AFTER": " 12 "}, 12.0),
        ({"Retry-After": "1.5"}, 1.5),
        # HTTP-dates: the other two formats RFC 9110 still accepts, and one in the past
        ({"Retry-After": "Thursday, 01-Jan-70 00:01:40 GMT"}, 40.0),
        ({"Retry-After": "Thu Jan  1 00:01:40 1970"}, 40.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:00:10 GMT"}, 0.0),
        # garbage: the service said to wait, not how long → the default
        ({"Retry-After": "soon"}, 60.0),
        ({"Retry-After": ""}, 60.0),
        ({"Retry-After": "-5"}, 60.0),
        ({"Retry-After": "nan"}, 60.0),
        ({"Retry-After": "inf"}, 60.0),
        ({"Retry-After": "Thu, 99 Foo 1970 25:61:00 GMT"}, 60.0),
        # OpenAI's milliseconds win over the seconds; garbage milliseconds fall back to Retry-After
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        # rate-limit resets: epoch seconds (GitHub), epoch milliseconds (OpenRouter), past, garbage
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "90000"}, 90000.0 - NOW),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000000"}, 1_700_000_000.0 - NOW),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "30"}, 0.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "tomorrow"}, None),
        ({"x-ratelimit-remaining": "0"}, None),
        # Retry-After wins over a reset
        ({"Retry-After": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "90"}, 5.0),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers, now_epoch=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("headers", "default", "expected"),
    [
        ({"Retry-After": "soon"}, None, None),
        ({"Retry-After": "soon"}, 5.0, 5.0),
        ({"Retry-After": "3"}, None, 3.0),
        ({}, 5.0, None),  # no header: nothing asked, whatever the default
    ],
)
def test_the_default_only_stands_in_for_an_unreadable_retry_after(
    headers: dict[str, str], default: float | None, expected: float | None
) -> None:
    assert retry_after_s(headers, now_epoch=NOW, default_s=default) == expected


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (1, None, 0.5),
        (2, None, 1.0),
        (3, None, 2.0),
        (4, None, 4.0),
        (6, None, 10.0),  # capped
        (1, 3.0, 3.0),  # never sooner than the service asked
        (3, 1.0, 2.0),  # nor sooner than the plan
        (1, 0.0, 0.5),
        (1, 60.0, 10.0),  # never longer than the cap (the caller stops retrying instead)
    ],
)
def test_backoff_delay(attempt: int, retry_after: float | None, expected: float) -> None:
    assert backoff_delay(attempt, base_s=0.5, cap_s=10.0, retry_after_s=retry_after) == expected


def test_backoff_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, base_s=1.0, cap_s=10.0)


@pytest.mark.parametrize("cls", [LLMError, AgentError, CodeHostError, ClusterError])
def test_after_attempts_makes_the_error_final_and_keeps_what_the_step_layer_reads(cls: type[ServiceError]) -> None:
    error = cls("gpt-4o: RateLimitError (HTTP 429): slow down", retryable=True, status=429, retry_after_s=7.0)
    final = after_attempts(error, 4)
    assert type(final) is cls and not is_retryable(final)
    assert (final.status, final.retry_after_s) == (429, 7.0)
    assert str(final) == "gpt-4o: RateLimitError (HTTP 429): slow down (after 4 attempts)"
    again = pickle.loads(pickle.dumps(final))  # Prefect persists exceptions
    assert (type(again), str(again), again.retryable, again.status) == (cls, str(final), False, 429)


def test_one_attempt_is_not_a_retry() -> None:
    error = LLMError("503", retryable=True, status=503)
    assert after_attempts(error, 1) is error and is_retryable(error)
