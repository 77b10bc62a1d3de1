"""Fair under load: which concurrency slots a run holds while it works, and how many runs of each repository are
queued, running or waiting — pure; Prefect's global concurrency limits enforce the slots (``tasks/slots.py``) and
``/metrics`` exports the counts (``promptship.servers.metrics``).

A run holds one slot of its repository's limit and one of the global limit (each only when set) from before it
opens its attempt until it ends — except while it is suspended (waiting for CI, a merge or an image without a
process): it gives its slots back before it suspends and takes them again when it resumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from promptship.domain.limits import RunLimits

RunState = Literal["queued", "running", "waiting"]
RUN_STATES: tuple[RunState, ...] = ("queued", "running", "waiting")

GLOBAL_LIMIT_NAME = "promptship-runs"
REPOSITORY_LIMIT_PREFIX = "promptship-repo:"


def repository_limit_name(repository: str) -> str:
    """The Prefect limit of one repository: ``promptship-repo:<owner>:<name>`` (Prefect names may not contain
    '/'; GitHub names never contain ':', so the name maps back to one repository). Case-folded, like the
    request key: ``Demo/App`` and ``demo/app`` are one repository."""
    owner, _, name = repository.lower().partition("/")
    return f"{REPOSITORY_LIMIT_PREFIX}{owner}:{name}"


def repository_of_limit(limit_name: str) -> str | None:
    """The repository a limit name belongs to (None for any other limit)."""
    if not limit_name.startswith(REPOSITORY_LIMIT_PREFIX):
        return None
    owner, _, name = limit_name.removeprefix(REPOSITORY_LIMIT_PREFIX).partition(":")
    return f"{owner}/{name}" if owner and name else None


@dataclass(frozen=True)
class SlotLimit:
    """One Prefect limit a run takes a slot of: its name and how many slots it has."""

    name: str
    limit: int


def slots_for(limits: RunLimits, repository: str) -> tuple[SlotLimit, ...]:
    """The limits a run of ``repository`` takes one slot of each (none when neither limit is set)."""
    out: list[SlotLimit] = []
    if limits.per_repository_limit > 0:
        out.append(SlotLimit(repository_limit_name(repository), limits.per_repository_limit))
    if limits.global_limit > 0:
        out.append(SlotLimit(GLOBAL_LIMIT_NAME, limits.global_limit))
    return tuple(out)


@dataclass(frozen=True)
class RunSeen:
    """A dev-cycle run that has not ended, as its orchestrator shows it: its repository, and ``suspended`` when
    it waits without a process (Prefect's Paused/Suspended)."""

    repository: str
    suspended: bool


def run_census(runs: Iterable[RunSeen], working: Mapping[str, int]) -> dict[tuple[str, RunState], int]:
    """Queued, running and waiting runs per repository (every repository seen gets all three states).

    ``working`` has the repositories that have a limit, with the slots held of it: that many of the repository's
    live runs are running; every other run that has not ended is queued — scheduled, pending, or started and
    waiting for a slot — unless it is suspended (waiting). A repository without a limit has nothing that tells a
    started run from a queued one: its live, unsuspended runs count as running."""
    live: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for run in runs:
        repository = run.repository.lower()
        bucket = waiting if run.suspended else live
        bucket[repository] = bucket.get(repository, 0) + 1
    held: dict[str, int] = {}
    for repository, n in working.items():
        held[repository.lower()] = held.get(repository.lower(), 0) + n
    out: dict[tuple[str, RunState], int] = {}
    for repository in sorted(set(live) | set(waiting)):
        alive = live.get(repository, 0)
        # a slot held by a run that already ended (crashed; its lease not out yet) is no live run's: at most alive
        running = min(held[repository], alive) if repository in held else alive
        out[(repository, "queued")] = alive - running
        out[(repository, "running")] = running
        out[(repository, "waiting")] = waiting.get(repository, 0)
    return out
