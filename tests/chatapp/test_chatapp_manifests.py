"""The chat app's deployment files: the OpenShift Route and the Argo CD Application validate against their
CRDs' openAPIV3Schema (shared/specs/crds); every Deployment has requests/limits, probes on /health and runs
as non-root; Services are ClusterIP; the Secret template carries no values; the backend runs `python -m app`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chatapp.conftest import APP_ROOT
from tests.conftest import SHARED, require

pytestmark = [pytest.mark.chatapp, pytest.mark.manifests]

K8S = APP_ROOT / "k8s"
CRDS = SHARED / "specs" / "crds"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects(kind: str | None = None) -> list[dict[str, Any]]:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in load_all(p)]
    return [d for d in docs if kind is None or d["kind"] == kind]


def crd_schema(filename: str, version: str) -> dict[str, Any]:
    path = CRDS / filename
    require("CRD specs", path.exists(), f"{path} (shared/specs/crds)")
    [crd] = load_all(path)
    [v] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return without_nulls(v["schema"]["openAPIV3Schema"])


def without_nulls(node: Any) -> Any:
    """The Route CRD carries `anyOf: null` (generated YAML); JSON Schema needs such keys absent. CEL rules
    (x-kubernetes-validations) are not evaluated here; the tests check what they say where it matters."""
    if isinstance(node, dict):
        return {k: without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [without_nulls(v) for v in node]
    return node


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_route_validates_against_the_openshift_crd_with_edge_tls() -> None:
    schema = crd_schema("openshift-route-v1-crd.yaml", "v1")
    [route] = objects("Route")
    assert route["apiVersion"] == "route.openshift.io/v1"
    assert validate(route, schema) == []
    assert route["spec"]["tls"]["termination"] == "edge"
    assert route["spec"]["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"  # plain http → https
    assert route["spec"]["to"] == {"kind": "Service", "name": "frontend-service", "weight": 100}
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    port_names = {p["name"] for p in services["frontend-service"]["spec"]["ports"]}
    assert route["spec"]["port"]["targetPort"] in port_names


def test_a_broken_route_is_rejected_by_the_schema() -> None:
    """The validation above can fail: a wrong TLS termination is caught."""
    schema = crd_schema("openshift-route-v1-crd.yaml", "v1")
    [route] = objects("Route")
    broken = {**route, "spec": {**route["spec"], "tls": {"termination": "sideways"}}}
    assert validate(broken, schema)


def test_argocd_application_validates_and_syncs_automatically() -> None:
    schema = crd_schema("argo-cd-v3.5.1-application-crd.yaml", "v1alpha1")
    [app] = load_all(APP_ROOT / "argocd" / "application.yaml")
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert validate(app, schema) == []
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert app["spec"]["source"]["path"] == "k8s"
    assert validate({**app, "spec": {**app["spec"], "syncPolicy": {"automated": {"prune": "yes"}}}}, schema)


@pytest.mark.parametrize("name", ["backend", "frontend"])
def test_deployment_has_limits_probes_and_runs_as_non_root(name: str) -> None:
    [dep] = [d for d in objects("Deployment") if d["metadata"]["name"] == name]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        res = c["resources"]
        assert {"cpu", "memory"} <= res["limits"].keys() and {"cpu", "memory"} <= res["requests"].keys()
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health", (name, probe)
            port = c[probe]["httpGet"]["port"]
            assert port in {p.get("name") for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc.get("runAsUser", 1) != 0 and sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_limits_are_the_seeds() -> None:
    limits = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        for d in objects("Deployment")
    }
    assert limits == {"backend": {"cpu": "500m", "memory": "256Mi"}, "frontend": {"cpu": "250m", "memory": "128Mi"}}


def test_backend_runs_python_m_app_with_host_port_and_the_secret() -> None:
    [dep] = [d for d in objects("Deployment") if d["metadata"]["name"] == "backend"]
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "app"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PORT"] == "8000" and env["HOST"] == "0.0.0.0" and env["LLM_MODEL"]
    assert "LLM_API_KEY" not in env  # from the Secret only
    assert c["envFrom"] == [{"secretRef": {"name": "litellm-secrets"}}]
    assert c["ports"][0]["containerPort"] == 8000


def test_services_are_cluster_ip_and_select_their_deployment() -> None:
    deployments = {d["metadata"]["name"]: d for d in objects("Deployment")}
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    assert set(services) == {"backend-service", "frontend-service"}
    for name, svc in services.items():
        assert svc["spec"]["type"] == "ClusterIP"
        dep = deployments[name.removesuffix("-service")]
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert all(p["protocol"] == "TCP" for p in svc["spec"]["ports"])
    assert services["backend-service"]["spec"]["ports"][0]["port"] == 8000
    assert services["frontend-service"]["spec"]["ports"][0]["port"] == 80


def test_secret_is_a_template_without_values_and_is_never_synced() -> None:
    [secret] = load_all(K8S / "templates" / "secret.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "litellm-secrets"
    assert set(secret["stringData"]) == {"LLM_API_BASE", "LLM_API_KEY"}
    assert all(v == "" for v in secret["stringData"].values())
    assert "data" not in secret
    assert objects("Secret") == []  # not in k8s/ itself: `oc apply -f k8s/` and Argo CD never apply it


def test_deployed_with_promptship_the_backend_may_reach_the_gateway_service() -> None:
    """The Secret template says how to point the app at promptship's gateway (an app's key for caller chat);
    the gateway's NetworkPolicy admits the app's pods from the namespace the pipeline deploys it to."""
    from promptship.domain.request import DeployTarget

    template = (K8S / "templates" / "secret.yaml").read_text()
    assert "LLM_API_BASE=http://llm-gateway.promptship.svc:4000/v1" in template
    assert "promptship gateway key --caller chat" in template
    root = APP_ROOT.parent.parent / "k8s" / "base"
    pols = [d for d in load_all(root / "networkpolicies.yaml") if d["kind"] == "NetworkPolicy"]
    [gateway] = [
        p for p in pols if p["spec"]["podSelector"].get("matchLabels") == {"promptship.dev/egress": "llm-cloud"}
    ]
    peers = [
        peer
        for rule in gateway["spec"]["ingress"]
        for peer in rule["from"]
        if 4000 in [x["port"] for x in rule["ports"]]
    ]
    [backend] = [d for d in objects("Deployment") if d["metadata"]["name"] == "backend"]
    labels = backend["spec"]["template"]["metadata"]["labels"]
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": DeployTarget().namespace}
        and peer["podSelector"]["matchLabels"].items() <= labels.items()
        for peer in peers
    )


def test_frontend_nginx_proxies_chat_to_the_backend_service() -> None:
    conf = (APP_ROOT / "frontend" / "nginx" / "default.conf.template").read_text()
    assert "location = /chat" in conf and "proxy_pass ${BACKEND_URL};" in conf
    [dep] = [d for d in objects("Deployment") if d["metadata"]["name"] == "frontend"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BACKEND_URL"] == "http://backend-service:8000"


@pytest.mark.parametrize("context", ["backend", "frontend"])
def test_dockerfiles_are_multi_stage_and_non_root(context: str) -> None:
    lines = [ln.strip() for ln in (APP_ROOT / context / "Dockerfile").read_text().splitlines()]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].isdigit() and users[-1] != "0"
