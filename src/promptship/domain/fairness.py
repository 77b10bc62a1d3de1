"""Fair under load: the work queue a run of each repository goes to, and how many runs of each repository are
queued, running or waiting — pure; Prefect's work queues and work pool enforce the limits
(``promptship.adapters.prefect_queues``) and ``/metrics`` exports the counts (``promptship.servers.metrics``).

Each repository has a work queue of its own in the deployment's work pool: its concurrency limit is the
per-repository limit, the work pool's concurrency limit is the global one. Prefect's server hands a worker only
the scheduled runs that fit both limits, counting the runs of a queue (of the pool) that are Pending or Running.
So a queued run stays Scheduled (or Late) on the server, with no process; a suspended run (Paused) counts against
neither limit, and its resume makes it Scheduled again in its own queue, where it waits for room like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

RunState = Literal["queued", "running", "waiting"]
RUN_STATES: tuple[RunState, ...] = ("queued", "running", "waiting")

REPOSITORY_QUEUE_PREFIX = "promptship-repo:"

# Prefect's state types, as the census sees them: Scheduled (Late, AwaitingRetry, Resuming are Scheduled too) is
# queued: no process yet; Pending, Running and Cancelling count against the queue's and the pool's limits (Prefect
# server ``get-runs-from-worker-queues``: Pending and Running) and hold a process; Paused (Suspended) waits without.
_CENSUS_STATE: dict[str, RunState] = {
    "SCHEDULED": "queued",
    "PENDING": "running",
    "RUNNING": "running",
    "CANCELLING": "running",
    "PAUSED": "waiting",
}


def repository_queue_name(repository: str) -> str:
    """The work queue of one repository: ``promptship-repo:<owner>:<name>`` (Prefect names may not contain '/';
    GitHub names never contain ':', so the name maps back to one repository). Case-folded, like the request key:
    ``Demo/App`` and ``demo/app`` are one repository."""
    owner, _, name = repository.lower().partition("/")
    return f"{REPOSITORY_QUEUE_PREFIX}{owner}:{name}"


def repository_of_queue(queue_name: str) -> str | None:
    """The repository a work queue belongs to (None for any other queue)."""
    if not queue_name.startswith(REPOSITORY_QUEUE_PREFIX):
        return None
    owner, _, name = queue_name.removeprefix(REPOSITORY_QUEUE_PREFIX).partition(":")
    return f"{owner}/{name}" if owner and name else None


def moved_from_tag(flow_run_id: object) -> str:
    """The tag of the run a run moved to its repository's queue (``tasks/queues.py``): the id it moved from."""
    return f"promptship-moved-from:{flow_run_id}"


def census_state(state_type: str) -> RunState | None:
    """What a run in Prefect's state type ``state_type`` is for the census (None: it has ended)."""
    return _CENSUS_STATE.get(state_type.upper())


@dataclass(frozen=True)
class RunSeen:
    """A dev-cycle run that has not ended, as Prefect shows it: its repository and its state type."""

    repository: str
    state_type: str


def run_census(runs: Iterable[RunSeen]) -> dict[tuple[str, RunState], int]:
    """Queued, running and waiting runs per repository (every repository seen gets all three states; runs that
    have ended are not counted)."""
    counts: dict[str, dict[RunState, int]] = {}
    for run in runs:
        state = census_state(run.state_type)
        if state is None:
            continue
        of = counts.setdefault(run.repository.lower(), dict.fromkeys(RUN_STATES, 0))
        of[state] += 1
    return {(repository, state): n for repository in sorted(counts) for state, n in counts[repository].items()}
