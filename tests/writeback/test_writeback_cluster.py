"""Written back on the real parts: the chat app on the local forge (its CI builds the images) and the local
control plane (the sandbox kubelet runs them). A change whose own code fails the health gate after merge is
rolled back on the cluster and reverted on the base branch by a merged revert PR.

The breakage, as a developer might write it: ``/health`` becomes a deep check that answers 503 while the LLM
endpoint of ``LLM_API_BASE`` cannot be reached, and the kubelet's probes move to a new ``/livez``. The app's
tests stay green (they run without ``LLM_API_BASE``, and the new test expects the 503), the pods start and
turn ready on ``/livez`` — and in the deployed pod, whose ``LLM_API_BASE`` points nowhere reachable, the real
``HttpHealthProbe`` of the pipeline sees 503 on ``/health``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flows.dev_cycle import dev_cycle
from promptship.adapters.github import SystemClock
from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget, DevRequest
from promptship.domain.results import AgentHandle, AgentResult
from promptship.domain.writeback import REVERT_MARKER_PREFIX
from promptship.settings import Settings
from promptship.wiring import build_health_probe, installed
from promptship_sandbox import cluster as sandbox_cluster
from promptship_sandbox.fakes import FakeCodeAgent, fake_services
from promptship_sandbox.forge import running_forge
from tests.conftest import REPO_ROOT, require
from tests.github.conftest import client, make_host

pytestmark = [pytest.mark.writeback, pytest.mark.cluster, pytest.mark.forge, pytest.mark.flow]

CHAT_APP = REPO_ROOT / "examples" / "chat-app"
OWNER, NAME = "demo", "chat-app"
REPO = f"{OWNER}/{NAME}"


DEEP_HEALTH = """    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health", response_model=None)
    async def health() -> dict[str, str] | JSONResponse:
        if cfg.llm_api_base and not _reachable(cfg.llm_api_base):
            return JSONResponse(status_code=503, content={"status": "llm unreachable"})
        return {"status": "ok"}
"""
REACHABLE = '''

def _reachable(url: str) -> bool:
    """Whether the LLM endpoint accepts a TCP connection within a second."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=1.0):
            return True
    except OSError:
        return False
'''
NEW_TESTS = """

def test_livez_answers_ok() -> None:
    with make_client(None) as client:
        assert client.get("/livez").json() == {"status": "ok"}


def test_health_is_503_while_the_llm_cannot_be_reached() -> None:
    with make_client("http://127.0.0.1:9/v1") as client:
        r = client.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "llm unreachable"}
"""


class DeepHealthAgent(FakeCodeAgent):
    """The scripted developer: makes ``/health`` a deep check of the LLM endpoint, adds ``/livez`` with a test
    of each, and points the Deployment's probes at ``/livez`` (code, tests and manifest, like a real change)."""

    def __init__(self) -> None:
        super().__init__(write_files=False)

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        out = super().result(handle, timeout_s=timeout_s)
        ws = Path(self.conversations[handle.conversation_id]["task"].workspace)
        main = ws / "backend" / "app" / "main.py"
        old_health = (
            '    @app.get("/health")\n    async def health() -> dict[str, str]:\n        return {"status": "ok"}\n'
        )
        assert old_health in main.read_text(), "the chat app's /health changed: update this scripted change"
        main.write_text(main.read_text().replace(old_health, DEEP_HEALTH) + REACHABLE)
        tests = ws / "backend" / "tests" / "test_chat.py"
        tests.write_text(tests.read_text() + NEW_TESTS)
        manifest = ws / "k8s" / "backend-deployment.yaml"
        manifest.write_text(manifest.read_text().replace("path: /health", "path: /livez"))
        changed = ("backend/app/main.py", "backend/tests/test_chat.py", "k8s/backend-deployment.yaml")
        return out.model_copy(update={"changed_files": changed})


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


def test_a_change_that_fails_the_health_gate_on_the_cluster_is_rolled_back_and_reverted_on_git(
    api_client: Any, control_plane: Any, namespace: str, tmp_path: Path, prefect_harness: None
) -> None:
    require("chat app", (CHAT_APP / "backend" / "Dockerfile").exists(), "examples/chat-app/backend")
    with running_forge(tmp_path / "forge") as forge:
        forge.seed_repository(OWNER, NAME, CHAT_APP)
        assert forge.wait_idle(300)
        control_plane.add_registry(forge.registry_dir)
        kube = KubeCluster(api_client, poll_interval_s=0.3)
        seed_target = DeployTarget(namespace=namespace, deployment="backend", container="backend")
        seed_image = _seed_backend(kube, api_client, seed_target, forge.registry_dir)
        health_url = sandbox_cluster.service_url(control_plane.kubeconfig, namespace, "backend-service", path="/health")
        target = seed_target.model_copy(update={"health_url": health_url})
        repo = client(forge).get_repo(REPO)
        tree_before = repo.get_branch("main").commit.commit.tree.sha
        assert httpx.get(health_url, timeout=5).status_code == 200  # the seed serves

        settings = Settings(home=tmp_path / "home")
        ports = fake_services(
            settings,
            # real time for the CI waits: the chat app's CI takes real seconds (virtual time ran out under load)
            code_host=make_host(forge, SystemClock()),  # type: ignore[arg-type]
            cluster=kube,
            agent=DeepHealthAgent(),
            health=build_health_probe(settings),  # the real HttpHealthProbe, on the Service's URL
            boundaries={"code_host": "protocol stand-in", "cluster": "real", "health": "real"},
        )
        request = DevRequest(
            prompt=f"Make /health check the LLM endpoint ({uuid.uuid4().hex[:8]})",
            repository=REPO,
            deploy=target,
            auto_merge=True,
        )
        with installed(ports):
            report = dev_cycle(request)

        assert report.outcome == "rolled_back" and report.revert_state == "merged", report
        assert kube.current_image(target) == seed_image  # the cluster runs the seed version again
        (revert,) = [p for p in repo.get_pulls(state="all") if REVERT_MARKER_PREFIX in (p.body or "")]
        assert revert.merged and f"`{seed_image}`" in (revert.body or "")
        assert repo.get_branch("main").commit.commit.tree.sha == tree_before  # git says what runs

        # the change passed its CI and was merged: the breakage showed only in the deployed pod
        (original,) = [p for p in repo.get_pulls(state="all") if p.number != revert.number]
        assert original.merged
        steps = ports.sink.attempt_steps(report.attempt_id)
        records = {r.step: r for r in steps}
        assert [r.verdict for r in steps if r.name == "wait_for_ci"] == ["passed"]  # green CI, first round
        assert records["roll_out"].verdict == "complete"  # the pods started and turned ready (on /livez)
        assert records["check_health"].verdict == "unhealthy" and "HTTP 503" in (records["check_health"].error or "")
        assert "HTTP 503" in (revert.body or "")  # the failing probes are the revert's evidence
        # the seed version serves again over HTTP: its /health answers 200 and it has no /livez
        assert httpx.get(health_url, timeout=5).status_code == 200
        assert httpx.get(health_url.replace("/health", "/livez"), timeout=5).status_code == 404
