"""Pure rollout, health-gate, guard-rail, undo and lease decisions: tables, no doubles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promptship.domain.rollout import (
    Condition,
    DeploymentView,
    HealthGate,
    ProbeObservation,
    RevisionTemplate,
    crash_loop,
    deployment_view,
    health_verdict,
    lease_free,
    manifest_violations,
    previous_revision,
    rollout_status,
    template_for_undo,
)

DEADLINE = Condition(type="Progressing", status="False", reason="ProgressDeadlineExceeded", message="RS x timed out")
AVAILABLE = Condition(type="Progressing", status="True", reason="NewReplicaSetAvailable")


@pytest.mark.parametrize(
    ("view", "state", "words"),
    [
        (DeploymentView(generation=2, observed_generation=1, desired_replicas=1), "progressing", "spec update"),
        (
            DeploymentView(generation=2, observed_generation=2, desired_replicas=2, replicas=2, updated_replicas=1),
            "progressing",
            "1 out of 2 new replicas",
        ),
        (
            DeploymentView(generation=1, observed_generation=1, desired_replicas=1, replicas=2, updated_replicas=1),
            "progressing",
            "1 old replicas are pending termination",
        ),
        (
            DeploymentView(
                generation=1, observed_generation=1, desired_replicas=1, replicas=1, updated_replicas=1,
                available_replicas=0,
            ),
            "progressing",
            "0 of 1 updated replicas are available",
        ),
        (
            DeploymentView(
                generation=3, observed_generation=3, desired_replicas=1, replicas=1, updated_replicas=1,
                available_replicas=1, conditions=(AVAILABLE,),
            ),
            "complete",
            "successfully rolled out",
        ),
        (
            DeploymentView(
                generation=3, observed_generation=3, desired_replicas=1, replicas=2, updated_replicas=1,
                conditions=(DEADLINE,),
            ),
            "stalled",
            "exceeded its progress deadline",
        ),
        (
            # a deadline condition of an older generation is not trusted until the new spec is observed
            DeploymentView(generation=4, observed_generation=3, desired_replicas=1, conditions=(DEADLINE,)),
            "progressing",
            "spec update",
        ),
        (
            DeploymentView(
                generation=1, observed_generation=1, desired_replicas=1,
                conditions=(Condition(type="ReplicaFailure", status="True", reason="FailedCreate", message="quota"),),
            ),
            "failed",
            "FailedCreate",
        ),
        (DeploymentView(generation=1, observed_generation=1, paused=True), "failed", "paused"),
        (
            DeploymentView(generation=1, observed_generation=1, desired_replicas=0, replicas=0),
            "complete",
            "successfully",
        ),
    ],
)  # fmt: skip
def test_rollout_status_decides_like_kubectl(view: DeploymentView, state: str, words: str) -> None:
    status = rollout_status(view)
    assert status.state == state
    assert words in status.reason


def _pod(name: str, restarts: int, state: dict[str, object], last_exit: int | None = 1) -> dict[str, object]:
    status: dict[str, object] = {"name": "app", "restartCount": restarts, "state": state, "ready": "running" in state}
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [status]}}


BACK_OFF = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}}
RUNNING = {"running": {"startedAt": "2026-12-02T10:00:00Z"}}


@pytest.mark.parametrize(
    ("pods", "restarts", "words"),
    [
        (
            [_pod("web-1", 3, BACK_OFF)],
            3,
            "pod web-1 container app is crash-looping (CrashLoopBackOff): restarted 3 times, last exit code 1",
        ),  # fmt: skip
        (
            [_pod("web-1", 5, {"terminated": {"exitCode": 2}}, last_exit=None)],
            3,
            "(Terminated): restarted 5 times, last exit code 2",
        ),  # fmt: skip
        ([_pod("web-1", 0, RUNNING), _pod("web-2", 4, BACK_OFF, last_exit=137)], 3, "pod web-2 "),
        ([_pod("web-1", 2, BACK_OFF)], 3, None),  # not yet: two restarts of three
        ([_pod("web-1", 7, RUNNING)], 3, None),  # it crashed, and runs again now
        ([_pod("web-1", 9, BACK_OFF)], 0, None),  # turned off: the progress deadline decides
        ([{"metadata": {"name": "web-1"}, "status": {"phase": "Pending"}}], 3, None),  # no container started yet
        ([], 3, None),
    ],
)
def test_crash_loop_fails_a_rollout_whose_new_pods_keep_crashing(
    pods: list[dict[str, object]], restarts: int, words: str | None
) -> None:
    reason = crash_loop(pods, restarts=restarts)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason, reason


def test_deployment_view_reads_the_api_json() -> None:
    view = deployment_view(
        {
            "metadata": {"name": "web", "generation": 5},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 5,
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            },
        }
    )
    assert rollout_status(view).state == "complete"
    assert view.name == "web" and view.desired_replicas == 2


OK = ProbeObservation(ok=True, status=200, latency_ms=5)
SLOW = ProbeObservation(ok=True, status=200, latency_ms=900)
BAD = ProbeObservation(ok=False, status=503, error="HTTP 503")


@pytest.mark.parametrize(
    ("observations", "gate", "verdict"),
    [
        ([OK, OK, OK], HealthGate(consecutive=3, retries=10), "healthy"),
        ([OK, OK], HealthGate(consecutive=3, retries=10), "pending"),
        ([OK, BAD, OK, OK, OK], HealthGate(consecutive=3, retries=10), "healthy"),  # one flaky probe
        ([BAD], HealthGate(consecutive=3, retries=10), "pending"),
        ([BAD] * 8, HealthGate(consecutive=3, retries=10), "unhealthy"),  # 2 left, 3 needed
        ([BAD] * 7, HealthGate(consecutive=3, retries=10), "pending"),
        ([OK, OK, SLOW], HealthGate(consecutive=3, retries=3, max_latency_ms=500), "unhealthy"),
        ([OK, OK, SLOW], HealthGate(consecutive=3, retries=10), "healthy"),  # no latency bound
        ([SLOW, SLOW, SLOW], HealthGate(consecutive=3, retries=10), "healthy"),
        ([BAD], HealthGate(consecutive=1, retries=1), "unhealthy"),
    ],
)
def test_health_verdict(observations: list[ProbeObservation], gate: HealthGate, verdict: str) -> None:
    assert health_verdict(observations, gate) == verdict


def _deployment(**pod_spec: object) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}], **pod_spec}}},
    }


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"}}, "RBAC"),
        ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x"}}, "RBAC"),
        ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}, "cluster-scoped"),
        ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}, "not on the allowlist"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}, "outside"),
        ({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "x"}}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "Service", "metadata": {}}, "metadata.name"),
        (_deployment(hostNetwork=True), "hostNetwork"),
        (_deployment(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "hostPath"),
        ({"metadata": {"name": "x"}}, "no kind"),
    ],
)
def test_guard_rails_refuse(manifest: dict[str, object], problem: str) -> None:
    problems = manifest_violations([manifest], "demo")
    assert problems and problem in problems[0]


def test_guard_rails_allow_the_usual_app_objects() -> None:
    manifests = [
        _deployment(),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "demo"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}},
        {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "web"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}},
    ]
    assert manifest_violations(manifests, "demo") == []


def _rs(name: str, revision: int, image: str) -> RevisionTemplate:
    return RevisionTemplate(
        name=name,
        revision=revision,
        template={"metadata": {"labels": {"app": "web", "pod-template-hash": name}}, "spec": {"image": image}},
    )


@pytest.mark.parametrize(
    ("sets", "current", "expected"),
    [
        ([_rs("a", 1, "v1"), _rs("b", 2, "v2")], None, "a"),
        ([_rs("a", 1, "v1"), _rs("b", 2, "v2"), _rs("c", 3, "v3")], 3, "b"),
        ([_rs("a", 1, "v1"), _rs("c", 3, "v3"), _rs("b", 2, "v2")], 3, "b"),
        ([_rs("a", 1, "v1")], None, None),
        ([], None, None),
    ],
)
def test_previous_revision_is_what_undo_restores(sets: list[RevisionTemplate], current: int | None, expected) -> None:
    found = previous_revision(sets, current)
    assert (found.name if found else None) == expected


def test_undo_template_drops_the_pod_template_hash() -> None:
    out = template_for_undo(_rs("a", 1, "v1").template)
    assert out["metadata"]["labels"] == {"app": "web"}


T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("holder", "renewed", "now", "me", "free"),
    [
        (None, None, T0, "run:a", True),
        ("run:a", T0, T0, "run:a", True),
        ("run:b", T0, T0 + timedelta(seconds=10), "run:a", False),
        ("run:b", T0, T0 + timedelta(seconds=31), "run:a", True),
    ],
)
def test_lease_free(holder: str | None, renewed: datetime | None, now: datetime, me: str, free: bool) -> None:
    assert lease_free(holder, renewed, 30, now, me) is free


def _deployment_with(name: str, containers: list[dict[str, str]]) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": containers}}},
    }


def test_the_changes_deployment_manifest_carries_the_image_being_rolled_out() -> None:
    from promptship.domain.rollout import with_image

    placeholder = "registry.example.com/app/backend:latest"
    target = _deployment_with("backend", [{"name": "backend", "image": placeholder}, {"name": "side", "image": "s:1"}])
    other = _deployment_with("worker", [{"name": "backend", "image": placeholder}])
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"}}

    out = with_image([target, other, service], "backend", "backend", "forge.local/a/b/backend:abc")

    containers = out[0]["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["forge.local/a/b/backend:abc", "s:1"]
    assert out[1] == other and out[2] == service  # another Deployment, another kind: as written
    assert target["spec"]["template"]["spec"]["containers"][0]["image"] == placeholder  # type: ignore[index]
