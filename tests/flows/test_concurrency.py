"""The flow benchmark's harness keeps working: dev-cycle runs as flow-run processes of a process worker
(``promptship.bench.processes``), three one after another and three at once, each deploys with exactly one PR; a
burst of 20 submitted at once on the SQLite server completes every run once, with no submission refused.
No timing is asserted here: ``python -m promptship.bench flow`` prints the figures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from prefect.settings import get_current_settings

from promptship.bench.processes import BARE_CHAIN, DEV_CYCLE, ProcessPlatform, process_platform
from promptship.domain.request import DevRequest
from promptship.store import Store
from promptship_sandbox.durable_fakes import JsonState, durable_services

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def platform(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPlatform]:
    tmp = tmp_path_factory.mktemp("concurrency")
    settings = get_current_settings()
    server_env = {"PREFECT_API_URL": str(settings.api.url)}
    with process_platform(tmp, server_env) as platform:
        yield platform


def _requests(n: int) -> list[DevRequest]:
    return [DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", auto_merge=True) for _ in range(n)]


def _store(fakes: Path) -> Store:
    store = durable_services(fakes).sink
    assert isinstance(store, Store)
    return store


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
def test_dev_cycle_runs_as_processes_each_deploy_with_one_pr(
    platform: ProcessPlatform, mode: Literal["sequential", "concurrent"]
) -> None:
    requests = _requests(3)
    before = JsonState(platform.fakes).read().get("pr_creations", 0)
    batch = platform.run_batch(
        DEV_CYCLE,
        [{"request": r.model_dump(mode="json")} for r in requests],
        mode=mode,
    )
    assert batch.errors == []
    assert [r.state for r in batch.runs] == ["Completed"] * 3
    state = JsonState(platform.fakes).read()
    assert state["pr_creations"] - before == 3
    assert len({state["prs"][r.run_key]["number"] for r in requests}) == 3  # one PR per request, distinct
    store = _store(platform.fakes)
    outcomes = [store.run(r.run_key) for r in requests]
    assert [o.outcome if o else None for o in outcomes] == ["deployed"] * 3
    # each run went through the worker: claimed, then started as its own process
    assert all(r.claim_s == r.claim_s and r.start_s == r.start_s for r in batch.runs)


def test_bare_chain_runs_as_processes(platform: ProcessPlatform) -> None:
    batch = platform.run_batch(BARE_CHAIN, [{}, {}, {}], mode="concurrent")
    assert batch.errors == []
    assert [r.state for r in batch.runs] == ["Completed"] * 3


def test_a_burst_of_twenty_completes_each_run_once(platform: ProcessPlatform) -> None:
    """20 dev-cycle runs submitted at once through the worker on the SQLite server (the 50-run burst of
    ``bench flow`` at a size CI affords): no submission refused, every run Completed exactly once, one PR each."""
    from prefect.client.orchestration import get_client

    requests = _requests(20)
    before = JsonState(platform.fakes).read().get("pr_creations", 0)
    batch = platform.run_batch(
        DEV_CYCLE, [{"request": r.model_dump(mode="json")} for r in requests], mode="concurrent", timeout_s=900
    )
    assert batch.refused == []  # no 503 reached the submitter
    assert batch.errors == []
    assert len({r.flow_run_id for r in batch.runs}) == 20
    with get_client(sync_client=True) as client:
        completed = [
            [s.name for s in client.read_flow_run_states(r.flow_run_id)].count("Completed") for r in batch.runs
        ]
    assert completed == [1] * 20
    state = JsonState(platform.fakes).read()
    assert state["pr_creations"] - before == 20
    assert len({state["prs"][r.run_key]["number"] for r in requests}) == 20
