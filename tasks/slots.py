"""A run's concurrency slots: Prefect's global concurrency limits, one per repository and one for all runs
(``promptship.domain.fairness``), taken by the flow around its active work — not a step.

``run_slots`` makes sure each limit exists with the configured size (created or updated, idempotent: the settings
are the truth), then waits — queued, for as long as it takes; never dropped, never failed — until Prefect grants
one slot of each at once, under a lease its background thread renews (``RunLimits.slot_lease_s``: a run that
crashed gives its slots back when the lease runs out). ``RunSlots.release`` gives them back early: a run does so
before it suspends (``tasks/waiting.py``), so a run waiting for CI or a merge without a process holds no slot; its
resume runs the flow again from the start and so waits for its slots again before it goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from promptship.domain.fairness import SlotLimit, slots_for
from promptship.domain.limits import RunLimits


class RunSlots:
    """The slots one flow run holds (none when no limit is set); ``release`` gives them back, once (closing the
    stack that holds them: a second close finds it empty)."""

    def __init__(self, stack: ExitStack | None = None):
        self._stack = stack or ExitStack()

    def release(self) -> None:
        """Give the slots back now (before a suspension); leaving ``run_slots`` then gives back nothing more."""
        self._stack.close()


def ensure_limits(client: Any, wanted: tuple[SlotLimit, ...]) -> None:
    """Create each limit, or set its size to the configured one (Prefect's upsert; a run that created it at the
    same moment makes the create fail with 409, after which the limit exists: read again and update)."""
    from prefect.exceptions import ObjectAlreadyExists

    for slot in wanted:
        try:
            client.upsert_global_concurrency_limit_by_name(slot.name, slot.limit)
        except ObjectAlreadyExists:
            client.upsert_global_concurrency_limit_by_name(slot.name, slot.limit)


@contextmanager
def run_slots(limits: RunLimits, repository: str, flow_run_id: Any | None) -> Iterator[RunSlots]:
    """Hold one slot of each configured limit (``promptship.domain.fairness.slots_for``) for the block, waiting
    for them first; yields the ``RunSlots`` to release early. Nothing is asked of Prefect when no limit is set."""
    wanted = slots_for(limits, repository)
    if not wanted:
        yield RunSlots()
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        ensure_limits(client, wanted)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id is not None else None
    with ExitStack() as stack:
        stack.enter_context(
            concurrency(
                [s.name for s in wanted],
                occupy=1,
                timeout_seconds=None,  # queued: wait as long as it takes
                lease_duration=limits.slot_lease_s,
                strict=True,  # the limits were just ensured: a missing one is a misconfiguration, said at once
                holder=holder,
                # a Prefect hiccup while renewing must not kill a run in the middle of a merge or a rollout
                raise_on_lease_renewal_failure=False,
            )
        )
        slots = RunSlots(stack.pop_all())
        try:
            yield slots
        finally:
            slots.release()
