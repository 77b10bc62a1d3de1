"""CI wake-ups: the webhook receiver tells waiting CI waits that something about a commit changed.

A CI wait (the ``GitHubHost`` adapter) uses it like this, so an event between two looks is never missed::

    seen = wakeups.generation(repository, sha)
    while True:
        result = look_at_checks()                  # one (conditional) request to the code host
        if final(result): return result
        seen = wakeups.wait(repository, sha, after=seen, timeout_s=min(remaining, fallback_poll_s))

``InProcessCIWakeups`` serves one process (tests, the demo, a receiver started inside the worker);
``promptship.store.webhooks.StoreCIWakeups`` serves a receiver and workers in different processes that share
the store. Repository names compare case-insensitively.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from promptship.domain.webhooks import CISignal


@runtime_checkable
class CIWakeups(Protocol):
    """Where CI events of a commit are announced and waited for."""

    def notify(self, signal: CISignal) -> None:
        """Announce a CI event of ``signal.sha`` (check_suite, check_run or status)."""
        ...

    def generation(self, repository: str, sha: str) -> int:
        """How many CI events of ``sha`` have been announced so far."""
        ...

    def wait(self, repository: str, sha: str, *, after: int, timeout_s: float) -> int:
        """Block until more than ``after`` events of ``sha`` were announced or ``timeout_s`` passed; return
        the generation then (equal to ``after`` on timeout)."""
        ...


def _key(repository: str, sha: str) -> tuple[str, str]:
    return repository.lower(), sha.lower()


class InProcessCIWakeups:
    """CI wake-ups inside one process (a condition variable per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._counts: dict[tuple[str, str], int] = {}
        self.signals: list[CISignal] = []

    def notify(self, signal: CISignal) -> None:
        with self._cond:
            key = _key(signal.repository, signal.sha)
            self._counts[key] = self._counts.get(key, 0) + 1
            self.signals.append(signal)
            self._cond.notify_all()

    def generation(self, repository: str, sha: str) -> int:
        with self._cond:
            return self._counts.get(_key(repository, sha), 0)

    def wait(self, repository: str, sha: str, *, after: int, timeout_s: float) -> int:
        key = _key(repository, sha)
        deadline = self._clock() + max(0.0, timeout_s)
        with self._cond:
            while self._counts.get(key, 0) <= after:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._counts.get(key, 0)
