"""A CI event's resume that meets a busy Prefect is tried again, and one refused run does not keep the others
waiting (``servers.resumer.PrefectRunResumer.resume_waiting``).

Found by the flow benchmark: under a burst on SQLite, Prefect answered the receiver's ``POST
/flow_runs/{id}/resume`` with 503 ("database is locked") past its client's own retries; the receiver logged it and
the run stayed suspended until a sweep. Here a fault proxy in front of the session's Prefect server refuses the
resumes of two suspended runs (their Prefect client retrying nothing, so each 503 is one failed resume): the first
run's two refusals are retried away, the second run's never end.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, get_current_settings, temporary_settings
from prefect.states import Running, Suspended

from promptship.domain.waits import RunWait
from promptship.errors import ServiceError
from promptship.servers.resumer import PrefectRunResumer
from promptship.store import Store, make_engine
from promptship_sandbox.faultproxy import running_fault_proxy

pytestmark = pytest.mark.flow

REPOSITORY = "demo/chat-app"
SHA = "c0ffee" * 6 + "abcd"


def _suspended_run(client: SyncPrefectClient, deployment_id: uuid.UUID) -> uuid.UUID:
    run = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(run.id, Running(), force=True)
    client.set_flow_run_state(run.id, Suspended(timeout_seconds=600, pause_key="wait_for_ci#1:1"), force=True)
    return run.id


def _state(flow_run_id: uuid.UUID) -> str:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return (state.name or "") if state else ""


def test_a_refused_resume_is_retried_and_does_not_keep_the_other_runs_waiting(
    prefect_harness: None, tmp_path: Path
) -> None:
    direct = str(get_current_settings().api.url)
    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("dev-cycle"), name=f"resume-{uuid.uuid4().hex[:6]}"
        )
        first, second = _suspended_run(client, deployment_id), _suspended_run(client, deployment_id)
    assert (_state(first), _state(second)) == ("Suspended", "Suspended")

    store = Store(make_engine(f"sqlite:///{tmp_path / 'store.db'}"))
    store.create_schema()
    waits = store.waits()
    for run_id in (first, second):
        waits.suspending(
            RunWait(
                flow_run_id=str(run_id),
                request_key=f"key-{run_id}",
                attempt_id=f"attempt-{run_id}",
                label="wait_for_ci#1",
                kind="ci",
                repository=REPOSITORY,
                sha=SHA,
                deadline=datetime.now(UTC) + timedelta(minutes=10),
            )
        )

    slept: list[float] = []
    resumer = PrefectRunResumer(waits, retry_delays_s=(0.1, 0.2, 0.3), sleep=slept.append)
    with running_fault_proxy(direct.removesuffix("/api")) as proxy:
        proxy.inject("http_503", count=2, match=f"/api/flow_runs/{first}/resume", method="POST")
        proxy.inject("http_503", count=1000, match=f"/api/flow_runs/{second}/resume", method="POST")
        with temporary_settings(updates={PREFECT_API_URL: f"{proxy.url}/api", PREFECT_CLIENT_MAX_RETRIES: 0}):
            with pytest.raises(ServiceError) as refused:
                resumer.resume_waiting(REPOSITORY, sha=SHA)
        # the first run: refused twice, resumed at its third try; the second: 1 + 3 tries, all refused
        assert proxy.requests_to(f"/api/flow_runs/{first}/resume") == 3
        assert proxy.requests_to(f"/api/flow_runs/{second}/resume") == 4

    assert _state(first) != "Suspended"  # Prefect resumed it (a suspended run goes back to its work queue)
    assert _state(second) == "Suspended"  # still waiting: the sweep resumes it later
    assert refused.value.retryable
    assert "1 waiting run(s) not resumed (1 resumed)" in str(refused.value)
    assert str(second) in str(refused.value) and str(first) not in str(refused.value)
    by_run = {w.flow_run_id: w for w in waits.all()}
    assert by_run[str(first)].resumed_at is not None
    assert by_run[str(second)].resumed_at is None
    assert slept == [0.1, 0.2, 0.1, 0.2, 0.3]  # the waits between tries: the first run's two, the second's three
