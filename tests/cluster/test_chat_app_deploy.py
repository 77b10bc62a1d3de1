"""The seed chat app's backend, from its own manifests, deployed on the local control plane: the sandbox
kubelet runs `python -m app` from the published commit and the health gate reaches the real process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from promptship.adapters.health import HttpHealthProbe
from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget
from promptship_sandbox.cluster import service_url
from promptship_sandbox.sample_app import publish_directory
from tests.conftest import REPO_ROOT, require

pytestmark = pytest.mark.cluster

CHAT_APP = REPO_ROOT / "examples" / "chat-app"


def test_chat_app_backend_rolls_out_and_answers_health(
    api_client: Any, control_plane: Any, namespace: str, tmp_path: Path
) -> None:
    manifests_dir = CHAT_APP / "k8s"
    require("chat app", (CHAT_APP / "backend" / "Dockerfile").exists(), "examples/chat-app/backend")
    published = publish_directory(CHAT_APP, tmp_path / "forge", "demo", "chat-app")
    control_plane.add_registry(tmp_path / "forge" / "registry")
    from kubernetes import client

    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "litellm-secrets"},
            "stringData": {"LLM_API_BASE": "http://127.0.0.1:9/v1", "LLM_API_KEY": "sk-test-not-used"},
        },
    )
    manifests = [
        doc
        for name in ("backend-deployment.yaml", "backend-service.yaml")
        for doc in yaml.safe_load_all((manifests_dir / name).read_text())
        if doc
    ]
    kube = KubeCluster(api_client, poll_interval_s=0.3)
    target = DeployTarget(namespace=namespace, deployment="backend", container="backend")

    kube.apply_manifests(target, manifests)
    result = kube.roll_out(target, published["backend"].image, run_key="chat", timeout_s=180)

    assert result.verdict == "complete", result
    url = service_url(control_plane.kubeconfig, namespace, "backend-service")
    with httpx.Client() as http:
        gate = HttpHealthProbe(http, consecutive=3, retries=10, interval_s=0.2).check(f"{url}/health")
        assert gate.verdict == "healthy", gate
        assert http.get(f"{url}/health").json() == {"status": "ok"}
