"""The platform of ``k8s/overlays/local`` on the local control plane (issue 18 part 5): rendered, mapped onto the
sandbox kubelet (``promptship_sandbox.platform``), applied with kubectl; the Prefect server, the worker, the
webhook receiver and the LLM gateway come up as processes of the promptship image and find each other through
the kubelet's service proxy."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SHARED

RUNNING = ["prefect-server", "prefect-worker", "webhook", "llm-gateway"]  # what the kubelet can run
NS = "promptship"


def _secrets(store_dir: Path) -> dict[str, dict[str, str]]:
    from promptship_sandbox import credentials

    return {
        "promptship-github": {"token": credentials.github_token(), "webhook-secret": credentials.webhook_secret()},
        "promptship-store": {
            # one machine: the receiver, the gateway and the worker are processes of it and share one SQLite file
            "PROMPTSHIP_DATABASE_URL": f"sqlite:///{store_dir}/promptship.db",
            "PROMPTSHIP_STORE_KEY": credentials.store_key(),
            "password": "unused-by-sqlite",
        },
        "promptship-credentials": {
            "PROMPTSHIP_OPENHANDS__SESSION_API_KEY": credentials.session_key(),
            "PROMPTSHIP_GITHUB__TOKEN": credentials.github_token(),
        },
    }


@pytest.mark.manifests
def test_localize_maps_claims_ports_mounts_and_service_urls(tmp_path: Path):
    from promptship_sandbox import platform

    rendered = platform.render("local")
    before = json.dumps(rendered, sort_keys=True)
    local = platform.localize(rendered, tmp_path, secrets=_secrets(tmp_path))
    assert json.dumps(rendered, sort_keys=True) == before  # the rendered objects are not changed
    objs = local.objects

    # every claim, the StatefulSet's included, has a static volume bound to it by claimRef
    claims = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs if o["kind"] == "PersistentVolumeClaim"}
    claims |= {
        (o["metadata"]["namespace"], f"{t['metadata']['name']}-{o['metadata']['name']}-0")
        for o in objs
        if o["kind"] == "StatefulSet"
        for t in o["spec"].get("volumeClaimTemplates", [])
    }
    pvs = [o for o in objs if o["kind"] == "PersistentVolume"]
    assert {(p["spec"]["claimRef"]["namespace"], p["spec"]["claimRef"]["name"]) for p in pvs} == claims
    assert all(Path(p["spec"]["hostPath"]["path"]).is_dir() for p in pvs)

    # the worker reaches Prefect and the gateway at the service proxy's ports, on loopback
    worker = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "prefect-worker")
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT_API_URL"] == local.service_urls["prefect-server"] + "/api"
    assert env["PROMPTSHIP_LLM__GATEWAY_URL"] == local.service_urls["llm-gateway"]
    assert env["PREFECT_WORKER_WEBSERVER_HOST"] == "127.0.0.1"
    ports = json.loads(worker["spec"]["template"]["metadata"]["annotations"]["promptship.dev/host-ports"])
    assert env["PREFECT_WORKER_WEBSERVER_PORT"] == str(ports["worker"])
    # its /tmp volume is a host directory of its own, and PROMPTSHIP_HOME lives in it
    assert env["PROMPTSHIP_HOME"] == str(tmp_path / "volumes" / "prefect-worker" / "tmp" / "promptship")
    settings = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "promptship-settings")
    assert settings["data"]["PREFECT_API_URL"] == local.service_urls["prefect-server"] + "/api"

    server = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "prefect-server")
    (c,) = server["spec"]["template"]["spec"]["containers"]
    sports = json.loads(server["spec"]["template"]["metadata"]["annotations"]["promptship.dev/host-ports"])
    assert c["command"][c["command"].index("--port") + 1] == str(sports["prefect-server"])
    assert c["command"][c["command"].index("--host") + 1] == "127.0.0.1"
    # the Secret templates are filled as an operator fills them; nothing else carries a value
    store = next(o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == "promptship-store")
    assert store["stringData"]["PROMPTSHIP_DATABASE_URL"].startswith("sqlite:///")
    gateway_cm = tmp_path / "volumes" / "llm-gateway" / "llm-config" / "default_model"
    assert gateway_cm.read_text() == "mistral"  # configMap volumes are files in the host directory


@pytest.mark.manifests
def test_localize_refuses_a_secret_the_overlay_does_not_have(tmp_path: Path):
    from promptship.errors import ConfigError
    from promptship_sandbox import platform

    with pytest.raises(ConfigError, match="no Secret template named promptship-gihtub"):
        platform.localize(platform.render("local"), tmp_path / "state", secrets={"promptship-gihtub": {"token": "x"}})
    assert not (tmp_path / "state").exists()  # nothing made


@dataclass
class Platform:
    local: Any
    kubeconfig: Path
    secrets: dict[str, dict[str, str]]
    fakes: Path
    store_url: str


# The one test-only setting of the platform: the worker's flow runs use the sandbox's durable fakes (code host,
# agent, CI, target cluster; one JSON state) instead of GitHub, OpenHands and a real target, and this checkout's code.
def _with_durable_fakes(objects: list[dict[str, Any]], fakes: Path, store_url: str) -> None:
    from promptship_sandbox.platform import REPO_ROOT

    worker = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "prefect-worker")
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    env += [
        {"name": "PROMPTSHIP_SERVICES_FACTORY", "value": "promptship_sandbox.durable_fakes:services_from_env"},
        {"name": "PROMPTSHIP_TEST_FAKES_DIR", "value": str(fakes)},
        {"name": "PROMPTSHIP_TEST_DATABASE_URL", "value": store_url},
        {"name": "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S", "value": "0"},
        {"name": "PYTHONPATH", "value": os.pathsep.join(str(REPO_ROOT / d) for d in ("src", "sandbox/src", "."))},
    ]


@pytest.fixture(scope="module")
def local_platform(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from promptship_sandbox import platform
    from promptship_sandbox.prefect_server import _template_db

    tmp = tmp_path_factory.mktemp("platform")
    store = tmp / "store"
    store.mkdir()
    secrets = _secrets(store)
    store_url = secrets["promptship-store"]["PROMPTSHIP_DATABASE_URL"]
    local = platform.localize(
        platform.render("local"), tmp / "platform", secrets=secrets, prefect_template_db=_template_db()
    )
    _with_durable_fakes(local.objects, tmp / "fakes", store_url)
    for image in local.local_images:  # the promptship and Prefect images: this checkout and its virtualenv
        control_plane.register_local_image(
            image, platform.REPO_ROOT, Path(sys.executable), {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        )
    kubeconfig = Path(control_plane.kubeconfig)
    try:
        crds = sorted((SHARED / "specs" / "crds").glob("gateway-api-*.yaml"))
        platform.apply(kubeconfig, local.objects, crd_files=crds)
        yield Platform(local, kubeconfig, secrets, tmp / "fakes", store_url)
    finally:
        kubectl = [platform.kubectl(), "--kubeconfig", str(kubeconfig)]
        for ns in ("promptship", "demo"):
            subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)
        pvs = [o["metadata"]["name"] for o in local.objects if o["kind"] == "PersistentVolume"]
        subprocess.run([*kubectl, "delete", "pv", *pvs, "--wait=false"], capture_output=True)


@pytest.mark.cluster
def test_the_local_overlay_brings_up_prefect_worker_receiver_and_gateway(local_platform, control_plane):
    from promptship_sandbox import platform

    local, kubeconfig, secrets = local_platform.local, local_platform.kubeconfig, local_platform.secrets
    seconds = platform.wait_available(kubeconfig, NS, RUNNING, timeout_s=150)
    print("Available after (s):", {k: round(v, 1) for k, v in seconds.items()})

    # each is a process of the promptship image answering its own readiness path on its host port
    pods = json.loads(
        subprocess.run(
            [platform.kubectl(), "--kubeconfig", str(kubeconfig), "-n", NS, "get", "pods", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["items"]
    for name in RUNNING:
        pod = next(
            p
            for p in pods
            if p["metadata"]["name"].startswith(name + "-") and not p["metadata"].get("deletionTimestamp")
        )
        (c,) = pod["spec"]["containers"]
        port = json.loads(pod["metadata"]["annotations"]["promptship.dev/host-ports"])[c["name"]]
        r = httpx.get(f"http://127.0.0.1:{port}{c['readinessProbe']['httpGet']['path']}", timeout=10)
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        log = Path(control_plane.kubelet_dir) / "logs" / f"{NS}_{pod['metadata']['name']}_{c['name']}.log"
        assert log.exists(), f"{name}: no process log (a placeholder, not the promptship image)"

    # through the service proxy, as the other components reach them
    health = httpx.get(local.service_urls["prefect-server"] + "/api/health", timeout=10)
    assert health.status_code == 200 and health.json() is True
    assert httpx.get(local.service_urls["llm-gateway"] + "/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(local.service_urls["webhook"] + "/healthz", timeout=10).status_code == 200

    # the worker found Prefect through its Service: it makes its pool and polls it, ONLINE there (its health
    # endpoint answers before its first poll: wait for it)
    deadline = time.monotonic() + 90
    while True:
        workers = httpx.post(
            local.service_urls["prefect-server"] + "/api/work_pools/local-process/workers/filter", json={}, timeout=10
        )
        if workers.status_code == 200 and workers.json():
            break
        assert time.monotonic() < deadline, f"no worker in the pool after 90 s: {workers.status_code} {workers.text}"
        time.sleep(1)
    assert [w["status"] for w in workers.json()] == ["ONLINE"]

    # the receiver verifies deliveries with the secret of the promptship-github Secret
    hook = local.service_urls["webhook"] + "/github/webhook"
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    secret = secrets["promptship-github"]["webhook-secret"].encode()
    signed = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"}
    wrong = httpx.post(hook, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}, timeout=10)
    assert wrong.status_code == 401, wrong.text
    ok = httpx.post(hook, content=body, headers={**headers, "X-Hub-Signature-256": signed}, timeout=10)
    assert ok.status_code == 200, ok.text


@pytest.mark.cluster
def test_a_request_submitted_to_that_prefect_runs_on_the_platforms_worker_and_deploys(local_platform, control_plane):
    """dev_cycle through a deployment on the platform's Prefect and its `local-process` pool: the platform's worker
    (a pod) runs it; its boundaries are the durable fakes, its store the platform's (the receiver's and the
    gateway's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from promptship.adapters.prefect_queues import moved_run
    from promptship.domain.request import DevRequest
    from promptship.store import Store, make_engine
    from promptship_sandbox import platform
    from promptship_sandbox.durable_fakes import JsonState

    platform.wait_available(local_platform.kubeconfig, NS, RUNNING, timeout_s=150)
    api = local_platform.local.service_urls["prefect-server"] + "/api"
    request = DevRequest(prompt="Add GET /version returning the commit SHA", auto_merge=True)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as prefect:
            prefect.create_deployment(
                flow_id=prefect.create_flow_from_name("dev-cycle"),
                name="dev-cycle",
                work_pool_name="local-process",
                entrypoint="flows/dev_cycle.py:dev_cycle",
                pull_steps=[
                    {"prefect.deployments.steps.set_working_directory": {"directory": str(platform.REPO_ROOT)}}
                ],
            )
        run = run_deployment("dev-cycle/dev-cycle", parameters={"request": request.model_dump(mode="json")}, timeout=0)
        assert isinstance(run, FlowRun)
        deadline = time.monotonic() + 240
        with get_client(sync_client=True) as prefect:
            while True:
                now = prefect.read_flow_run(run.id)
                if now.state is not None and now.state.is_final():
                    # the platform's limits: a run of the deployment's own queue moves to its repository's
                    moved = moved_run(prefect, run.id)
                    if moved is None:
                        break
                    run = prefect.read_flow_run(moved)
                    continue
                assert time.monotonic() < deadline, f"flow run still {now.state and now.state.name} after 240 s"
                time.sleep(1)
    assert now.state.name == "Completed", now.state
    report = Store(make_engine(local_platform.store_url)).run(request.run_key)
    assert report is not None and report.outcome == "deployed", report
    shared = JsonState(local_platform.fakes).read()
    assert list(shared["prs"]) == [request.run_key]  # one PR, for this request
    # the platform's worker pod is the one that ran it
    worker_logs = list((Path(control_plane.kubelet_dir) / "logs").glob(f"{NS}_prefect-worker-*_worker.log"))
    assert any(str(run.id) in f.read_text(errors="replace") for f in worker_logs), worker_logs
