"""promptship's process worker: Prefect's ``ProcessWorker`` that reports a crash once, not a second time onto a
retry (``promptship worker``; the campaign, ``docs/RELIABILITY.md`` finding 3).

Prefect 3.9.1's process worker reports a crashed flow-run process twice. The runner inside it
(``prefect.runner._flow_run_executor``) proposes ``Crashed`` as soon as the process exits; then it runs the
flow's on-crashed hooks (which loads the flow: seconds to tens of seconds) and only then does
``BaseWorker._submit_run`` see the exit code and propose ``Crashed`` again — ``ProcessWorker.run`` drops the
executor's ``crash_unreported`` answer that ``prefect flow-run execute`` honours. If a person (or an automation)
retried the run in between, that second, stale proposal lands on the *retry*: Pending or Running → Crashed, which
also releases the retry's deployment concurrency lease, and the retried process then stops itself at its next
lease renewal ("Concurrency lease renewal failed - slots are no longer reserved"). Without a concurrency limit the
retry is still marked Crashed while it runs. So under the deployment's ``concurrency_limit`` a Prefect retry of a
crashed run was lost about one time in three (the campaign).

The fix keeps the report the runner could not make: the worker's report is skipped only when a ``Crashed`` state of
this flow run was recorded after the state the worker picked the run up in (this submission's crash is known).
The worker's identifying labels are written best-effort. Prefect 3.9.1's worker writes them onto every run it
submits (``PATCH /flow_runs/{id}/labels``, ``prefect.worker.name`` and the pool's; nothing in Prefect reads them back,
they are for the UI) and a failure there ends the run ``Crashed`` ("Failed to submit flow run to infrastructure").
On SQLite that write is the one most often refused under a burst: the server reads the run, then updates it, in a
deferred transaction, and SQLite refuses to upgrade a read transaction to a write one once another connection has
committed since (``SQLITE_BUSY`` at once, the busy timeout does not apply; the server answers 503). Measured
(docs/BENCH.md "50 at once"): 50 runs submitted at once, 3 of them crashed this way after the client's 6 attempts
over 62 s. This worker tries the write 3 times (``LABEL_RETRIES``), then logs a warning and starts the run without
the labels instead.

Nothing else of Prefect's worker changes; the dispatch key is our own so Prefect's registry of worker types keeps
its own ``process`` worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.schemas.objects import StateType
from prefect.exceptions import PrefectHTTPStatusError
from prefect.workers.process import ProcessWorker

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

WORKER_KEY = "promptship-process"
LABEL_RETRIES = 2  # retries of the best-effort label write (2 + 4 s of backoff), whatever PREFECT_CLIENT_MAX_RETRIES


def picked_up_at(flow_run: FlowRun) -> datetime | None:
    """When the worker took the run: the timestamp of the state it was read in (Scheduled, AwaitingRetry…)."""
    return flow_run.state.timestamp if flow_run.state is not None else None


async def crash_already_recorded(client: PrefectClient, flow_run: FlowRun) -> bool:
    """A ``Crashed`` state of ``flow_run`` newer than the state this submission picked the run up in."""
    since = picked_up_at(flow_run)
    states = await client.read_flow_run_states(flow_run.id)
    return any(s.type == StateType.CRASHED and (since is None or s.timestamp > since) for s in states)


class PromptshipProcessWorker(ProcessWorker):
    """``ProcessWorker`` for the ``process`` pools (``local-process``), without the stale second crash report."""

    @classmethod
    def __dispatch_key__(cls) -> str:
        return WORKER_KEY

    async def _propose_crashed_state(
        self, flow_run: FlowRun, message: str, client: PrefectClient | None = None
    ) -> None:
        api: Any = client or self.client
        if await crash_already_recorded(api, flow_run):
            self.get_flow_run_logger(flow_run).info(
                "The crash of flow run %s is already recorded: not reporting it again (the run may have been "
                "retried since)",
                flow_run.id,
            )
            return
        await super()._propose_crashed_state(flow_run, message, client=client)

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        try:
            # a few attempts only: the run waits for this write, and on a busy SQLite server every attempt of the
            # client's full retry budget can be refused (measured: a run held 8.5 min by 8 retries)
            with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: LABEL_RETRIES}):
                await super()._give_worker_labels_to_flow_run(flow_run_id)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
            self._logger.warning(
                "Flow run %s starts without this worker's labels: the server answered 503 to every attempt to "
                "write them (a busy SQLite database; the labels only identify the worker in the UI)",
                flow_run_id,
            )


async def serve(pool: str, *, name: str | None = None, limit: int | None = None, run_once: bool = False) -> None:
    """Run the worker against the configured Prefect API until cancelled (``prefect worker start``'s loop)."""
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS

    worker = PromptshipProcessWorker(
        name=name,
        work_pool_name=pool,
        limit=limit,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    await worker.start(run_once=run_once, with_healthcheck=False)
