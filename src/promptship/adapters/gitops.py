"""``GitOpsCluster``: the ``Cluster`` port in GitOps mode — promptship commits, the GitOps controller deploys.

- ``roll_out``: sets the container image in the Deployment manifest under ``manifests_path`` of the GitOps
  repository, commits (``Promptship-Run-Key`` trailer; the same run with the same image commits nothing) and
  pushes; then waits until the cluster runs that commit: the Argo CD ``Application``'s ``status.sync.revision``
  is the commit, ``Synced``, and ``status.health`` says ``Healthy`` (complete) or ``Degraded`` (stalled); when
  no Application is named, the Deployment's own rollout status decides.
- ``rollback``: ``git revert`` of the last deploy commit, pushed, then the same wait.
- ``apply_manifests``: guard rails and a server-side dry run (through ``KubeCluster``), then one commit.

Exactly one deployer per environment: in GitOps mode promptship never writes to the cluster itself.
Git runs as the ``git`` command; a token reaches it only as an ``http.extraHeader`` in its environment.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from promptship.adapters.github import git_auth_env
from promptship.adapters.kube import KubeCluster
from promptship.domain.request import RUN_KEY_ANNOTATION, DeployTarget
from promptship.domain.results import ApplyResult, RollbackResult, RolloutResult
from promptship.domain.rollout import deployment_view, manifest_violations, rollout_status
from promptship.errors import ClusterError

RUN_KEY_TRAILER = "Promptship-Run-Key"


class GitOpsCluster:
    """The ``Cluster`` port in GitOps mode (Argo CD or the sandbox GitOps syncer applies the commits)."""

    def __init__(
        self,
        kube: KubeCluster,
        *,
        repo_url: str,
        workdir: Path,
        manifests_path: str = "k8s",
        branch: str = "main",
        token: SecretStr | None = None,
        application: str | None = None,
        application_namespace: str = "argocd",
        author: tuple[str, str] = ("promptship", "promptship@users.noreply.localhost"),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.5,
    ) -> None:
        """``kube``: reads the cluster (status, dry runs; never writes); ``repo_url``: the GitOps repository;
        ``application``: the Argo CD Application that deploys ``manifests_path`` (None: watch the Deployment)."""
        self.kube = kube
        self.repo_url = repo_url
        self.workdir = workdir
        self.manifests_path = manifests_path.strip("/")
        self.branch = branch
        self.token = token
        self.application = application
        self.application_namespace = application_namespace
        self.author = author
        self.clock = clock
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s

    # --------------------------------------------------------------------------------------------- git

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        name, email = self.author
        env.update(
            GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email,
            GIT_TERMINAL_PROMPT="0",
        )  # fmt: skip
        if self.token is not None:
            env.update(git_auth_env(self.token.get_secret_value()))
        return env

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd or self.workdir, env=self._env(), capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"git {args[0]} timed out", retryable=True) from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise ClusterError(f"git {args[0]} failed: {detail[0][:300]}", retryable=args[0] in ("fetch", "push"))
        return done.stdout

    def _sync_checkout(self) -> None:
        if not (self.workdir / ".git").exists():
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "-q", "--branch", self.branch, self.repo_url, str(self.workdir), cwd=self.workdir.parent)
        self._git("fetch", "-q", "origin", self.branch)
        self._git("checkout", "-q", "-B", self.branch, f"origin/{self.branch}")
        self._git("reset", "-q", "--hard", f"origin/{self.branch}")

    def _commit_and_push(self, message: str, attempt: Callable[[], bool]) -> str | None:
        """Run ``attempt`` (edits the checkout; False = nothing to change) on a fresh checkout, commit, push;
        on a race with another pusher, start over. Returns the new commit, or None when nothing changed."""
        for _ in range(3):
            self._sync_checkout()
            if not attempt():
                return None
            self._git("add", "-A", self.manifests_path)
            if not self._git("status", "--porcelain", self.manifests_path).strip():
                return None
            self._git("commit", "-q", "-m", message)
            try:
                self._git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
            except ClusterError:
                continue
            return self._git("rev-parse", "HEAD").strip()
        # The three pushes were the retries: final for the step layer, which would multiply them (CONTRACTS.md).
        raise ClusterError(f"could not push to {self.branch} of the GitOps repository after 3 attempts")

    # --------------------------------------------------------------------------------------- manifests

    def _manifest_files(self) -> list[Path]:
        root = self.workdir / self.manifests_path
        return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())

    def _set_image(self, target: DeployTarget, image: str, run_key: str) -> bool:
        for f in self._manifest_files():
            docs = list(yaml.safe_load_all(f.read_text()))
            for doc in docs:
                if not (isinstance(doc, dict) and doc.get("kind") == "Deployment"):
                    continue
                if doc.get("metadata", {}).get("name") != target.deployment:
                    continue
                containers = doc["spec"]["template"]["spec"].get("containers") or []
                match = [c for c in containers if c.get("name") == target.container]
                if not match:
                    raise ClusterError(
                        f"{f.name}: deployment {target.deployment} has no container {target.container!r}"
                    )
                annotations = doc.setdefault("metadata", {}).setdefault("annotations", {}) or {}
                if match[0].get("image") == image and annotations.get(RUN_KEY_ANNOTATION) == run_key:
                    return False
                match[0]["image"] = image
                annotations[RUN_KEY_ANNOTATION] = run_key
                doc["metadata"]["annotations"] = annotations
                f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
                return True
        raise ClusterError(
            f"no Deployment {target.deployment!r} under {self.manifests_path}/ of the GitOps repository; "
            "commit its manifests first (apply_manifests)"
        )

    def _image_in_repo(self, target: DeployTarget) -> str | None:
        for f in self._manifest_files():
            for doc in yaml.safe_load_all(f.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                    if doc.get("metadata", {}).get("name") == target.deployment:
                        for c in doc["spec"]["template"]["spec"].get("containers") or []:
                            if c.get("name") == target.container:
                                return c.get("image")
        return None

    # ----------------------------------------------------------------------------------------------- port

    def apply_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> ApplyResult:
        """Guard rails and a server-side dry run, then commit the manifests (one file per object)."""
        problems = manifest_violations(manifests, target.namespace)
        if problems:
            raise ClusterError("manifests refused by the guard rails, nothing committed: " + "; ".join(problems))
        self.kube.validate_manifests(target, manifests)

        def write() -> bool:
            root = self.workdir / self.manifests_path
            root.mkdir(parents=True, exist_ok=True)
            for m in manifests:
                name = f"{m['kind'].lower()}-{m['metadata']['name']}.yaml"
                (root / name).write_text(yaml.safe_dump(m, sort_keys=False))
            return True

        self._commit_and_push(f"promptship: manifests for {target.namespace}/{target.deployment}", write)
        return ApplyResult(applied=tuple(f"{m['kind']}/{m['metadata']['name']}" for m in manifests))

    def current_image(self, target: DeployTarget) -> str | None:
        """The image the cluster runs now (not what the repository says)."""
        return self.kube.current_image(target)

    def roll_out(self, target: DeployTarget, image: str, *, run_key: str, timeout_s: float) -> RolloutResult:
        """Commit the new image to the GitOps repository and wait until the cluster runs that commit."""
        t0 = self.clock()
        message = (
            f"promptship: deploy {image} to {target.namespace}/{target.deployment}\n\n{RUN_KEY_TRAILER}: {run_key}"
        )
        commit = self._commit_and_push(message, lambda: self._set_image(target, image, run_key))
        if commit is None:
            commit = self._git("rev-parse", "HEAD").strip()
        verdict, reason, events = self._wait(target, commit, image, t0, timeout_s)
        return RolloutResult(
            verdict=verdict, image=image, reason=f"{reason} (commit {commit[:12]})", events=events,
            waited_s=round(self.clock() - t0, 3),
        )  # fmt: skip

    def rollback(self, target: DeployTarget, *, timeout_s: float) -> RollbackResult:
        """Revert the last deploy commit, push, and wait until the cluster runs the reverted state."""
        t0 = self.clock()
        self._sync_checkout()
        last = self._git("log", "-1", "--format=%H", f"--grep=^{RUN_KEY_TRAILER}:", "--", self.manifests_path).strip()
        if not last:
            return RollbackResult(verdict="failed", detail="no deploy commit to revert in the GitOps repository")

        def revert() -> bool:
            self._git("revert", "--no-edit", "--no-commit", last)
            return True

        commit = self._commit_and_push(f"promptship: revert {last[:12]} (rollback)", revert)
        if commit is None:
            return RollbackResult(verdict="failed", detail=f"reverting {last[:12]} changed nothing")
        image = self._image_in_repo(target) or ""
        verdict, reason, _ = self._wait(target, commit, image, t0, timeout_s)
        return RollbackResult(
            verdict="restored" if verdict == "complete" else "failed",
            restored_image=image or None,
            time_to_restore_s=round(self.clock() - t0, 3),
            detail=f"revert commit {commit[:12]}: {reason}",
        )

    # ----------------------------------------------------------------------------------------------- wait

    def _wait(
        self, target: DeployTarget, commit: str, image: str, t0: float, timeout_s: float
    ) -> tuple[Any, str, tuple[str, ...]]:
        while True:
            verdict, reason = self._observe(target, commit, image)
            if verdict != "progressing":
                events = () if verdict == "complete" else self.kube.explain(target)
                return verdict, reason, events
            if self.clock() - t0 >= timeout_s:
                return "stalled", f"timed out after {timeout_s:g} s: {reason}", self.kube.explain(target)
            self.sleep(self.poll_interval_s)

    def _observe(self, target: DeployTarget, commit: str, image: str) -> tuple[str, str]:
        if self.application:
            app = self.kube.read_object(
                f"/apis/argoproj.io/v1alpha1/namespaces/{self.application_namespace}/applications/{self.application}"
            )
            if app is None:
                raise ClusterError(f"Argo CD Application {self.application_namespace}/{self.application} not found")
            return application_verdict(app, commit)
        dep = self.kube.read_object(f"/apis/apps/v1/namespaces/{target.namespace}/deployments/{target.deployment}")
        if dep is None:
            return "progressing", "waiting for the GitOps controller to create the deployment"
        containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        if not any(c.get("name") == target.container and c.get("image") == image for c in containers):
            return "progressing", f"waiting for the GitOps controller to apply {image}"
        status = rollout_status(deployment_view(dep))
        crashing = self.kube.crash_loop(target, dep) if status.state == "progressing" else None
        if crashing is not None:
            return "failed", crashing
        return status.state, status.reason


def application_verdict(app: Mapping[str, Any], commit: str) -> tuple[str, str]:
    """complete | stalled | failed | progressing from an Argo CD Application's status, for ``commit``."""
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    op = status.get("operationState") or {}
    if sync.get("revision") != commit:
        if op.get("phase") in ("Failed", "Error") and (op.get("syncResult") or {}).get("revision") == commit:
            return "failed", f"sync of {commit[:12]} {op.get('phase')}: {op.get('message', '')}"
        return "progressing", f"Application at {str(sync.get('revision'))[:12]}, waiting for {commit[:12]}"
    if sync.get("status") != "Synced":
        return "progressing", f"sync status {sync.get('status')}"
    h = health.get("status")
    if h == "Healthy":
        return "complete", "Application Synced and Healthy"
    if h == "Degraded":
        return "stalled", f"Application Degraded: {health.get('message', '')}".strip()
    return "progressing", f"Application health {h}"
