"""The platform's manifests: they build, pass the house policy, validate against the CRDs, and the local
control plane accepts them (server-side dry run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from promptship_sandbox.platform import without_cel
from tests.conftest import REPO_ROOT, SHARED, require

pytestmark = pytest.mark.manifests

OVERLAYS = ["local", "cluster"]
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CRDS = SHARED / "specs" / "crds"


def kustomize(overlay: str) -> list[dict[str, Any]]:
    kubectl = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    require("kubectl with kustomize", kubectl is not None, "install the dev dependencies (make install)")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _containers(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    spec = _pod_spec(obj)
    for c in spec.get("initContainers", []) + spec["containers"]:
        yield spec, c


def test_overlays_build_with_the_expected_components(objects):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [
        ("Deployment", "prefect-server"),
        ("Deployment", "prefect-worker"),
        ("Deployment", "webhook"),
        ("Deployment", "llm-gateway"),
        ("Deployment", "ollama"),
        ("Job", "ollama-pull-models"),
        ("ConfigMap", "llm-config"),
        ("HTTPRoute", "llm-router"),
        ("Ingress", "webhook"),
        ("Role", "promptship-deployer"),
        ("NetworkPolicy", "default-deny"),
    ]:
        assert expected in kinds, expected


def test_no_container_runs_as_root_and_each_has_limits_and_probes(objects):
    seen = 0
    for obj in (o for o in objects if o["kind"] in WORKLOADS):
        for pod, c in _containers(obj):
            seen += 1
            where = f"{obj['kind']}/{obj['metadata']['name']}:{c['name']}"
            sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True, f"{where} may run as root"
            assert sc.get("runAsUser", 1) != 0, f"{where} runs as uid 0"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where} allows privilege escalation"
            limits = c.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), f"{where} lacks cpu/memory limits"
            assert "livenessProbe" in c and "readinessProbe" in c, f"{where} lacks probes"
    assert seen >= 6


def test_no_secret_carries_a_value(objects):
    secrets = [o for o in objects if o["kind"] == "Secret"]
    assert secrets
    for s in secrets:
        assert not s.get("data") and not s.get("stringData"), f"Secret {s['metadata']['name']} carries a value"
    for obj in objects:
        text = json.dumps(obj)
        assert "sk-or-v1-" not in text and "ghp_" not in text


def test_the_deployer_role_grants_nothing_cluster_wide(objects):
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "promptship-deployer")
    assert role["metadata"]["namespace"] == "demo"
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not {"roles", "rolebindings", "secrets"} & set(rule["resources"])


def test_only_the_webhook_is_reachable_from_outside_and_only_the_gateway_reaches_the_cloud(objects):
    pols = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deny = next(p for p in pols if p["metadata"]["name"] == "default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    open_ingress = [
        p["spec"]["podSelector"].get("matchLabels", {})
        for p in pols
        for rule in p["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert open_ingress == [{"app.kubernetes.io/name": "webhook"}]
    internet = [
        p["spec"]["podSelector"].get("matchLabels", {})
        for p in pols
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    ]
    assert internet == [{"promptship.dev/egress": "llm-cloud"}]
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "llm-gateway")
    assert gateway["spec"]["template"]["metadata"]["labels"]["promptship.dev/egress"] == "llm-cloud"
    # the only holder of the OpenRouter key is the gateway
    holders = {
        o["metadata"]["name"] for o in objects if o["kind"] in WORKLOADS and "promptship-openrouter" in json.dumps(o)
    }
    assert holders == {"llm-gateway"}


def test_llm_config_carries_the_seed_values(objects):
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "llm-config")
    assert cm["data"]["default_model"] == "mistral"
    assert cm["data"]["max_retries"] == "3" and cm["data"]["timeout_seconds"] == "30"


def _crd_schemas(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for v in doc["spec"]["versions"]:
            out[(group, v["name"], kind)] = v["schema"]["openAPIV3Schema"]
    return out


def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    require("shared CRD specs", CRDS.is_dir(), f"{CRDS} missing")
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in sorted(CRDS.glob("*.yaml")):
        schemas.update(_crd_schemas(f))
    return schemas


def validate_against_crd(obj: dict[str, Any], schemas: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    group, _, version = obj["apiVersion"].rpartition("/")
    schema = schemas[(group, version, obj["kind"])]
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)


def test_crd_objects_validate_against_their_schemas(objects):
    schemas = crd_schemas()
    crd_objects = [
        o
        for o in objects
        if "." in o["apiVersion"].split("/")[0]
        and not o["apiVersion"].startswith(("apps/", "batch/", "networking.k8s.io/", "rbac.authorization.k8s.io/"))
    ]
    assert {o["kind"] for o in crd_objects} == {"Gateway", "HTTPRoute"}
    for obj in crd_objects:
        validate_against_crd(obj, schemas)


def test_a_broken_route_is_rejected_by_the_schema():
    schemas = crd_schemas()
    route = next(o for o in kustomize("local") if o["kind"] == "HTTPRoute")
    route["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = "Fuzzy"  # not an allowed match type
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd(route, schemas)


@pytest.mark.cluster
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_local_control_plane_accepts_every_manifest(overlay: str, platform_kubeconfig: Path, tmp_path: Path):
    objs = kustomize(overlay)
    kubectl = str(KUBECTL)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", str(platform_kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
        )

    # CRDs and namespaces exist for real (dry-run objects need their namespace and their kind to exist).
    # A v1.20 API server knows no CEL rules (x-kubernetes-validations) and mangles empty-string defaults into
    # null: both are dropped here; test_crd_objects_validate_against_their_schemas checks the full schema.
    for crd in sorted(CRDS.glob("gateway-api-*.yaml")):
        docs = [without_cel(d) for d in yaml.safe_load_all(crd.read_text()) if d]
        r = run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(docs))
        assert r.returncode == 0, r.stderr
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    r = run("apply", "-f", "-", stdin=yaml.safe_dump_all(namespaces))
    assert r.returncode == 0, r.stderr
    for _ in range(30):  # CRDs become served a moment after they are created
        if run("get", "httproutes.gateway.networking.k8s.io", "-A").returncode == 0:
            break
        import time

        time.sleep(0.5)
    rest = [o for o in objs if o["kind"] != "Namespace"]
    r = run("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(rest))
    assert r.returncode == 0, r.stderr
    accepted = [line for line in r.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(rest), r.stdout


def test_the_kubernetes_work_pool_job_template_finds_everything_it_names(objects):
    template = json.loads((REPO_ROOT / "deployments" / "kubernetes-base-job-template.json").read_text())
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("ServiceAccount", defaults["service_account_name"]) in names
    assert ("ConfigMap", defaults["settings_config_map"]) in names
    assert ("Secret", defaults["credentials_secret"]) in names
    assert ("PersistentVolumeClaim", defaults["results_claim"]) in names
    pod_labels = template["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"]
    egress = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "worker-egress")
    selector = egress["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()  # flow-run pods get the worker's egress (Prefect, gateway)
    binding = next(o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "promptship-deployer")
    assert {"name": defaults["service_account_name"], "kind": "ServiceAccount", "namespace": "promptship"} in [
        dict(s) for s in binding["subjects"]
    ]


def test_every_component_that_opens_the_store_shares_one_postgres_store(objects):
    """The worker, the flow-run pods, the gateway and every webhook replica read PROMPTSHIP_DATABASE_URL from the
    one Secret of the PostgreSQL store, may reach that server, and nothing else may."""
    template = json.loads((REPO_ROOT / "deployments" / "kubernetes-base-job-template.json").read_text())
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    store_secret = defaults["store_secret"]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == store_secret)
    expected = secret["metadata"]["annotations"]["promptship.dev/expected-keys"].split(",")
    assert {"PROMPTSHIP_DATABASE_URL", "PROMPTSHIP_STORE_KEY"} <= set(expected)
    job = template["job_configuration"]["job_manifest"]["spec"]["template"]
    assert {"secretRef": {"name": "{{ store_secret }}"}} in job["spec"]["containers"][0]["envFrom"]

    clients = {"llm-gateway", "webhook", "prefect-worker"}
    for obj in (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] in clients):
        container = _pod_spec(obj)["containers"][0]
        assert {"secretRef": {"name": store_secret}} in container.get("envFrom", []), obj["metadata"]["name"]
        assert not [e for e in container.get("env", []) if e["name"] == "PROMPTSHIP_DATABASE_URL"]

    server = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "promptship-postgres")
    server_labels = server["spec"]["template"]["metadata"]["labels"]
    pols = [o for o in objects if o["kind"] == "NetworkPolicy"]

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        if not selector.get("matchLabels", {}).items() <= labels.items():
            return False
        expressions = [e for e in selector.get("matchExpressions", []) if e["operator"] == "In"]
        return all(labels.get(e["key"]) in e["values"] for e in expressions)

    def pod_labels(name: str) -> dict[str, str]:
        if name == "flow-run":
            return job["metadata"]["labels"]
        return next(o for o in objects if o["metadata"]["name"] == name and o["kind"] == "Deployment")["spec"][
            "template"
        ]["metadata"]["labels"]

    ingress_from = [
        peer["podSelector"]
        for p in pols
        if selects(p["spec"]["podSelector"], server_labels)
        for rule in p["spec"].get("ingress", [])
        for peer in rule.get("from", [])
    ]
    for client in [*clients, "flow-run"]:
        labels = pod_labels(client)
        assert any(selects(s, labels) for s in ingress_from), f"the store refuses {client}"
        egress_to = [
            peer["podSelector"]
            for p in pols
            if selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if "podSelector" in peer
        ]
        assert any(selects(s, server_labels) for s in egress_to), f"{client} cannot reach the store"
    for outsider in ("ollama", "prefect-server"):
        assert not any(selects(s, pod_labels(outsider)) for s in ingress_from), f"{outsider} may reach the store"


def _admits(policy: dict[str, Any], labels: dict[str, str], port: int, *, direction: str) -> bool:
    """Whether a NetworkPolicy rule (``egress`` to / ``ingress`` from) of the same namespace names a pod with
    ``labels`` on ``port`` (rules without peers or ports admit every one)."""
    peers_key = "to" if direction == "egress" else "from"
    for rule in policy["spec"].get(direction, []):
        ports = [p["port"] for p in rule.get("ports", [])]
        peers = [p["podSelector"]["matchLabels"] for p in rule.get(peers_key, []) if set(p) == {"podSelector"}]
        if (not ports or port in ports) and (
            not rule.get(peers_key) or any(sel.items() <= labels.items() for sel in peers)
        ):
            return True
    return False


def test_flow_runs_reach_the_local_models_for_their_own_llm_calls(objects):
    """The flow run's own LLM calls (PR title and body, CI-log summaries) run in the flow-run process's gateway:
    the worker's process runs and the Kubernetes pool's pods are told Ollama's Service URL, and the network policies
    let them reach it (found by the platform's real deploy: they had no model they could reach)."""
    by = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    service = by[("Service", "ollama")]
    url = f"http://ollama.promptship.svc:{service['spec']['ports'][0]['port']}"
    worker = _pod_spec(by[("Deployment", "prefect-worker")])["containers"][0]
    assert {"name": "PROMPTSHIP_LLM__OLLAMA_BASE_URL", "value": url} in worker["env"]
    assert by[("ConfigMap", "promptship-settings")]["data"]["PROMPTSHIP_LLM__OLLAMA_BASE_URL"] == url

    template = json.loads((REPO_ROOT / "deployments" / "kubernetes-base-job-template.json").read_text())
    flow_run_labels = template["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"]
    worker_labels = by[("Deployment", "prefect-worker")]["spec"]["template"]["metadata"]["labels"]
    ollama_labels = by[("Deployment", "ollama")]["spec"]["template"]["metadata"]["labels"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for labels in (flow_run_labels, worker_labels):
        out = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        assert any(_admits(p, ollama_labels, 11434, direction="egress") for p in out if "egress" in p["spec"])
        into = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= ollama_labels.items()]
        assert any(_admits(p, labels, 11434, direction="ingress") for p in into if "ingress" in p["spec"])
