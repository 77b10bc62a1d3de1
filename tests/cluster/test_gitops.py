"""GitOps mode on the local control plane: GitOpsCluster commits, the sandbox syncer (Argo CD's part) applies
and reports an Application status shaped by Argo CD's CRD; rollback is a revert commit."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import SecretStr

from promptship.adapters.gitops import GitOpsCluster
from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget
from promptship_sandbox.cluster import service_url
from promptship_sandbox.gitops import install_application_crd, running_gitops_syncer
from promptship_sandbox.sample_app import SampleApps, sample_manifests
from tests.cluster.conftest import wait_for_version
from tests.conftest import SHARED, require

pytestmark = pytest.mark.cluster

CRD = SHARED / "specs" / "crds" / "argo-cd-v3.5.1-application-crd.yaml"
TIMEOUT_S = 90.0


@pytest.fixture(params=["file", pytest.param("forge", marks=pytest.mark.forge)])
def gitops_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """The GitOps repository (URL, token): a bare repo over git's file protocol, or one on the local forge
    over smart HTTP with the forge's token."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "README.md").write_text("environment: sandbox\n")
    if request.param == "forge":
        from promptship_sandbox.forge import running_forge

        with running_forge(tmp_path / "forge", run_ci=False) as forge:
            forge.seed_repository("demo", "gitops", seed)
            yield forge.git_url("demo", "gitops"), forge.token
        return
    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    for cmd in (["add", "-A"], ["commit", "-q", "-m", "init"], ["push", "-q", str(bare), "HEAD:refs/heads/main"]):
        subprocess.run(["git", *cmd], cwd=seed, check=True, env=env)
    yield str(bare), None


def test_gitops_deploys_through_the_syncer_and_reverts_a_bad_image(
    api_client: Any, control_plane: Any, app_registry: SampleApps, gitops_repo: tuple[str, str | None], tmp_path: Path
) -> None:
    repo_url, token = gitops_repo
    require("Argo CD Application CRD", CRD.exists(), f"{CRD} missing")
    from kubernetes import client

    install_application_crd(api_client, CRD)
    core = client.CoreV1Api(api_client)
    app_ns, argocd = f"g-{uuid.uuid4().hex[:6]}", "argocd"
    for ns in (app_ns, argocd):
        if ns not in [n.metadata.name for n in core.list_namespace().items]:
            core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
    app_name = f"chat-{app_ns}"
    kube = KubeCluster(api_client, poll_interval_s=0.3)
    kube.api_request(  # the Application, as `oc apply -f argocd/application.yaml` would create it
        "POST",
        f"/apis/argoproj.io/v1alpha1/namespaces/{argocd}/applications",
        body={
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": app_name, "namespace": argocd},
            "spec": {
                "project": "default",
                "source": {"repoURL": repo_url, "path": "k8s", "targetRevision": "main"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": app_ns},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        },
    )
    v1, v2, bad = app_registry.publish("ok"), app_registry.publish("ok"), app_registry.publish("unready")
    target = DeployTarget(namespace=app_ns, deployment="web", container="app")
    gitops = GitOpsCluster(
        kube,
        repo_url=repo_url,
        token=SecretStr(token) if token else None,
        workdir=tmp_path / "checkout",
        application=app_name,
        poll_interval_s=0.3,
    )

    with running_gitops_syncer(api_client, tmp_path / "syncer-cache", namespace=argocd, token=token):
        gitops.apply_manifests(target, sample_manifests(v1.image, progress_deadline_s=10))
        first = gitops.roll_out(target, v1.image, run_key="g1", timeout_s=TIMEOUT_S)
        assert first.verdict == "complete", first
        second = gitops.roll_out(target, v2.image, run_key="g2", timeout_s=TIMEOUT_S)
        assert second.verdict == "complete", second
        url = service_url(control_plane.kubeconfig, app_ns, "web")
        assert wait_for_version(url, v2.sha) == v2.sha
        assert kube.current_image(target) == v2.image

        broken = gitops.roll_out(target, bad.image, run_key="g3", timeout_s=TIMEOUT_S)
        assert broken.verdict == "stalled", broken
        restored = gitops.rollback(target, timeout_s=TIMEOUT_S)
        assert restored.verdict == "restored", restored
        assert restored.restored_image == v2.image
        assert kube.current_image(target) == v2.image
        assert wait_for_version(url, v2.sha) == v2.sha

    checkout = tmp_path / "checkout"  # the adapter's clone, refreshed: what the repository holds now
    subprocess.run(["git", "-C", str(checkout), "fetch", "-q", "origin"], check=True, env=_git_env(token))
    log = subprocess.run(
        ["git", "-C", str(checkout), "log", "--format=%s", "origin/main"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert log[0].startswith("promptship: revert") and bad.image in log[1]
    app = kube.read_object(f"/apis/argoproj.io/v1alpha1/namespaces/{argocd}/applications/{app_name}")
    assert app is not None
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "origin/main"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert app["status"]["sync"] == {**app["status"]["sync"], "status": "Synced", "revision": head}
    assert app["status"]["health"]["status"] == "Healthy"
    schema = _without_nulls(yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    jsonschema.validate(app["status"], schema["properties"]["status"])  # the status is shaped by Argo's CRD


def _git_env(token: str | None) -> dict[str, str]:
    import base64
    import os

    env = dict(os.environ)
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")  # fmt: skip
    return env


def _without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node
