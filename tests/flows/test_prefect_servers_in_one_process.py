"""One test process, two Prefect servers one after another (as the suite does): each server shows the task runs of
the flows run against it. Prefect keeps one events worker per process whatever the API URL, and its server builds
task runs from those events, so without ``using_prefect`` stopping it between servers, the second server never
saw its task runs (the planted-secrets test failed that way in the full suite)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.flow


def _task_run_names(api_url: str, flow_run_id: str) -> list[str]:
    answer = httpx.post(f"{api_url}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=30)
    answer.raise_for_status()
    return sorted(t["name"] for t in answer.json())


def test_each_server_sees_the_task_runs_of_the_flows_run_against_it(tmp_path: Path) -> None:
    from prefect import flow, get_run_logger, task
    from prefect.context import get_run_context

    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect
    from promptship_sandbox.reliability.leaks import prefect_api_objects

    @task(task_run_name="step-{n}")
    def step(n: int) -> int:
        return n

    @flow
    def chain() -> str:
        get_run_logger().info("chain ran")
        step(1)
        step(2)
        return str(get_run_context().flow_run.id)  # type: ignore[union-attr]

    for name in ("first", "second"):
        with running_prefect_server(tmp_path / name) as server, using_prefect(server):
            flow_run_id = chain()
            prefect_api_objects(server.api_url, expect=("flow_run", "task_run"), timeout_s=30)
            assert _task_run_names(server.api_url, flow_run_id) == ["step-1", "step-2"], name
