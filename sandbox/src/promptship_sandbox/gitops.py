"""The sandbox GitOps syncer: plays Argo CD's part on the local control plane.

For every Argo CD ``Application`` (``argoproj.io/v1alpha1``, CRD from ``specs/crds/``) in its namespace it
mirrors ``spec.source.repoURL``, reads the YAML under ``spec.source.path`` at ``spec.source.targetRevision``,
server-side applies it to ``spec.destination.namespace`` when the commit changed (through ``KubeCluster``: guard
rails and an all-or-nothing dry run first), and writes the Application's ``status`` the way Argo CD does:
``sync`` (Synced/OutOfSync + revision), ``health`` (Healthy/Progressing/Degraded from the Deployments' rollout
status), ``operationState``, ``history``, ``resources``, ``reconciledAt``.

    python -m promptship_sandbox.gitops --kubeconfig K --cache-dir D [--namespace argocd] [--interval 1]

Limits: no pruning or self-heal of drift (only new commits are applied), one source per Application, plain
YAML directories (no Helm or Kustomize), token auth only through ``PROMPTSHIP_GITOPS_TOKEN``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget
from promptship.domain.rollout import deployment_view, rollout_status
from promptship.errors import ClusterError

log = logging.getLogger("promptship.gitops")
APPS = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/applications"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitOpsSyncer:
    """Applies the commits Argo CD Applications point at, and reports their status."""

    def __init__(self, api: Any, *, cache_dir: Path, namespace: str = "argocd", token: str | None = None) -> None:
        self.kube = KubeCluster(api, poll_interval_s=0.2)
        self.cache_dir = cache_dir
        self.namespace = namespace
        self.token = token
        self.applied: dict[str, str] = {}  # application name -> commit applied
        self.started: dict[str, str] = {}
        cache_dir.mkdir(parents=True, exist_ok=True)

    # -- git

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_TERMINAL_PROMPT"] = "0"
        if self.token:
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                       GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")  # fmt: skip
        return env

    def _git(self, *args: str, git_dir: Path | None = None) -> str:
        argv = ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ClusterError(f"git {args[0]}: {(done.stderr or done.stdout).strip()[-300:]}", retryable=True)
        return done.stdout

    def _mirror(self, repo_url: str) -> Path:
        git_dir = self.cache_dir / hashlib.sha256(repo_url.encode()).hexdigest()[:16]
        if not git_dir.exists():
            self._git("clone", "-q", "--mirror", repo_url, str(git_dir))
        else:
            self._git("fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/heads/*", git_dir=git_dir)
        return git_dir

    def _manifests(self, git_dir: Path, commit: str, path: str) -> list[dict[str, Any]]:
        names = self._git("ls-tree", "-r", "--name-only", commit, "--", path, git_dir=git_dir).split()
        docs: list[dict[str, Any]] = []
        for name in sorted(names):
            if name.endswith((".yaml", ".yml")):
                text = self._git("show", f"{commit}:{name}", git_dir=git_dir)
                docs.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind"))
        return docs

    # -- one application

    def sync_application(self, app: dict[str, Any]) -> None:
        name = app["metadata"]["name"]
        spec = app.get("spec") or {}
        source = spec.get("source") or {}
        dest = spec.get("destination") or {}
        namespace = dest.get("namespace") or "default"
        revision = source.get("targetRevision") or "HEAD"
        git_dir = self._mirror(source["repoURL"])
        ref = "HEAD" if revision == "HEAD" else revision
        commit = self._git("rev-parse", f"{ref}^{{commit}}", git_dir=git_dir).strip()
        manifests = self._manifests(git_dir, commit, source.get("path", "."))
        target = DeployTarget(namespace=namespace)
        op_phase, op_message = "Succeeded", "successfully synced (all tasks run)"
        if self.applied.get(name) != commit:
            self.started[name] = _now()
            try:
                self.kube.apply_manifests(target, manifests)
                self.applied[name] = commit
            except ClusterError as exc:
                op_phase, op_message = "Failed", str(exc)
                self.applied.pop(name, None)
        resources, health, health_message = self._health(namespace, manifests)
        synced = self.applied.get(name) == commit
        status = dict(app.get("status") or {})
        history = list(status.get("history") or [])
        if synced and (not history or history[-1].get("revision") != commit):
            history.append(
                {
                    "id": (history[-1]["id"] + 1) if history else 0,
                    "revision": commit,
                    "deployedAt": _now(),
                    "deployStartedAt": self.started.get(name, _now()),
                    "source": source,
                }  # fmt: skip
            )
        status.update(
            {
                "sync": {
                    "status": "Synced" if synced else "OutOfSync",
                    "revision": commit if synced else status.get("sync", {}).get("revision", ""),
                    "comparedTo": {"source": source, "destination": dest},
                },
                "health": {"status": health, **({"message": health_message} if health_message else {})},
                "operationState": {
                    "operation": {"sync": {"revision": commit}},
                    "phase": op_phase,
                    "message": op_message,
                    "startedAt": self.started.get(name, _now()),
                    "finishedAt": _now(),
                    "syncResult": {"revision": commit, "source": source},
                },
                "history": history[-10:],
                "resources": resources,
                "reconciledAt": _now(),
                "sourceType": "Directory",
            }
        )
        if status != app.get("status"):
            app["status"] = status
            try:  # a conflicting write is retried on the next tick
                # a PUT carrying the resourceVersion read: a concurrent edit makes it fail with 409
                self.kube.api_request("PUT", f"{APPS.format(ns=self.namespace)}/{name}", body=app)
            except ClusterError as exc:
                log.warning("status of %s not written: %s", name, exc)

    def _health(self, namespace: str, manifests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, str]:
        resources = []
        worst, message = "Healthy", ""
        for m in manifests:
            group, _, version = m.get("apiVersion", "v1").rpartition("/")
            res: dict[str, Any] = {"version": version, "kind": m["kind"], "namespace": namespace,
                                   "name": m.get("metadata", {}).get("name", ""), "status": "Synced"}  # fmt: skip
            if group:  # the core group is left out (an empty string is serialised as null by the client)
                res["group"] = group
            if m["kind"] == "Deployment":
                live = self.kube.read_object(f"/apis/apps/v1/namespaces/{namespace}/deployments/{res['name']}")
                state = rollout_status(deployment_view(live)).state if live else "progressing"
                h = {"complete": "Healthy", "progressing": "Progressing"}.get(state, "Degraded")
                res["health"] = {"status": h}
                if h == "Degraded" or (h == "Progressing" and worst == "Healthy"):
                    worst = h
                    message = rollout_status(deployment_view(live)).reason if live else "not created yet"
            resources.append(res)
        return resources, worst, message

    def sync_once(self) -> None:
        listing = self.kube.api_request("GET", APPS.format(ns=self.namespace))
        for app in listing.get("items", []):
            try:
                self.sync_application(app)
            except ClusterError as exc:
                log.warning("application %s: %s", app["metadata"]["name"], exc)

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.sync_once()
            except ClusterError as exc:
                log.warning("sync failed: %s", exc)
            stop.wait(interval_s)


@contextlib.contextmanager
def running_gitops_syncer(
    api: Any, cache_dir: Path, *, namespace: str = "argocd", interval_s: float = 0.5, token: str | None = None
) -> Iterator[GitOpsSyncer]:
    """The syncer in a background thread for the block."""
    syncer = GitOpsSyncer(api, cache_dir=cache_dir, namespace=namespace, token=token)
    stop = threading.Event()
    thread = threading.Thread(target=syncer.run, args=(stop, interval_s), daemon=True, name="gitops-syncer")
    thread.start()
    try:
        yield syncer
    finally:
        stop.set()
        thread.join(timeout=10)


def install_application_crd(api: Any, crd_file: Path, *, timeout_s: float = 30.0) -> None:
    """Create the Argo CD Application CRD (if absent) and wait until it is Established."""
    kube = KubeCluster(api)
    crd = yaml.safe_load(crd_file.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    name = crd["metadata"]["name"]
    if kube.read_object(f"{path}/{name}") is None:
        kube.api_request("POST", path, body=crd)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = kube.read_object(f"{path}/{name}") or {}
        if any(c.get("type") == "Established" and c.get("status") == "True"
               for c in got.get("status", {}).get("conditions") or []):  # fmt: skip
            return
        time.sleep(0.2)
    raise ClusterError(f"CRD {name} not established within {timeout_s:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptship_sandbox.gitops")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--namespace", default="argocd")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gitops %(levelname)s %(message)s")
    from kubernetes import config

    api = config.new_client_from_config(config_file=args.kubeconfig)
    syncer = GitOpsSyncer(api, cache_dir=args.cache_dir, namespace=args.namespace,
                          token=os.environ.get("PROMPTSHIP_GITOPS_TOKEN"))  # fmt: skip
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    syncer.run(stop, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
