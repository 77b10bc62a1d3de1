"""Written back on the real parts: the chat app on the local forge (its CI builds the images) and the local
control plane (the sandbox kubelet runs them). A change whose health gate fails after merge is rolled back on
the cluster and reverted on the base branch by a merged revert PR."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.dev_cycle import dev_cycle
from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget, DevRequest
from promptship.domain.writeback import REVERT_MARKER_PREFIX
from promptship.settings import Settings
from promptship.wiring import installed
from promptship_sandbox.fakes import FakeHealthProbe, fake_services
from promptship_sandbox.forge import running_forge
from tests.conftest import REPO_ROOT, require
from tests.github.conftest import RecordingClock, client, make_host

pytestmark = [pytest.mark.writeback, pytest.mark.cluster, pytest.mark.forge, pytest.mark.flow]

CHAT_APP = REPO_ROOT / "examples" / "chat-app"
OWNER, NAME = "demo", "chat-app"
REPO = f"{OWNER}/{NAME}"


def _seed_backend(kube: KubeCluster, api_client: Any, target: DeployTarget, registry: Path) -> str:
    """The backend as it runs before the change: its manifests and the image CI built from the seed commit."""
    from kubernetes import client as k8s

    (build,) = sorted((registry / OWNER / NAME / "backend").glob("*.json"))
    image = json.loads(build.read_text())["image"]
    k8s.CoreV1Api(api_client).create_namespaced_secret(
        target.namespace,
        {  # type: ignore[arg-type]
            "metadata": {"name": "litellm-secrets"},
            "stringData": {"LLM_API_BASE": "http://127.0.0.1:9/v1", "LLM_API_KEY": "sk-test-not-used"},
        },
    )
    manifests = [
        doc
        for name in ("backend-deployment.yaml", "backend-service.yaml")
        for doc in yaml.safe_load_all((CHAT_APP / "k8s" / name).read_text())
        if doc
    ]
    kube.apply_manifests(target, manifests)
    assert kube.roll_out(target, image, run_key="seed", timeout_s=180).verdict == "complete"
    return image


def test_a_failed_health_gate_on_the_cluster_is_rolled_back_and_reverted_on_git(
    api_client: Any, control_plane: Any, namespace: str, tmp_path: Path, prefect_harness: None
) -> None:
    require("chat app", (CHAT_APP / "backend" / "Dockerfile").exists(), "examples/chat-app/backend")
    with running_forge(tmp_path / "forge") as forge:
        forge.seed_repository(OWNER, NAME, CHAT_APP)
        assert forge.wait_idle(300)
        control_plane.add_registry(forge.registry_dir)
        kube = KubeCluster(api_client, poll_interval_s=0.3)
        target = DeployTarget(namespace=namespace, deployment="backend", container="backend")
        seed_image = _seed_backend(kube, api_client, target, forge.registry_dir)
        repo = client(forge).get_repo(REPO)
        tree_before = repo.get_branch("main").commit.commit.tree.sha

        settings = Settings(home=tmp_path / "home")
        settings.health.url = "http://127.0.0.1:9/health"  # the probe is scripted: the gate fails after merge
        ports = fake_services(
            settings,
            code_host=make_host(forge, RecordingClock()),
            cluster=kube,
            health=FakeHealthProbe(verdicts=["unhealthy", "healthy"]),
            boundaries={"code_host": "protocol stand-in", "cluster": "real"},
        )
        request = DevRequest(
            prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", repository=REPO, deploy=target, auto_merge=True
        )
        with installed(ports):
            report = dev_cycle(request)

        assert report.outcome == "rolled_back" and report.revert_state == "merged", report
        assert kube.current_image(target) == seed_image  # the cluster runs the seed version again
        (revert,) = [p for p in repo.get_pulls(state="all") if REVERT_MARKER_PREFIX in (p.body or "")]
        assert revert.merged and f"`{seed_image}`" in (revert.body or "")
        assert repo.get_branch("main").commit.commit.tree.sha == tree_before  # git says what runs
