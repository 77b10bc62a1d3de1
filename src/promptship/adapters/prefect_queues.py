"""Fair under load with Prefect's own machinery: one work queue per repository, the work pool as the global limit
(``promptship.domain.fairness``).

``apply_run_limits`` makes the Prefect objects say what the settings say (idempotent; the settings are the truth):
the work pool's concurrency limit is the global limit and the repository's work queue in that pool (created
when missing) has the per-repository limit (``PROMPTSHIP_RUNS__*``); it returns the queue a run of the repository goes
to. ``submit_dev_cycle`` creates a run of a deployment in that queue — what every starter of promptship does
(the webhook receiver's ``run_deployment`` starter; a run that arrived in its deployment's own queue moves itself
there first: ``tasks/queues.py``).

Prefect's server then hands a worker only the scheduled runs that fit: a queue's or a pool's limit counts its
runs that are Pending or Running (``prefect/server/database/sql/*/get-runs-from-worker-queues.sql.jinja``), so a
run over a limit stays Scheduled (Late, once its time has passed) with no process, a suspended (Paused) run
counts against nothing, and a run the worker saw crash (Crashed) gives its place back at once.

A limit of 0 means "promptship sets none": a pool limit set by hand in Prefect is left as it is; without a
per-repository limit, runs stay in their deployment's queue.

Prefect names may not contain '/', so the queue is ``promptship-repo:<owner>:<name>``. Prefect gives the queues
of a pool distinct priorities (a new queue comes last) and hands the pool's free places out in priority order:
with a global limit smaller than the busy repositories' per-repository limits together, a repository whose queue
is older goes first (docs/PIPELINE.md "Fair under load").
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from promptship.domain.fairness import moved_from_tag, repository_queue_name
from promptship.errors import ServiceError


def _prefect_error(what: str, exc: Exception) -> ServiceError:
    return ServiceError(f"prefect: {what} failed: {type(exc).__name__}: {exc}", retryable=True)


def apply_pool_limit(client: Any, pool: str, global_limit: int) -> None:
    """Set ``pool``'s concurrency limit to ``global_limit`` (nothing when it is 0 or already that)."""
    from prefect.client.schemas.actions import WorkPoolUpdate

    if global_limit > 0 and client.read_work_pool(pool).concurrency_limit != global_limit:
        client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=global_limit))


def apply_run_limits(
    client: Any, pool: str, repository: str, *, per_repository_limit: int, global_limit: int
) -> str | None:
    """Set ``pool``'s concurrency limit to the global limit and make ``repository``'s work queue in it (with the
    per-repository limit); the queue's name, or None when no per-repository limit is set (the run stays in its
    deployment's queue). ``client``: Prefect's sync client."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        apply_pool_limit(client, pool, global_limit)
        if per_repository_limit <= 0:
            return None
        name = repository_queue_name(repository)
        try:
            queue = client.read_work_queue_by_name(name, work_pool_name=pool)
        except ObjectNotFound:
            try:
                client.create_work_queue(
                    name,
                    work_pool_name=pool,
                    concurrency_limit=per_repository_limit,
                    description=f"promptship: the runs of {repository.lower()} (PROMPTSHIP_RUNS__PER_REPOSITORY_LIMIT)",
                )
                return name
            except ObjectAlreadyExists:  # another starter created it at the same moment: it exists now
                queue = client.read_work_queue_by_name(name, work_pool_name=pool)
        if queue.concurrency_limit != per_repository_limit:
            client.update_work_queue(queue.id, concurrency_limit=per_repository_limit)
        return name
    except (ObjectNotFound, ObjectAlreadyExists) as exc:
        raise _prefect_error(f"setting the run limits of work pool {pool!r}", exc) from exc


def submit_dev_cycle(
    client: Any,
    deployment_id: UUID,
    work_pool_name: str | None,
    parameters: dict[str, Any],
    repository: str,
    *,
    per_repository_limit: int = 0,
    global_limit: int = 0,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
) -> UUID:
    """Create a scheduled run of the deployment (whose work pool is ``work_pool_name``, as the caller read it) in
    ``repository``'s work queue (``apply_run_limits``; the deployment's own queue when no per-repository limit is
    set) and return its id. With ``idempotency_key``, a second call returns the same run."""
    queue = None
    if work_pool_name and (per_repository_limit > 0 or global_limit > 0):
        queue = apply_run_limits(
            client,
            work_pool_name,
            repository,
            per_repository_limit=per_repository_limit,
            global_limit=global_limit,
        )
    run = client.create_flow_run_from_deployment(
        deployment_id,
        parameters=parameters,
        idempotency_key=idempotency_key,
        tags=tags,
        work_queue_name=queue,
    )
    return run.id


def moved_run(client: Any, flow_run_id: UUID) -> UUID | None:
    """The run that ``flow_run_id`` moved to its repository's work queue (``tasks/queues.py``), if it moved: what
    a caller that started a run in the deployment's own queue follows to see the work done."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[moved_from_tag(flow_run_id)])), limit=1
    )
    return runs[0].id if runs else None
