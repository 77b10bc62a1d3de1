"""Prefect's retry of a crashed deployment run, under the deployment's concurrency limit (docs/RELIABILITY.md,
finding 3), on a real Prefect server.

The run's states are driven the way they go in the campaign: the worker picks the run up, it runs (a deployment
concurrency lease), its process is SIGKILLed and Prefect's runner reports it Crashed, a person retries it
(AwaitingRetry), the worker starts it again (a new lease) — and only then does the worker that ran the killed
process report its exit code.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.reliability]


async def _retried_run(client: Any) -> tuple[Any, uuid.UUID]:
    """A deployment run (concurrency limit 1) killed, reported Crashed, retried and running again; returns the
    flow run as the worker that ran the killed process read it, and the id of the retry's concurrency lease."""
    from prefect import flow
    from prefect.states import AwaitingRetry, Crashed, Pending, Running

    @flow(name=f"retried-{uuid.uuid4().hex[:8]}")
    def retried() -> None:
        return None

    flow_id = await client.create_flow(retried)
    deployment_id = await client.create_deployment(flow_id=flow_id, name="retried", concurrency_limit=1)
    run = await client.create_flow_run_from_deployment(deployment_id)
    picked = await client.read_flow_run(run.id)  # what the first submission holds
    await client.set_flow_run_state(run.id, Pending())
    await client.set_flow_run_state(run.id, Running())
    crashed = await client.set_flow_run_state(run.id, Crashed(message="Process exited with status code: -9"))
    assert crashed.state is not None and crashed.state.type.value == "CRASHED"
    await client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
    await client.set_flow_run_state(run.id, Pending())
    await client.set_flow_run_state(run.id, Running())
    running = await client.read_flow_run(run.id)
    lease_id = running.state.state_details.deployment_concurrency_lease_id
    assert running.state.type.value == "RUNNING" and lease_id is not None
    return picked, lease_id


async def test_the_killed_process_s_late_crash_report_leaves_the_retry_running_with_its_slot(
    prefect_harness: None,
) -> None:
    from prefect.client.orchestration import get_client

    from promptship.prefect_worker import PromptshipProcessWorker

    async with get_client() as client:
        picked, lease_id = await _retried_run(client)
        async with PromptshipProcessWorker(work_pool_name=f"pool-{uuid.uuid4().hex[:8]}") as worker:
            await worker._propose_crashed_state(picked, "Flow run infrastructure exited with non-zero status code -9.")
        after = await client.read_flow_run(picked.id)
        assert after.state is not None and after.state.type.value == "RUNNING"
        await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=60)  # still reserved: no 410


async def test_prefect_s_own_process_worker_crashes_the_retry_and_revokes_its_slot(prefect_harness: None) -> None:
    """The defect itself, with Prefect 3.9.1's worker: if this starts failing, Prefect fixed it and
    ``promptship worker`` can go."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        picked, lease_id = await _retried_run(client)
        async with ProcessWorker(work_pool_name=f"pool-{uuid.uuid4().hex[:8]}") as worker:
            await worker._propose_crashed_state(picked, "Flow run infrastructure exited with non-zero status code -9.")
        after = await client.read_flow_run(picked.id)
        assert after.state is not None and after.state.type.value == "CRASHED"
        with pytest.raises(PrefectHTTPStatusError, match="410"):
            await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=60)


async def test_a_crash_the_runner_could_not_report_is_still_reported_by_the_worker(prefect_harness: None) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    from promptship.prefect_worker import PromptshipProcessWorker

    @flow(name=f"unreported-{uuid.uuid4().hex[:8]}")
    def unreported() -> None:
        return None

    async with get_client() as client:
        flow_id = await client.create_flow(unreported)
        deployment_id = await client.create_deployment(flow_id=flow_id, name="unreported", concurrency_limit=1)
        run = await client.create_flow_run_from_deployment(deployment_id)
        picked = await client.read_flow_run(run.id)
        await client.set_flow_run_state(run.id, Pending())
        await client.set_flow_run_state(run.id, Running())
        async with PromptshipProcessWorker(work_pool_name=f"pool-{uuid.uuid4().hex[:8]}") as worker:
            await worker._propose_crashed_state(picked, "Flow run infrastructure exited with non-zero status code -9.")
        after = await client.read_flow_run(run.id)
        assert after.state is not None and after.state.type.value == "CRASHED"


def test_promptship_s_worker_serves_process_pools_and_leaves_prefect_s_registry_alone() -> None:
    from prefect.utilities.dispatch import lookup_type
    from prefect.workers.base import BaseWorker
    from prefect.workers.process import ProcessWorker

    from promptship.prefect_worker import WORKER_KEY, PromptshipProcessWorker

    assert PromptshipProcessWorker.type == "process"
    assert lookup_type(BaseWorker, "process") is ProcessWorker
    assert lookup_type(BaseWorker, WORKER_KEY) is PromptshipProcessWorker
