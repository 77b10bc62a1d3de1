"""The chat app's own k8s/ manifests on the local control plane: the backend Deployment (image = a commit of
the app published the way the forge's CI does), its Service and the Secret are accepted by the API server,
the sandbox kubelet runs `python -m app` from that commit, the rollout completes on the /health probes, and
the Service answers POST /chat through the real LiteLLM client against the LLM stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from promptship_sandbox.llm_server import LLMStandIn
from tests.chatapp.conftest import API_KEY, APP_ROOT, MODEL
from tests.conftest import require

pytestmark = [pytest.mark.chatapp, pytest.mark.cluster]

IGNORED = shutil.ignore_patterns("node_modules", "dist", "__pycache__", ".pytest_cache", "artifacts")


def _git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def publish_chat_app(root: Path) -> tuple[Path, str]:
    """Commit examples/chat-app into a bare repository and write the registry record of its backend image
    (docs/CONTRACTS.md "Images"). Returns the registry directory and the image reference."""
    work, bare, registry = root / "work", root / "git" / "demo" / "chat-app.git", root / "registry"
    shutil.copytree(APP_ROOT, work, ignore=IGNORED)
    _git("init", "-q", "--bare", str(bare), cwd=root)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "chat app", cwd=work)
    sha = _git("rev-parse", "HEAD", cwd=work).strip()
    _git("push", "-q", str(bare), "HEAD:refs/heads/main", cwd=work)
    image = f"forge.local/demo/chat-app/backend:{sha}"
    record = registry / "demo" / "chat-app" / "backend" / f"{sha}.json"
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps(
            {"image": image, "repository": "demo/chat-app", "sha": sha, "context": "backend", "git_dir": str(bare)}
        )
    )
    return registry, image


@pytest.fixture(scope="module")
def chat_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from promptship_sandbox import cluster

    bin_dir = cluster.find_binaries()
    require("control plane", bin_dir is not None, "no kube binaries or etcd: run `make cluster-build`")
    registry, image = publish_chat_app(tmp_path_factory.mktemp("chat-app-registry"))
    state = tmp_path_factory.mktemp("chat-app-cluster")
    cp = cluster.start(state, bin_dir=bin_dir, registries=[registry], reuse=False)
    try:
        yield cp, image
    finally:
        cluster.stop(state)


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((APP_ROOT / "k8s" / name).read_text())


def test_backend_manifests_roll_out_and_answer_chat(chat_cluster, llm: LLMStandIn) -> None:  # type: ignore[no-untyped-def]
    from kubernetes import client, config

    from promptship_sandbox.cluster import service_url

    cp, image = chat_cluster
    api = config.new_client_from_config(config_file=str(cp.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"chat-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})  # type: ignore[arg-type]
    try:
        secret = yaml.safe_load((APP_ROOT / "k8s" / "templates" / "secret.yaml").read_text())
        secret["stringData"] = {"LLM_API_BASE": f"{llm.base_url}/v1", "LLM_API_KEY": API_KEY}
        core.create_namespaced_secret(ns, secret)
        deployment = load("backend-deployment.yaml")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        container["image"] = image
        for item in container["env"]:
            if item["name"] == "LLM_MODEL":
                item["value"] = MODEL
        apps.create_namespaced_deployment(ns, deployment)
        core.create_namespaced_service(ns, load("backend-service.yaml"))

        deadline = time.monotonic() + 180
        while True:
            status = apps.read_namespaced_deployment_status("backend", ns).status
            if (status.ready_replicas or 0) >= 1 and (status.updated_replicas or 0) >= 1:
                break
            assert time.monotonic() < deadline, f"backend rollout did not complete: {status}"
            time.sleep(0.5)

        url = service_url(cp.kubeconfig, ns, "backend-service", timeout_s=60)
        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
        llm.script(MODEL, ["Deployed and answering."])
        r = httpx.post(f"{url}/chat", json={"message": "are you deployed?"}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json() == {"response": "Deployed and answering."}
        assert httpx.get(f"{url}/version", timeout=10).status_code == 404  # the demo's change adds it
    finally:
        core.delete_namespace(ns)
        api.close()
