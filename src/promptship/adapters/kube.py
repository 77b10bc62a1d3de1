"""``KubeCluster``: the ``Cluster`` port on the Kubernetes API, through the official ``kubernetes`` client.

- ``apply_manifests``: guard rails first (``domain.rollout.manifest_violations``), then a server-side dry run of
  every manifest (server-side apply, ``dryRun=All``) and only if all pass, the real apply: all or nothing.
- ``roll_out``: one rollout at a time per Deployment (a ``coordination.k8s.io/v1`` Lease taken by
  compare-and-swap on its resourceVersion, renewed while waiting, released at the end); sets the container's
  image and the run-key annotation (a second call of the same run with the same image does not roll again);
  waits with a poll loop on an injected clock until ``domain.rollout.rollout_status`` decides, and explains a
  failed verdict with the events and container states of the new ReplicaSet's pods.
- ``rollback``: what ``kubectl rollout undo`` does: the previous ReplicaSet's pod template goes back into the
  Deployment; then waits until complete and measures the time to restore.

Every ``kubernetes``/``urllib3`` exception becomes a ``ClusterError`` here, once (retryable for 5xx, 429 and
transport errors; Retry-After read by ``domain.retrying``). No request is retried here — that is the step
layer's (``wiring`` turns urllib3's own connection retries off). Vendor objects never leave this module.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from promptship.domain.request import RUN_KEY_ANNOTATION, DeployTarget
from promptship.domain.results import ApplyResult, RollbackResult, RolloutResult
from promptship.domain.retrying import retry_after_s
from promptship.domain.rollout import (
    REVISION_ANNOTATION,
    RevisionTemplate,
    RolloutStatus,
    crash_loop,
    deployment_view,
    lease_free,
    manifest_violations,
    previous_revision,
    rollout_status,
    template_for_undo,
)
from promptship.errors import ClusterError

FIELD_MANAGER = "promptship"
LEASE_PREFIX = "promptship-deploy-"
CHANGE_CAUSE = "kubernetes.io/change-cause"

# kind -> (API prefix, plural) for the allowlisted kinds (guard rails keep everything else out)
_RESOURCES: dict[str, str] = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Ingress": "ingresses",
    "Route": "routes",
    "HTTPRoute": "httproutes",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
}


def _api_prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _micro(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _container_image(dep: Mapping[str, Any], container: str) -> str | None:
    for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        if c.get("name") == container:
            return c.get("image")
    return None


class KubeCluster:
    """The ``Cluster`` port on a Kubernetes API server (push mode)."""

    def __init__(
        self,
        api: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_interval_s: float = 0.5,
        lease_duration_s: int = 30,
        lease_wait_s: float = 600.0,
        request_timeout_s: float = 30.0,
        crash_loop_restarts: int = 3,
    ) -> None:
        """``api``: a ready ``kubernetes.client.ApiClient`` (``wiring.py`` builds it from the kubeconfig or the
        in-cluster config). ``crash_loop_restarts``: a rollout fails as soon as a new pod's container has been
        restarted this many times and is not running (``domain.rollout.crash_loop``); 0 waits for the verdict
        of the progress deadline or the timeout, as ``kubectl rollout status`` does."""
        self.api = api
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.poll_interval_s = poll_interval_s
        self.lease_duration_s = lease_duration_s
        self.lease_wait_s = lease_wait_s
        self.request_timeout_s = request_timeout_s
        self.crash_loop_restarts = crash_loop_restarts
        self.identity = f"{socket.gethostname()}"

    # ------------------------------------------------------------------------------------------ HTTP layer

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        what: str = "",
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            params = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(*params, _request_timeout=self.request_timeout_s)
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=resp.data.decode(errors="replace"), data=None)
        except ApiException as exc:
            raise _translate(exc, what or f"{method} {path}") from None
        except (Urllib3Error, OSError) as exc:
            raise ClusterError(
                f"{what or method + ' ' + path}: API server unreachable ({type(exc).__name__})", retryable=True
            ) from None
        return json.loads(resp.data) if resp.data else {}

    def api_request(
        self, method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """One JSON request to an API path (for sandbox tools and tests: Applications, CRDs, RBAC checks);
        errors become ClusterError like every other call."""
        return self._request(method, path, body=body, content_type=content_type)

    def _deployment_path(self, target: DeployTarget) -> str:
        return f"/apis/apps/v1/namespaces/{target.namespace}/deployments/{target.deployment}"

    def _get_deployment(self, target: DeployTarget) -> dict[str, Any] | None:
        try:
            return self._request("GET", self._deployment_path(target), what=f"read deployment {target.deployment}")
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    # ---------------------------------------------------------------------------------------------- apply

    def apply_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> ApplyResult:
        """Guard rails, then a server-side dry run of every manifest, then server-side apply of all — or none
        (ClusterError naming every manifest that failed)."""
        prepared = self.validate_manifests(target, manifests)
        applied = []
        for m in prepared:
            self._apply_one(m, target.namespace, dry_run=False)
            applied.append(f"{m['kind']}/{m['metadata']['name']}")
        return ApplyResult(applied=tuple(applied))

    def validate_manifests(self, target: DeployTarget, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Guard rails and a server-side dry run of every manifest; applies nothing. Returns the manifests as
        they would be applied; raises ClusterError naming every problem."""
        problems = manifest_violations(manifests, target.namespace)
        if problems:
            raise ClusterError("manifests refused by the guard rails, nothing applied: " + "; ".join(problems))
        prepared = [_prepare(m, target.namespace) for m in manifests]
        failures = []
        for m in prepared:
            try:
                self._apply_one(m, target.namespace, dry_run=True)
            except ClusterError as exc:
                if exc.retryable:
                    raise
                failures.append(f"{m['kind']}/{m['metadata']['name']}: {exc}")
        if failures:
            raise ClusterError("server-side dry run failed, nothing applied: " + "; ".join(failures))
        return prepared

    def read_object(self, path: str) -> dict[str, Any] | None:
        """GET an API path (e.g. an Argo CD Application); None when it does not exist."""
        try:
            return self._request("GET", path, what=f"read {path.rsplit('/', 2)[-2]}")
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def crash_loop(self, target: DeployTarget, dep: Mapping[str, Any]) -> str | None:
        """Why the rollout of ``dep`` (the Deployment as read) has failed already: its pods crash-loop."""
        return self._crash_loop(target, dep)

    def explain(self, target: DeployTarget) -> tuple[str, ...]:
        """Events and container states of the Deployment's newest pods (why a rollout is not available)."""
        return self._explain(target, self._get_deployment(target))

    def _apply_one(self, manifest: dict[str, Any], namespace: str, *, dry_run: bool) -> dict[str, Any]:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        path = f"{_api_prefix(manifest['apiVersion'])}/namespaces/{namespace}/{_RESOURCES[kind]}/{quote(name, safe='')}"
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self._request(
            "PATCH",
            path,
            body=manifest,
            query=query,
            content_type="application/apply-patch+yaml",
            what=f"{'dry-run ' if dry_run else ''}apply {kind}/{name}",
        )

    # -------------------------------------------------------------------------------------------- rollout

    def current_image(self, target: DeployTarget) -> str | None:
        """The image of the target container now, or None when the Deployment does not exist."""
        dep = self._get_deployment(target)
        return _container_image(dep, target.container) if dep else None

    def roll_out(self, target: DeployTarget, image: str, *, run_key: str, timeout_s: float) -> RolloutResult:
        """Set the image (once per run key) under the Deployment's lease and wait for the rollout's verdict."""
        t0 = self.clock()
        with self.deploy_lease(target, holder=f"run:{run_key}"):
            dep = self._get_deployment(target)
            if dep is None:
                raise ClusterError(
                    f"deployment {target.namespace}/{target.deployment} not found: apply its manifests first",
                    status=404,
                )
            current = _container_image(dep, target.container)
            if current is None:
                names = [c.get("name") for c in dep["spec"]["template"]["spec"].get("containers") or []]
                raise ClusterError(
                    f"deployment {target.deployment} has no container {target.container!r} (it has {names}); "
                    "set DeployTarget.container"
                )
            annotations = dep.get("metadata", {}).get("annotations") or {}
            found = current == image and annotations.get(RUN_KEY_ANNOTATION) == run_key
            if not found:
                patch = {
                    "metadata": {
                        "annotations": {RUN_KEY_ANNOTATION: run_key, CHANGE_CAUSE: f"promptship run {run_key}: {image}"}
                    },
                    "spec": {"template": {"spec": {"containers": [{"name": target.container, "image": image}]}}},
                }
                self._request(
                    "PATCH",
                    self._deployment_path(target),
                    body=patch,
                    content_type="application/strategic-merge-patch+json",
                    what=f"set image of {target.deployment}",
                )
            status, dep = self._wait(target, t0, timeout_s, holder=f"run:{run_key}")
            verdict = status.state
            reason = status.reason
            now_image = _container_image(dep, target.container) if dep else None
            if verdict == "complete" and now_image != image:
                verdict, reason = "failed", f"superseded: the deployment now runs {now_image}, not {image}"
            events = () if verdict == "complete" else self._explain(target, dep)
        revision = (dep or {}).get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION)
        return RolloutResult(
            verdict="stalled" if verdict == "progressing" else verdict,
            image=image,
            revision=int(revision) if revision else None,
            reason=reason,
            events=events,
            waited_s=round(self.clock() - t0, 3),
            found=found,
        )

    def _wait(
        self, target: DeployTarget, t0: float, timeout_s: float, *, holder: str
    ) -> tuple[RolloutStatus, dict[str, Any] | None]:
        last_renew = self.clock()
        while True:
            dep = self._get_deployment(target)
            if dep is None:
                return RolloutStatus(state="failed", reason="the deployment was deleted during the rollout"), None
            status = rollout_status(deployment_view(dep))
            if status.state != "progressing":
                return status, dep
            crashing = self._crash_loop(target, dep)
            if crashing is not None:
                return RolloutStatus(state="failed", reason=crashing), dep
            if self.clock() - t0 >= timeout_s:
                return RolloutStatus(state="stalled", reason=f"timed out after {timeout_s:g} s: {status.reason}"), dep
            if self.clock() - last_renew >= self.lease_duration_s / 3:
                self._renew_lease(target, holder)
                last_renew = self.clock()
            self.sleep(self.poll_interval_s)

    def _replica_sets(self, target: DeployTarget, dep: Mapping[str, Any]) -> list[dict[str, Any]]:
        selector = dep.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        listing = self._request(
            "GET",
            f"/apis/apps/v1/namespaces/{target.namespace}/replicasets",
            query=[("labelSelector", label_selector)] if label_selector else [],
            what=f"list replica sets of {target.deployment}",
        )
        uid = dep.get("metadata", {}).get("uid")
        return [
            rs
            for rs in listing.get("items", [])
            if any(o.get("uid") == uid for o in rs.get("metadata", {}).get("ownerReferences") or [])
        ]

    def _pods_of(self, target: DeployTarget, rs: Mapping[str, Any]) -> list[dict[str, Any]]:
        pod_hash = rs["metadata"].get("labels", {}).get("pod-template-hash", "")
        pods = self._request(
            "GET",
            f"/api/v1/namespaces/{target.namespace}/pods",
            query=[("labelSelector", f"pod-template-hash={pod_hash}")],
            what="list pods",
        )
        return list(pods.get("items", []))

    def _crash_loop(self, target: DeployTarget, dep: Mapping[str, Any]) -> str | None:
        """Why the revision being rolled out has failed already (its pods crash-loop), or None. Only the
        ReplicaSet of the Deployment's own revision counts, once the controller has seen the new spec: an older
        revision's crashes are not this rollout's."""
        if self.crash_loop_restarts <= 0:
            return None
        view = deployment_view(dep)
        revision = (dep.get("metadata", {}).get("annotations") or {}).get(REVISION_ANNOTATION)
        if revision is None or view.observed_generation < view.generation:
            return None
        try:
            current = [
                rs
                for rs in self._replica_sets(target, dep)
                if rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) == revision
            ]
            pods = [pod for rs in current for pod in self._pods_of(target, rs)]
        except ClusterError as exc:
            if exc.status == 403:
                return None  # a Role without pods/replicasets: the deadline decides, as before
            raise
        return crash_loop(pods, restarts=self.crash_loop_restarts)

    def _explain(self, target: DeployTarget, dep: Mapping[str, Any] | None) -> tuple[str, ...]:
        """Events and container states that explain why the newest ReplicaSet's pods are not available."""
        if not dep:
            return ()
        try:
            rss = self._replica_sets(target, dep)
            newest = max(
                rss, key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, 0)), default=None
            )
            names = {target.deployment}
            lines: list[str] = []
            if newest:
                names.add(newest["metadata"]["name"])
                for pod in self._pods_of(target, newest):
                    names.add(pod["metadata"]["name"])
                    for cs in pod.get("status", {}).get("containerStatuses") or []:
                        waiting = cs.get("state", {}).get("waiting")
                        if waiting or not cs.get("ready"):
                            state = (waiting or {}).get("reason") or "NotReady"
                            lines.append(
                                f"Pod/{pod['metadata']['name']} container {cs.get('name')}: {state} "
                                f"(restarts {cs.get('restartCount', 0)})"
                            )
            events = self._request("GET", f"/api/v1/namespaces/{target.namespace}/events", what="list events")
            relevant = [e for e in events.get("items", []) if e.get("involvedObject", {}).get("name") in names]
            relevant.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
            for e in relevant[-10:]:
                obj = e.get("involvedObject", {})
                lines.append(f"{obj.get('kind')}/{obj.get('name')} {e.get('reason')}: {e.get('message', '').strip()}")
            return tuple(lines[-15:])
        except ClusterError as exc:
            return (f"(events unavailable: {exc})",)

    # ------------------------------------------------------------------------------------------- rollback

    def rollback(self, target: DeployTarget, *, timeout_s: float) -> RollbackResult:
        """Restore the previous ReplicaSet's pod template (``kubectl rollout undo``), wait until complete."""
        t0 = self.clock()
        dep = self._get_deployment(target)
        if dep is None:
            return RollbackResult(verdict="failed", detail=f"deployment {target.deployment} not found")
        run_key = (dep.get("metadata", {}).get("annotations") or {}).get(RUN_KEY_ANNOTATION)
        holder = f"run:{run_key}" if run_key else "rollback"
        with self.deploy_lease(target, holder=holder):
            dep = self._get_deployment(target) or dep
            current = int((dep["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0) or 0)
            revisions = [
                RevisionTemplate(
                    name=rs["metadata"]["name"],
                    revision=int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0) or 0),
                    template=rs["spec"]["template"],
                )
                for rs in self._replica_sets(target, dep)
            ]
            previous = previous_revision(revisions, current or None)
            if previous is None:
                return RollbackResult(verdict="failed", detail="no previous revision to roll back to")
            template = template_for_undo(previous.template)
            self._request(
                "PATCH",
                self._deployment_path(target),
                body=[
                    {"op": "replace", "path": "/spec/template", "value": template},
                ],
                content_type="application/json-patch+json",
                what=f"roll back {target.deployment}",
            )
            status, dep = self._wait(target, t0, timeout_s, holder=holder)
        restored = _container_image({"spec": {"template": template}}, target.container)
        return RollbackResult(
            verdict="restored" if status.state == "complete" else "failed",
            restored_image=restored,
            time_to_restore_s=round(self.clock() - t0, 3),
            detail=f"revision {previous.revision} ({previous.name}): {status.reason}",
        )

    # ---------------------------------------------------------------------------------------------- lease

    def _lease_path(self, target: DeployTarget, name: bool = True) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{target.namespace}/leases"
        return f"{base}/{LEASE_PREFIX}{target.deployment}" if name else base

    @contextmanager
    def deploy_lease(self, target: DeployTarget, *, holder: str) -> Iterator[None]:
        """Hold the Deployment's deploy lease for the block (waits up to ``lease_wait_s`` for another run)."""
        self._acquire_lease(target, holder)
        try:
            yield
        finally:
            self._release_lease(target, holder)

    def _acquire_lease(self, target: DeployTarget, holder: str) -> None:
        deadline = self.clock() + self.lease_wait_s
        while True:
            now = self.now()
            try:
                lease = self._request("GET", self._lease_path(target), what="read deploy lease")
            except ClusterError as exc:
                if exc.status != 404:
                    raise
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": f"{LEASE_PREFIX}{target.deployment}", "namespace": target.namespace},
                    "spec": {
                        "holderIdentity": holder,
                        "leaseDurationSeconds": self.lease_duration_s,
                        "acquireTime": _micro(now),
                        "renewTime": _micro(now),
                        "leaseTransitions": 0,
                    },
                }
                try:
                    self._request("POST", self._lease_path(target, name=False), body=body, what="create deploy lease")
                    return
                except ClusterError as create_exc:
                    if create_exc.status != 409:
                        raise
                    continue
            spec = lease.get("spec") or {}
            current = spec.get("holderIdentity")
            if lease_free(current, _parse_time(spec.get("renewTime")), spec.get("leaseDurationSeconds"), now, holder):
                new_spec = dict(spec)
                new_spec.update(
                    holderIdentity=holder, leaseDurationSeconds=self.lease_duration_s, renewTime=_micro(now)
                )
                if current != holder:
                    new_spec["acquireTime"] = _micro(now)
                    new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
                lease["spec"] = new_spec  # metadata.resourceVersion stays: the PUT is a compare-and-swap
                try:
                    self._request("PUT", self._lease_path(target), body=lease, what="take deploy lease")
                    return
                except ClusterError as exc:
                    if exc.status != 409:
                        raise
                    continue
            if self.clock() >= deadline:
                raise ClusterError(
                    f"deployment {target.namespace}/{target.deployment} is being deployed by {current}; "
                    f"waited {self.lease_wait_s:g} s for its lease",
                    retryable=True,
                )
            self.sleep(self.poll_interval_s)

    def _renew_lease(self, target: DeployTarget, holder: str) -> None:
        lease = self._request("GET", self._lease_path(target), what="read deploy lease")
        if (lease.get("spec") or {}).get("holderIdentity") != holder:
            return
        lease["spec"]["renewTime"] = _micro(self.now())
        try:
            self._request("PUT", self._lease_path(target), body=lease, what="renew deploy lease")
        except ClusterError as exc:
            if exc.status != 409:
                raise

    def _release_lease(self, target: DeployTarget, holder: str) -> None:
        for _ in range(5):
            try:
                lease = self._request("GET", self._lease_path(target), what="read deploy lease")
            except ClusterError:
                return
            if (lease.get("spec") or {}).get("holderIdentity") != holder:
                return
            lease["spec"].pop("holderIdentity", None)
            lease["spec"].pop("renewTime", None)
            try:
                self._request("PUT", self._lease_path(target), body=lease, what="release deploy lease")
                return
            except ClusterError as exc:
                if exc.status != 409:
                    return

    def lease_holder(self, target: DeployTarget) -> str | None:
        """Who holds the Deployment's deploy lease now (None: nobody)."""
        try:
            lease = self._request("GET", self._lease_path(target), what="read deploy lease")
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise
        return (lease.get("spec") or {}).get("holderIdentity")


def _prepare(manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A copy with the target namespace set and ``protocol: TCP`` on ports that omit it (server-side apply on
    v1.20 rejects a list-map entry without its key field)."""
    m = json.loads(json.dumps(manifest))
    m.setdefault("metadata", {})["namespace"] = namespace
    if m.get("kind") == "Service":
        for p in m.get("spec", {}).get("ports") or []:
            p.setdefault("protocol", "TCP")
    pod = (m.get("spec") or {}).get("template", {}).get("spec") if m.get("kind") == "Deployment" else None
    if pod:
        for c in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
            for p in c.get("ports") or []:
                p.setdefault("protocol", "TCP")
    return m


def _translate(exc: Any, what: str) -> ClusterError:
    """One ``ApiException`` → one ``ClusterError`` (retryable for 5xx and 429), with the API's message."""
    status = getattr(exc, "status", None)
    message = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message") or message
        except (ValueError, AttributeError):
            message = str(body)[:300]
    headers = getattr(exc, "headers", None) or {}
    retry_after = retry_after_s(headers, time.time(), default_s=None)
    retryable = status is not None and (status >= 500 or status == 429)
    return ClusterError(
        f"{what}: HTTP {status} {message}".strip(), retryable=retryable, status=status, retry_after_s=retry_after
    )
