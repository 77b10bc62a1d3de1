"""A run in the wrong work queue moves to its repository's (``promptship.adapters.prefect_queues``) — not a step.

The webhook receiver's ``run_deployment`` starter puts a run into its repository's work queue at once. Runs that
Prefect creates itself cannot be put there: a schedule's, the UI form's and the ``github-event`` trigger's runs
land in their deployment's own queue (Prefect's automation action has no work-queue field). Such a run, once its
process starts, creates its run in the right queue (the same deployment and parameters, an idempotency key made
of its own id: a retried move makes no second run; tagged ``promptship-moved-from:<its id>``, which
``promptship.adapters.prefect_queues.moved_run`` follows) and ends Completed with a message naming the new run. It held
a process for that moment only; queued, the new run holds none.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from promptship.adapters.prefect_queues import submit_dev_cycle
from promptship.domain.fairness import moved_from_tag, repository_queue_name
from promptship.domain.limits import RunLimits
from promptship.domain.request import DevRequest
from tasks.context import keep_prompt_out_of_prefect


def move_to_repository_queue(
    limits: RunLimits,
    request: DevRequest,
    seal: Callable[[DevRequest], DevRequest],
    forget_old_bytes: Callable[[], str | None],
) -> UUID | None:
    """When this flow run is a deployment's run outside ``request``'s repository's work queue and a
    per-repository limit is set, create its run in that queue and return the new run's id (this run then ends).
    None: it belongs where it is — in its queue already, no per-repository limit, or not a deployment's run
    (``promptship run``, a resume).

    A run the UI form started holds the prompt itself as its parameter: ``seal`` keeps it in the store, and both
    this run's parameter and the moved run's are the sealed form (never the prompt a second time in Prefect), and
    ``forget_old_bytes`` drops the first copy from Prefect's database where it can (``keep_prompt_out_of_prefect``)."""
    if limits.per_repository_limit <= 0:
        return None
    repository = request.repository
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(UUID(flow_run.id))
        if me.deployment_id is None or me.work_pool_name is None:  # no pool, no queues: nothing to move to
            return None
        if me.work_queue_name == repository_queue_name(repository):
            return None
        sealed = seal(request)
        keep_prompt_out_of_prefect(me, sealed, forget_old_bytes)
        return submit_dev_cycle(
            client,
            me.deployment_id,
            me.work_pool_name,
            {**me.parameters, "request": sealed.model_dump(mode="json")},
            repository,
            per_repository_limit=limits.per_repository_limit,
            global_limit=limits.global_limit,
            idempotency_key=f"promptship-queue-{me.id}",
            tags=[*me.tags, moved_from_tag(me.id)],
        )
