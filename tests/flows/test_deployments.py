"""prefect.yaml deploys against a real local Prefect server, and its event trigger starts the right run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptship.domain.request import DevRequest

pytestmark = pytest.mark.flow

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
JOB_TEMPLATE = REPO_ROOT / "deployments" / "kubernetes-base-job-template.json"


def test_kubernetes_job_template_declares_every_variable_it_uses() -> None:
    template = json.loads(JOB_TEMPLATE.read_text())
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(template["job_configuration"])))
    declared = set(template["variables"]["properties"])
    assert used and used <= declared, f"undeclared: {sorted(used - declared)}"
    env = template["variables"]["properties"]["env"]["default"]
    assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"  # durable resume needs shared, persisted results
    assert not any(k.endswith(("TOKEN", "KEY", "SECRET")) for k in env)  # credentials come from the Secret


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A `prefect server start` of our own (the harness runs no trigger services)."""
    from promptship_sandbox.prefect_server import running_prefect_server

    with running_prefect_server(tmp_path_factory.mktemp("prefect-deploy"), ui=True) as srv:
        yield srv


def test_the_ui_calls_the_api_on_the_servers_own_port(server) -> None:
    """The demo's `--serve` UI: its pages ask /ui-settings where the API is — never the default 4200."""
    import httpx

    settings = httpx.get(f"{server.url}/ui-settings", timeout=10).json()  # type: ignore[attr-defined]
    assert settings["api_url"] == server.api_url  # type: ignore[attr-defined]


def _prefect(args: list[str], api_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PWD": str(REPO_ROOT), "PREFECT_CLI_WRAP_LINES": "false"}
    return subprocess.run(
        [PREFECT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


async def _emit(event: object) -> None:
    from prefect.events.clients import get_events_client

    async with get_events_client() as client:
        await client.emit(event)  # type: ignore[arg-type]


def test_deploy_all_creates_the_three_deployments_and_the_event_trigger_starts_a_run(server) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import Event
    from prefect.events.schemas.events import Resource
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = server.api_url  # type: ignore[attr-defined]
    pool = _prefect(["work-pool", "create", "local-process", "--type", "process"], api)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    k8s = _prefect(
        ["work-pool", "create", "promptship-k8s", "--type", "kubernetes", "--base-job-template", str(JOB_TEMPLATE)], api
    )
    assert k8s.returncode == 0, k8s.stdout + k8s.stderr
    deployed = _prefect(["--no-prompt", "deploy", "--all"], api)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            dev = client.read_deployment_by_name("dev-cycle/dev-cycle")
            demo = client.read_deployment_by_name("dev-cycle/demo")
            event = client.read_deployment_by_name("dev-cycle/github-event")
            assert {dev.work_pool_name, demo.work_pool_name, event.work_pool_name} == {"local-process"}
            # the UI form: the request parameter is the DevRequest model, fields typed
            schema = dev.parameter_openapi_schema or {}
            assert schema["required"] == ["request"]
            dev_request = schema["definitions"]["DevRequest"]["properties"]
            assert dev_request["budget_usd"]["minimum"] == 0 and "auto_merge" in dev_request
            assert [s.schedule.cron for s in demo.schedules] == ["0 6 * * *"]  # type: ignore[union-attr]
            assert demo.parameters["request"]["repository"] == "demo/chat-app"
            canary = client.read_deployment_by_name("canary/canary")
            assert canary.work_pool_name == "local-process"  # a pool of checkouts with the sandbox installed
            assert [s.schedule.cron for s in canary.schedules] == ["0 5 * * *"]  # type: ignore[union-attr]
            kpi = client.read_deployment_by_name("kpi-report/kpi-report")
            assert [s.schedule.cron for s in kpi.schedules] == ["0 7 * * *"]  # type: ignore[union-attr]
            review = client.read_deployment_by_name("policy-review/policy-review")
            assert [s.schedule.cron for s in review.schedules] == ["0 6 * * 1"]  # type: ignore[union-attr]
            assert review.parameters == {"days": 30, "success_floor": 0.8}

            automations = client.read_resource_related_automations(f"prefect.deployment.{event.id}")
            (automation,) = automations
            trigger = automation.trigger
            assert trigger.expect == {"promptship.request"}  # type: ignore[union-attr]
            assert trigger.match.model_dump()["prefect.resource.id"] == "github.repo.*"  # type: ignore[union-attr]

        delivery = str(uuid.uuid4())
        payload = {
            "prompt": "Add a GET /version endpoint that returns the deployed commit SHA",
            "repository": "octo/chat-app",
            "issue_number": 42,
            "requester": "octocat",
            "delivery_id": delivery,
        }
        # an events client of its own, closed here: the process-wide events worker would outlive this server
        asyncio.run(
            _emit(
                Event(
                    event="promptship.request",
                    resource=Resource({"prefect.resource.id": "github.repo.octo/chat-app"}),
                    payload=payload,
                )
            )
        )
        deadline = time.monotonic() + 120
        runs = []
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not runs:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[event.id])))
                if not runs:
                    time.sleep(1)
    assert runs, "the promptship.request event created no run of github-event (see the server log)"
    request = DevRequest.model_validate(runs[0].parameters["request"])
    assert (request.prompt, request.repository, request.issue_number) == (payload["prompt"], "octo/chat-app", 42)
    assert (request.requester, request.delivery_id) == ("octocat", delivery)
