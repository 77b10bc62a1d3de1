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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.conftest import SHARED

RUNNING = ["prefect-server", "prefect-worker", "webhook", "llm-gateway"]  # what the kubelet can run
NS = "promptship"
CHAT_APP = Path(__file__).resolve().parents[2] / "examples" / "chat-app"


def _secrets(store_dir: Path, kubeconfig: Path | None = None) -> dict[str, dict[str, str]]:
    from promptship_sandbox import credentials

    deployer = {"promptship-deployer-kubeconfig": {"kubeconfig": kubeconfig.read_text()}} if kubeconfig else {}
    return deployer | {
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
        # made up per run in OpenRouter's format: the gateway sends it to the LLM stand-in, which accepts any key
        "promptship-openrouter": {"api-key": credentials.openrouter_key()},
    }


@pytest.mark.manifests
def test_localize_maps_claims_ports_mounts_and_service_urls(tmp_path: Path):
    from promptship_sandbox import platform

    rendered = platform.render("local")
    before = json.dumps(rendered, sort_keys=True)
    secrets = _secrets(tmp_path)
    local = platform.localize(rendered, tmp_path, secrets=secrets)
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
    # Secret volumes too, with their items and mode: the agent-server gets only the session key, mode 0440
    key_dir = tmp_path / "volumes" / "openhands-agent-server" / "session-key"
    assert [f.name for f in key_dir.iterdir()] == ["session-api-key"]
    key_file = key_dir / "session-api-key"
    assert key_file.read_text() == secrets["promptship-credentials"]["PROMPTSHIP_OPENHANDS__SESSION_API_KEY"]
    assert key_file.stat().st_mode & 0o777 == 0o440
    assert local.agent_server_image == "ghcr.io/promptship/openhands-agent-server:1.57.0"


@pytest.mark.manifests
def test_outside_services_point_the_worker_and_the_gateway_and_mount_the_deployer_kubeconfig(tmp_path: Path):
    from promptship_sandbox import platform

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text('{"apiVersion": "v1", "kind": "Config"}')
    objects = platform.render("local")
    platform.with_outside_services(
        objects,
        github_api_url="http://127.0.0.1:1/api/v3",
        llm_base_url="http://127.0.0.1:2",
        deployer_kubeconfig=True,
        worker_env={"PROMPTSHIP_GITHUB__CI_POLL_MAX_S": "3"},
    )
    local = platform.localize(objects, tmp_path / "state", secrets=_secrets(tmp_path, kubeconfig))

    def env_list(name: str) -> list[dict[str, Any]]:
        d = next(o for o in local.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
        return d["spec"]["template"]["spec"]["containers"][0]["env"]

    def env(name: str) -> dict[str, str | None]:
        return {e["name"]: e.get("value") for e in env_list(name)}

    worker, gateway = env("prefect-worker"), env("llm-gateway")
    assert worker["PROMPTSHIP_GITHUB__API_URL"] == "http://127.0.0.1:1/api/v3"
    assert worker["PROMPTSHIP_GITHUB__CI_POLL_MAX_S"] == "3"
    # the Secret's one key is a file of the worker's mount, and the setting names that file
    mounted = Path(str(worker["PROMPTSHIP_KUBE__KUBECONFIG"]))
    assert mounted == tmp_path / "state" / "volumes" / "prefect-worker" / "deployer-kubeconfig" / "kubeconfig"
    assert mounted.read_text() == kubeconfig.read_text() and mounted.stat().st_mode & 0o777 == 0o400
    assert gateway["PROMPTSHIP_LLM__OLLAMA_BASE_URL"] == "http://127.0.0.1:2"
    assert gateway["PROMPTSHIP_LLM__OPENROUTER_BASE_URL"] == "http://127.0.0.1:2/v1"
    names = [e["name"] for e in env_list("llm-gateway")]
    assert names.count("PROMPTSHIP_LLM__OLLAMA_BASE_URL") == 1  # replaced, not a second entry


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
    store_url: str
    forge: Any  # the GitHub stand-in (promptship_sandbox.forge.Forge)
    llm: Any  # the scripted LLM stand-in behind the platform's gateway pod (LLMStandIn)
    seeded: Future[str]  # the seed chat app rolled out in `demo`: its health URL
    registered: Future[None]  # `prefect deploy --name dev-cycle` from prefect.yaml, against the platform's Prefect
    worker_home: Path  # the worker pod's PROMPTSHIP_HOME (its /tmp volume): the runs' checkouts are under it


# What the worker's flow runs are pointed at (platform.with_outside_services, as an operator patches the worker):
# the forge as GitHub, the deployer kubeconfig Secret as a file, CI polled briskly, no suspension (the platform's
# receiver is not fed the forge's events here), the flow run's own calls' local provider = the stand-in.
def _worker_env(llm_base_url: str) -> dict[str, str]:
    return {
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",
        "PROMPTSHIP_GITHUB__CI_POLL_INITIAL_S": "0.5",
        "PROMPTSHIP_GITHUB__CI_POLL_MAX_S": "3",
        "PROMPTSHIP_LLM__OLLAMA_BASE_URL": llm_base_url,
        # polls every 5 s (the default 10): its health answers 503 after 30 polling intervals without one, and a
        # 1 s interval (30 s) was exceeded at load 19
        "PREFECT_WORKER_QUERY_SECONDS": "5",
    }


def _agent_server_pids(state_dir: Path) -> list[int]:
    """The agent-server pod's processes: started from this platform's launch.py (a path under ``state_dir``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "launch.py" in cmdline and str(state_dir) in cmdline:
                pids.append(int(proc.name))
    return pids


def _stop_agent_terminals(pids: list[int]) -> None:
    """The agent's terminals are tmux servers under /tmp/openhands-agent-server-<pid>; they outlive the server
    (scripts/openhands.sh does the same in `down`)."""
    import shutil

    for pid in pids:
        tdir = Path("/tmp") / f"openhands-agent-server-{pid}"
        for sock in tdir.glob("tmux-*/*"):
            if sock.is_socket():
                subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)
        shutil.rmtree(tdir, ignore_errors=True)


@pytest.fixture(scope="module")
def local_platform(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The overlay applied with its outside services: the forge (GitHub), the LLM stand-in behind the gateway
    pod, the agent-server pod (its image = the agent-server's virtualenv, when installed), the deployer's
    kubeconfig for this control plane; the seed chat app rolled out and dev-cycle registered in parallel."""
    from kubernetes import config

    from promptship.adapters.kube import KubeCluster
    from promptship_sandbox import platform
    from promptship_sandbox.agent_server import agent_server_venv
    from promptship_sandbox.cluster import service_url
    from promptship_sandbox.demo import demo_request, deploy_from_prefect_yaml, deploy_seed_app
    from promptship_sandbox.forge import running_forge
    from promptship_sandbox.llm_server import running_llm_stand_in
    from promptship_sandbox.prefect_server import _template_db
    from promptship_sandbox.sample_app import publish_directory

    tmp = tmp_path_factory.mktemp("platform")
    store = tmp / "store"
    store.mkdir()
    kubeconfig = Path(control_plane.kubeconfig)
    secrets = _secrets(store, kubeconfig)
    store_url = secrets["promptship-store"]["PROMPTSHIP_DATABASE_URL"]
    # not installed: the agent-server pod stays a placeholder and the deploy test skips. Only the interpreter is
    # looked for: agent_server_installed() imports the server (20-60 s at load 15), which its pod does anyway
    agent_python = agent_server_venv() / "bin" / "python"
    with ExitStack() as stack, ThreadPoolExecutor(max_workers=2, thread_name_prefix="platform") as pool:
        forge = stack.enter_context(running_forge(tmp / "forge", reuse_builds=True))
        forge.add_user("demo", token=secrets["promptship-github"]["token"])  # the token of the promptship-github Secret
        # The seed commit is imported without a CI build: its `make test` (40-100 s of CPU at load 15-20) ran
        # beside the bring-up on 2 cores; the seed image the chat app starts from is published as the forge's CI
        # publishes one (sample_app.publish_directory, same files). The PR and its merge are built by the forge.
        forge.run_ci = False
        forge.seed_repository("demo", "chat-app", CHAT_APP)
        forge.run_ci = True
        control_plane.add_registry(forge.registry_dir)
        seed_images = tmp / "seed-images"
        publish_directory(CHAT_APP, seed_images, "demo", "chat-app")
        control_plane.add_registry(seed_images / "registry")
        llm = stack.enter_context(running_llm_stand_in())
        objects = platform.render("local")
        platform.with_outside_services(
            objects,
            github_api_url=forge.api_url,
            llm_base_url=llm.base_url,
            deployer_kubeconfig=True,
            worker_env=_worker_env(llm.base_url),
        )
        local = platform.localize(objects, tmp / "platform", secrets=secrets, prefect_template_db=_template_db())
        checkout = os.pathsep.join(str(platform.REPO_ROOT / d) for d in ("src", "sandbox/src", "."))
        platform.register_images(  # the promptship and Prefect images: this checkout and its virtualenv
            control_plane,
            local,
            python=Path(sys.executable),
            env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": checkout},
            agent_server_python=agent_python if agent_python.exists() else None,
        )
        worker = next(
            o for o in local.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "prefect-worker"
        )
        worker_env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}

        def seed() -> str:
            kube = KubeCluster(config.new_client_from_config(config_file=str(kubeconfig)), poll_interval_s=0.3)
            # the chat app's own LLM calls are not exercised here (its /health does not call a model)
            llm_secret = {"LLM_API_BASE": local.service_urls["llm-gateway"] + "/v1", "LLM_API_KEY": "sk-not-issued"}
            deploy_seed_app(kube, kubeconfig, seed_images / "registry", demo_request(), llm=llm_secret)
            return service_url(kubeconfig, "demo", "backend-service", path="/health")

        def register() -> None:
            platform.wait_available(kubeconfig, NS, ["prefect-server"], timeout_s=150)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PROMPTSHIP_"))}
            env |= {"PREFECT_API_URL": local.service_urls["prefect-server"] + "/api", "PREFECT_HOME": str(tmp / "cli")}
            env["PYTHONPATH"] = checkout
            deploy_from_prefect_yaml(env, tmp / "deploy.log", names=["dev-cycle"])

        pids: list[int] = []
        try:
            crds = sorted((SHARED / "specs" / "crds").glob("gateway-api-*.yaml"))
            t0 = time.monotonic()
            platform.apply(kubeconfig, local.objects, crd_files=crds)
            print(f"platform applied in {time.monotonic() - t0:.0f} s")
            seeded, registered = pool.submit(seed), pool.submit(register)
            yield Platform(
                local,
                kubeconfig,
                secrets,
                store_url,
                forge,
                llm,
                seeded,
                registered,
                Path(str(worker_env["PROMPTSHIP_HOME"])),
            )
        finally:
            pids = _agent_server_pids(local.state_dir)
            kubectl = [platform.kubectl(), "--kubeconfig", str(kubeconfig)]
            for ns in ("promptship", "demo"):
                subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)
            pvs = [o["metadata"]["name"] for o in local.objects if o["kind"] == "PersistentVolume"]
            subprocess.run([*kubectl, "delete", "pv", *pvs, "--wait=false"], capture_output=True)
            deadline = time.monotonic() + 30
            while _agent_server_pids(local.state_dir) and time.monotonic() < deadline:
                time.sleep(0.5)
            _stop_agent_terminals(pids)


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
@pytest.mark.openhands
def test_a_request_submitted_to_that_prefect_deploys_the_chat_app(local_platform, control_plane):
    """dev_cycle through prefect.yaml's `dev-cycle` deployment on the platform's Prefect and its `local-process`
    pool: the platform's worker (a pod) runs it with the real adapters — the forge as GitHub, the agent-server pod
    driven by the scripted LLM stand-in behind the gateway pod, the chat app rolled out by the flow run on this
    control plane (the deployer kubeconfig Secret) and its health gate; store: the platform's one store."""
    from kubernetes import client, config
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from sqlalchemy import select

    from promptship.adapters.prefect_queues import moved_run
    from promptship.domain.request import branch_for
    from promptship.store import Store, make_engine
    from promptship.store.ledger import LLMCallRow
    from promptship_sandbox import platform
    from promptship_sandbox.agent_server import agent_server_venv, demo_developer_replies
    from promptship_sandbox.demo import demo_request
    from promptship_sandbox.forge import forge_github
    from tests.conftest import require

    venv = agent_server_venv()
    require("openhands agent-server", (venv / "bin" / "python").exists(), f"no {venv}: run `make openhands-install`")
    t0 = time.monotonic()
    seconds = platform.wait_available(
        local_platform.kubeconfig, NS, [*RUNNING, "openhands-agent-server"], timeout_s=300
    )
    health_url = local_platform.seeded.result(timeout=600)
    local_platform.registered.result(timeout=300)
    print("Available after (s):", {k: round(v, 1) for k, v in seconds.items()}, f"ready {time.monotonic() - t0:.0f} s")
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(local_platform.kubeconfig)))

    def backend() -> dict[str, Any]:
        d = apps.api_client.sanitize_for_serialization(apps.read_namespaced_deployment("backend", "demo"))
        return cast(dict[str, Any], d)  # the Deployment as its JSON object (camelCase keys)

    seed_image = backend()["spec"]["template"]["spec"]["containers"][0]["image"]

    request = demo_request(health_url)
    workspace = local_platform.worker_home / "workspaces" / request.run_key  # the flow run's checkout
    # the agent edits and commits; the tests run in the forge's CI, which gates the merge (wait_for_ci)
    replies = demo_developer_replies(str(workspace), run_tests=False)
    local_platform.llm.script_conversation(branch_for(request.run_key), replies)
    api = local_platform.local.service_urls["prefect-server"] + "/api"
    t_run = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: api}):
        run = run_deployment("dev-cycle/dev-cycle", parameters={"request": request.model_dump(mode="json")}, timeout=0)
        assert isinstance(run, FlowRun)
        deadline = time.monotonic() + 420
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
                assert time.monotonic() < deadline, f"flow run still {now.state and now.state.name} after 420 s"
                time.sleep(1)
    print(f"flow run {now.state.name} after {time.monotonic() - t_run:.0f} s")
    report = Store(make_engine(local_platform.store_url)).run(request.run_key)
    if report is not None:
        print("steps (s):", ", ".join(f"{s.name or s.step} {s.seconds:.0f}" for s in report.steps))
    assert now.state.name == "Completed", now.state
    assert report is not None and report.outcome == "deployed", report

    # exactly one PR on the forge, for this request, and merged
    repo = forge_github(local_platform.forge).get_repo(request.repository)
    pulls = list(repo.get_pulls(state="all"))
    assert [p.head.ref for p in pulls] == [branch_for(request.run_key)], [p.head.ref for p in pulls]
    assert pulls[0].merged and report.pr_url == pulls[0].html_url
    main_sha = repo.get_branch("main").commit.sha

    # the chat app's Deployment Available at the merged commit's image, answering its health URL and the new route
    deployment = backend()
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == report.image and image != seed_image and image.endswith(":" + main_sha), (image, seed_image)
    assert platform.available(deployment["status"]), deployment["status"]
    assert httpx.get(health_url, timeout=10).status_code == 200
    version = httpx.get(health_url.rsplit("/health", 1)[0] + "/version", timeout=10)
    assert version.status_code == 200 and version.json()["sha"] == main_sha, version.text

    # the platform's worker pod is the one that ran it
    logs = Path(control_plane.kubelet_dir) / "logs"
    worker_logs = list(logs.glob(f"{NS}_prefect-worker-*_worker.log"))
    assert any(str(run.id) in f.read_text(errors="replace") for f in worker_logs), worker_logs
    # the agent-server pod is a process (not a placeholder), and its model calls reached the stand-in through the
    # gateway pod, which recorded them in the platform's store (step `agent`: only the gateway service writes it)
    assert list(logs.glob(f"{NS}_openhands-agent-server-*_agent-server.log"))
    marker = branch_for(request.run_key)
    assert any(r.contains(marker) for r in local_platform.llm.completions())
    with make_engine(local_platform.store_url).connect() as conn:
        rows = conn.execute(
            select(LLMCallRow.step, LLMCallRow.mode, LLMCallRow.model).where(LLMCallRow.run_key == report.attempt_id)
        ).all()
    print("ledger rows of the run (step, mode, model):", sorted({tuple(r) for r in rows}))
    assert "agent" in {r.step for r in rows}, rows
