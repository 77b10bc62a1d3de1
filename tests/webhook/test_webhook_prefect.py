"""The Prefect starters against a real (temporary) Prefect server: a redelivery never makes a second run."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from promptship.domain.webhooks import WebhookTrigger
from promptship.errors import ServiceError
from promptship.servers.webhook import (
    EVENT_NAME,
    PrefectDeploymentStarter,
    PrefectEventStarter,
    event_id_for,
    event_resource_id,
)

pytestmark = [pytest.mark.flow, pytest.mark.webhook]


def _trigger(delivery: str) -> WebhookTrigger:
    return WebhookTrigger(
        prompt="add a /health endpoint",
        repository="Codertocat/Hello-World",
        issue_number=1,
        requester="Codertocat",
        delivery_id=delivery,
    )


def _deploy_stand_in_flow() -> str:
    """A deployment of a flow taking ``request`` like dev-cycle; no worker: its runs stay scheduled."""
    from prefect import flow

    @flow(name="dev-cycle-webhook-test")
    def stand_in(request: dict[str, Any]) -> None:  # pragma: no cover - never executed
        del request

    deployment = stand_in.to_deployment(name="webhook-test")
    deployment.apply()
    return "dev-cycle-webhook-test/webhook-test"


async def _runs_of(deployment_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter

    flow_name, name = deployment_name.split("/")
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"{flow_name}/{name}")
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id={"any_": [deployment.id]})  # type: ignore[arg-type]
        )


def test_run_deployment_starter_makes_one_flow_run_per_delivery(prefect_harness: None) -> None:
    name = _deploy_stand_in_flow()
    starter = PrefectDeploymentStarter(name)
    delivery = str(uuid.uuid4())

    first = starter.start(_trigger(delivery))
    again = starter.start(_trigger(delivery))  # GitHub redelivered it (and the receiver forgot)
    other = starter.start(_trigger(str(uuid.uuid4())))

    assert first == again
    assert other != first
    runs = asyncio.run(_runs_of(name))
    assert sorted(str(r.id) for r in runs) == sorted({first, other})
    (run,) = [r for r in runs if str(r.id) == first]
    assert run.parameters["request"]["delivery_id"] == delivery
    assert run.parameters["request"]["issue_number"] == 1
    assert run.idempotency_key == delivery


def test_run_deployment_starter_puts_the_run_in_its_repositorys_work_queue(prefect_harness: None) -> None:
    """Fair under load: the run goes to the repository's work queue of the deployment's pool; the queue's limit is
    the per-repository limit and the pool's the global one, both as the starter's settings say now."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from promptship.domain.fairness import repository_queue_name

    pool = f"webhook-fair-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        client.create_deployment(
            flow_id=client.create_flow_from_name("dev-cycle-webhook-test"), name=pool, work_pool_name=pool
        )
    name = f"dev-cycle-webhook-test/{pool}"
    queue = repository_queue_name("Codertocat/Hello-World")

    first = PrefectDeploymentStarter(name, per_repository_limit=2, global_limit=5).start(_trigger("d-1"))
    # the settings changed (a redeployed receiver): the next start makes Prefect's limits say so
    second = PrefectDeploymentStarter(name, per_repository_limit=3, global_limit=6).start(_trigger("d-2"))
    again = PrefectDeploymentStarter(name, per_repository_limit=3, global_limit=6).start(_trigger("d-2"))

    assert again == second != first
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(uuid.UUID(i)) for i in (first, second)]
        assert [r.work_queue_name for r in runs] == [queue, queue]
        assert client.read_work_queue_by_name(queue, work_pool_name=pool).concurrency_limit == 3
        assert client.read_work_pool(pool).concurrency_limit == 6
    # without limits the run stays in the deployment's own queue, and the pool's limit is left as it is
    plain = PrefectDeploymentStarter(name).start(_trigger("d-3"))
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(uuid.UUID(plain)).work_queue_name == "default"
        assert client.read_work_pool(pool).concurrency_limit == 6


def test_event_starter_emits_promptship_request(prefect_harness: None) -> None:
    delivery = str(uuid.uuid4())
    event_id = PrefectEventStarter().start(_trigger(delivery))
    assert event_id == str(event_id_for(delivery))

    found = asyncio.run(_wait_for_event(event_id))
    assert found is not None, "the event never reached the Prefect server"
    assert found["event"] == EVENT_NAME
    assert found["resource"]["prefect.resource.id"] == event_resource_id("Codertocat/Hello-World")
    assert found["payload"] == _trigger(delivery).model_dump(mode="json")


def test_event_starter_fails_loudly_when_prefect_is_down() -> None:
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{closed_port}/api"}):
        with pytest.raises(ServiceError) as caught:
            PrefectEventStarter().start(_trigger(str(uuid.uuid4())))
    assert caught.value.retryable
    with temporary_settings(updates={PREFECT_API_URL: ""}):
        with pytest.raises(ServiceError, match="PREFECT_API_URL"):
            PrefectEventStarter().start(_trigger(str(uuid.uuid4())))


async def _wait_for_event(event_id: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while time.monotonic() < deadline:
            response = await client._client.post(
                "/events/filter", json={"filter": {"event": {"name": [EVENT_NAME]}}, "limit": 50}
            )
            response.raise_for_status()
            for event in response.json().get("events", []):
                if event["id"] == event_id:
                    return event
            await asyncio.sleep(0.5)
    return None
