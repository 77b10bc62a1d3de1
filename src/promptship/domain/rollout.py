"""Rollout, health-gate and guard-rail decisions: pure functions over plain values (no I/O, no SDK).

- ``rollout_status``: the verdict ``kubectl rollout status`` would give for a Deployment's status.
- ``crash_loop``: whether the new revision's pods are crash-looping (the rollout fails then, without waiting for
  the progress deadline).
- ``health_verdict``: the health gate over a sequence of probe observations.
- ``manifest_violations``: what an agent-written manifest may not do.
- ``previous_revision``: which ReplicaSet ``kubectl rollout undo`` restores.
- ``lease_free``: whether a deploy lease may be taken.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RolloutState = Literal["complete", "progressing", "stalled", "failed"]
GateState = Literal["healthy", "unhealthy", "pending"]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Condition(_Frozen):
    type: str
    status: str
    reason: str = ""
    message: str = ""


class DeploymentView(_Frozen):
    """The fields of a Deployment that decide its rollout (``metadata.generation``, ``spec.replicas``,
    ``spec.paused`` and ``status``)."""

    name: str = ""
    generation: int = 0
    observed_generation: int = 0
    desired_replicas: int | None = 1
    paused: bool = False
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class RolloutStatus(_Frozen):
    state: RolloutState
    reason: str


def rollout_status(d: DeploymentView) -> RolloutStatus:
    """Decide the rollout as ``kubectl rollout status`` does (kubectl ``DeploymentStatusViewer``).

    stalled = the controller reported ``ProgressDeadlineExceeded``; failed = the rollout cannot go on
    (paused, or ``ReplicaFailure``: the controller cannot create pods).
    """
    name = d.name or "deployment"
    if d.paused:
        return RolloutStatus(state="failed", reason=f"deployment {name!r} is paused; resume it to roll out")
    if d.generation > d.observed_generation:
        return RolloutStatus(state="progressing", reason="Waiting for deployment spec update to be observed...")
    progressing = d.condition("Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return RolloutStatus(
            state="stalled",
            reason=f"deployment {name!r} exceeded its progress deadline"
            + (f": {progressing.message}" if progressing.message else ""),
        )
    failure = d.condition("ReplicaFailure")
    if failure is not None and failure.status == "True":
        return RolloutStatus(state="failed", reason=f"{failure.reason}: {failure.message}".strip(": "))
    if d.desired_replicas is not None and d.updated_replicas < d.desired_replicas:
        return RolloutStatus(
            state="progressing",
            reason=f"Waiting for deployment {name!r} rollout to finish: {d.updated_replicas} out of "
            f"{d.desired_replicas} new replicas have been updated...",
        )
    if d.replicas > d.updated_replicas:
        return RolloutStatus(
            state="progressing",
            reason=f"Waiting for deployment {name!r} rollout to finish: {d.replicas - d.updated_replicas} old "
            "replicas are pending termination...",
        )
    if d.available_replicas < d.updated_replicas:
        return RolloutStatus(
            state="progressing",
            reason=f"Waiting for deployment {name!r} rollout to finish: {d.available_replicas} of "
            f"{d.updated_replicas} updated replicas are available...",
        )
    return RolloutStatus(state="complete", reason=f"deployment {name!r} successfully rolled out")


def crash_loop(pods: Iterable[Mapping[str, Any]], *, restarts: int) -> str | None:
    """Why the rollout has failed already, or None: a container of one of ``pods`` (the API's Pod dicts, all of
    the revision being rolled out) has been restarted ``restarts`` times or more and is not running now (waiting
    to be restarted — ``CrashLoopBackOff`` — or terminated). A container that crashed and now runs again does
    not count, nor one that is only not ready: that is the readiness probe's, judged by the progress deadline.
    ``restarts`` 0 turns this off (``kubectl rollout status`` waits for the deadline)."""
    if restarts <= 0:
        return None
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        for cs in statuses:
            count = int(cs.get("restartCount") or 0)
            state = cs.get("state") or {}
            if count < restarts or "running" in state:
                continue
            last = (cs.get("lastState") or {}).get("terminated") or state.get("terminated") or {}
            how = state.get("waiting", {}).get("reason") or "Terminated"
            exit_code = last.get("exitCode")
            name = (pod.get("metadata") or {}).get("name", "?")
            return f"pod {name} container {cs.get('name')} is crash-looping ({how}): restarted {count} times" + (
                f", last exit code {exit_code}" if exit_code is not None else ""
            )
    return None


def deployment_view(obj: Mapping[str, Any]) -> DeploymentView:
    """A ``DeploymentView`` from a Deployment as a plain dict (the API's JSON)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return DeploymentView(
        name=meta.get("name", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        desired_replicas=spec.get("replicas", 1),
        paused=bool(spec.get("paused")),
        replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        conditions=tuple(
            Condition(
                type=c.get("type", ""),
                status=c.get("status", ""),
                reason=c.get("reason") or "",
                message=c.get("message") or "",
            )
            for c in status.get("conditions") or []
        ),
    )


# ------------------------------------------------------------------------------------------------ health gate


class ProbeObservation(_Frozen):
    """One health probe: ``ok`` = a 2xx answer; ``latency_ms`` when an answer came."""

    ok: bool
    status: int | None = None
    latency_ms: float | None = None
    error: str = ""


class HealthGate(_Frozen):
    consecutive: int = Field(default=3, ge=1, description="Successes in a row needed for healthy.")
    retries: int = Field(default=10, ge=1, description="Most probes before the verdict is unhealthy.")
    max_latency_ms: float | None = Field(default=None, gt=0, description="A slower answer counts as a failure.")


def probe_passes(obs: ProbeObservation, gate: HealthGate) -> bool:
    if not obs.ok:
        return False
    return gate.max_latency_ms is None or (obs.latency_ms is not None and obs.latency_ms <= gate.max_latency_ms)


def trailing_successes(observations: Sequence[ProbeObservation], gate: HealthGate) -> int:
    n = 0
    for obs in reversed(observations):
        if not probe_passes(obs, gate):
            break
        n += 1
    return n


def health_verdict(observations: Sequence[ProbeObservation], gate: HealthGate) -> GateState:
    """healthy once ``consecutive`` probes in a row pass; unhealthy once that can no longer happen within
    ``retries`` probes; else pending. One failed probe only resets the streak: it never fails the gate alone
    as long as enough probes remain."""
    streak = trailing_successes(observations, gate)
    if streak >= gate.consecutive:
        return "healthy"
    remaining = gate.retries - len(observations)
    if gate.consecutive - streak > remaining:
        return "unhealthy"
    return "pending"


# ----------------------------------------------------------------------------------------------- guard rails

# kind -> allowed apiVersions. Everything namespaced, nothing that grants rights or spans the cluster.
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1",),
    "Service": ("v1",),
    "ConfigMap": ("v1",),
    "Ingress": ("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
    "Route": ("route.openshift.io/v1",),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"),
    "HorizontalPodAutoscaler": ("autoscaling/v1", "autoscaling/v2", "autoscaling/v2beta2"),
    "PodDisruptionBudget": ("policy/v1", "policy/v1beta1"),
}
CLUSTER_SCOPED_OR_RBAC = frozenset(
    {
        "Namespace", "Node", "PersistentVolume", "StorageClass", "CustomResourceDefinition", "ClusterRole",
        "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount", "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration", "PriorityClass", "APIService", "PodSecurityPolicy", "RuntimeClass",
    }
)  # fmt: skip


def _pod_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = manifest.get("spec") or {}
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if isinstance(template, Mapping):
        return template.get("spec") or {}
    return None


def with_image(manifests: Iterable[Mapping[str, Any]], deployment: str, container: str, image: str) -> list[dict]:
    """The change's manifests with the target Deployment's ``container`` set to ``image``, the one being rolled
    out. Applied as written, a Deployment manifest's placeholder image would start a revision of its own that
    never ran, and a rollback would return to it instead of to what ran before the change: this way the change
    is one revision (its pod template and its image) and undo restores the revision before it."""
    out: list[dict] = []
    for m in manifests:
        copy = json.loads(json.dumps(m))
        meta = copy.get("metadata") or {}
        if copy.get("kind") == "Deployment" and isinstance(meta, dict) and meta.get("name") == deployment:
            pod = _pod_spec(copy)
            for c in (pod or {}).get("containers") or []:
                if isinstance(c, dict) and c.get("name") == container:
                    c["image"] = image
        out.append(copy)
    return out


def manifest_violations(manifests: Iterable[Mapping[str, Any]], namespace: str) -> list[str]:
    """Why these manifests may not be applied to ``namespace`` (empty: they may).

    Allowed: the kinds of ``ALLOWED_KINDS`` with their apiVersions, in ``namespace`` (or no namespace), with a
    name; Deployments without host access (hostNetwork/hostPID/hostIPC, privileged containers, hostPath).
    Never: cluster-scoped objects or RBAC.
    """
    problems: list[str] = []
    for i, m in enumerate(manifests):
        if not isinstance(m, Mapping):
            problems.append(f"manifest #{i + 1} is not a mapping")
            continue
        kind = str(m.get("kind") or "")
        meta = m.get("metadata") or {}
        name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
        label = f"{kind or '?'}/{name or '?'}"
        if not kind:
            problems.append(f"manifest #{i + 1} has no kind")
            continue
        if kind in CLUSTER_SCOPED_OR_RBAC:
            problems.append(f"{label}: kind {kind} is cluster-scoped or RBAC and is never applied by the pipeline")
            continue
        if kind not in ALLOWED_KINDS:
            problems.append(f"{label}: kind {kind} is not on the allowlist ({', '.join(sorted(ALLOWED_KINDS))})")
            continue
        if m.get("apiVersion") not in ALLOWED_KINDS[kind]:
            problems.append(
                f"{label}: apiVersion {m.get('apiVersion')!r} not allowed for {kind} "
                f"(use {' or '.join(ALLOWED_KINDS[kind])})"
            )
        if not name:
            problems.append(f"{label}: metadata.name is missing")
        ns = meta.get("namespace") if isinstance(meta, Mapping) else None
        if ns not in (None, "", namespace):
            problems.append(f"{label}: namespace {ns!r} is outside the target namespace {namespace!r}")
        pod = _pod_spec(m)
        if pod is not None:
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(flag):
                    problems.append(f"{label}: spec.template.spec.{flag} is not allowed")
            for v in pod.get("volumes") or []:
                if isinstance(v, Mapping) and "hostPath" in v:
                    problems.append(f"{label}: hostPath volume {v.get('name')!r} is not allowed")
            for c in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
                sc = (c or {}).get("securityContext") or {}
                if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is True:
                    problems.append(f"{label}: container {c.get('name')!r} may not be privileged")
    return problems


# -------------------------------------------------------------------------------------------------- rollback


class RevisionTemplate(_Frozen):
    """A ReplicaSet of a Deployment: its revision and pod template (a plain dict)."""

    name: str
    revision: int
    template: dict[str, Any]


def previous_revision(replica_sets: Sequence[RevisionTemplate], current: int | None = None) -> RevisionTemplate | None:
    """The ReplicaSet ``kubectl rollout undo`` restores: the highest revision below the current one (the
    current one being the highest when not given). None when there is no earlier revision."""
    if not replica_sets:
        return None
    top = current if current is not None else max(rs.revision for rs in replica_sets)
    earlier = [rs for rs in replica_sets if rs.revision < top]
    return max(earlier, key=lambda rs: rs.revision) if earlier else None


def template_for_undo(template: Mapping[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as the Deployment's template: without the ``pod-template-hash`` label the
    ReplicaSet controller added (as ``kubectl rollout undo`` does)."""
    out = dict(template)
    meta = dict(out.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != "pod-template-hash"}
    meta["labels"] = labels
    out["metadata"] = meta
    return out


# ------------------------------------------------------------------------------------------------------ lease


def lease_free(holder: str | None, renew_time: datetime | None, duration_s: int | None, now: datetime, me: str) -> bool:
    """True if ``me`` may take the lease: nobody holds it, ``me`` holds it, or the holder stopped renewing."""
    if not holder or holder == me:
        return True
    if renew_time is None or duration_s is None:
        return True
    return now > renew_time + timedelta(seconds=duration_s)


def already_rolled_back(rolled_out_image: str | None, current_image: str | None) -> bool:
    """Whether a rollback of this attempt already happened: the Deployment no longer runs the image the attempt
    rolled out. A resumed rollback step must then not undo again — ``kubectl rollout undo`` swaps the last two
    revisions, so a second undo would put the bad revision back."""
    return rolled_out_image is not None and current_image is not None and current_image != rolled_out_image
