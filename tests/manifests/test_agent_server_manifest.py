"""The OpenHands agent-server of ``k8s/``: what the rendered objects of both overlays give it (its own
ServiceAccount with no token and no rights, the environment of ``scripts/openhands.sh up``, the session key as one
projected file, a NetworkPolicy letting in only the flow runners and out only to the gateway and the git host, a
workspaces volume, limits, probes) — and, with the real agent-server, that the pod's own start command and
environment give a server that refuses requests without the key and holds no key in its environment."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptship_sandbox.net import free_port
from tests.conftest import REPO_ROOT, require
from tests.manifests.test_platform_manifests import OVERLAYS, kustomize

pytestmark = pytest.mark.manifests

NAME = "openhands-agent-server"
SESSION_KEY = "PROMPTSHIP_OPENHANDS__SESSION_API_KEY"
# GitHub's published `git` ranges (https://api.github.com/meta): the only non-cluster destinations allowed.
GIT_HOST_RANGES = [
    ipaddress.ip_network(c) for c in ("192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "143.55.64.0/20")
]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(request.param)


def _get(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _server(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    dep = _get(objects, "Deployment", NAME)
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    return dep, pod, container


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e  # the only operator the manifests use
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Labels of every pod the platform runs: its workloads' templates and the flow-run Job's."""
    out = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    template = json.loads((REPO_ROOT / "deployments" / "kubernetes-base-job-template.json").read_text())
    out["flow-run"] = template["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"]
    return out


def test_a_deployment_and_a_service_that_reaches_it(rendered):
    _, objects = rendered
    dep, pod, container = _server(objects)
    svc = _get(objects, "Service", NAME)
    assert svc["metadata"]["namespace"] == dep["metadata"]["namespace"] == "promptship"
    assert _selects({"matchLabels": svc["spec"]["selector"]}, pod["metadata"]["labels"])
    assert _selects(dep["spec"]["selector"], pod["metadata"]["labels"])
    (port,) = svc["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == port["port"] == 3000
    # the worker and the flow runs are pointed at this Service
    url = f"http://{NAME}.promptship.svc:{port['port']}"
    worker = _get(objects, "Deployment", "prefect-worker")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PROMPTSHIP_OPENHANDS__URL", "value": url} in worker["env"]
    assert _get(objects, "ConfigMap", "promptship-settings")["data"]["PROMPTSHIP_OPENHANDS__URL"] == url


def test_its_own_service_account_has_no_token_and_no_rights(rendered):
    _, objects = rendered
    _, pod, _ = _server(objects)
    sa_name = pod["spec"]["serviceAccountName"]
    assert sa_name == NAME
    sa = _get(objects, "ServiceAccount", sa_name)
    assert sa.get("automountServiceAccountToken") is False
    assert pod["spec"].get("automountServiceAccountToken") is False
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        names = {s.get("name") for s in binding.get("subjects", []) if s.get("kind") == "ServiceAccount"}
        assert sa_name not in names, f"{binding['kind']}/{binding['metadata']['name']} grants the agent-server rights"


def _script_env_names() -> set[str]:
    """The names `scripts/openhands.sh up` passes through `env -i` (its `local -a envs=( ... )` block)."""
    script = (REPO_ROOT / "scripts" / "openhands.sh").read_text()
    block = re.search(r"local -a envs=\((.*?)\n  \)", script, re.S)
    assert block, "scripts/openhands.sh has no envs=( ... ) block"
    return set(re.findall(r'^\s*"([A-Z_][A-Z0-9_]*)=', block.group(1), re.M))


def test_the_environment_is_the_scrubbed_one_of_openhands_sh(rendered):
    _, objects = rendered
    _, pod, container = _server(objects)
    script_names = _script_env_names()
    assert {"PATH", "HOME", "LITELLM_LOCAL_MODEL_COST_MAP"} <= script_names
    env = container.get("env", [])
    # Exactly the script's variables plus where the key file and git's identity are; all plain values.
    assert {e["name"] for e in env} == script_names | {"OPENHANDS_SESSION_KEY_FILE", "GIT_CONFIG_GLOBAL"}
    assert all(set(e) == {"name", "value"} for e in env), "an env var comes from a Secret or a field"
    assert "envFrom" not in container
    assert pod["spec"].get("enableServiceLinks") is False  # no *_SERVICE_HOST of every Service
    text = json.dumps(pod)
    for forbidden in ("promptship-github", "promptship-openrouter", "promptship-store", "GITHUB", "OPENROUTER"):
        assert forbidden not in text, f"{forbidden} reaches the agent-server's pod"


def test_the_session_key_is_one_projected_file_of_the_credentials_secret(rendered):
    _, objects = rendered
    _, pod, container = _server(objects)
    secret_volumes = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert len(secret_volumes) == 1
    (vol,) = secret_volumes
    secret = _get(objects, "Secret", vol["secret"]["secretName"])
    assert SESSION_KEY in secret["metadata"]["annotations"]["promptship.dev/expected-keys"].split(",")
    assert vol["secret"]["items"] == [{"key": SESSION_KEY, "path": "session-api-key"}]  # nothing else of it
    assert vol["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == vol["name"]]
    assert mount["readOnly"] is True
    key_file = next(e["value"] for e in container["env"] if e["name"] == "OPENHANDS_SESSION_KEY_FILE")
    assert key_file == f"{mount['mountPath']}/session-api-key"
    launch = _get(objects, "ConfigMap", "openhands-launch")
    assert "launch.py" in launch["data"] and "export_session_api_key" in launch["data"]["launch.py"]


def test_network_policy_lets_in_only_flow_runners_and_out_only_to_the_gateway_and_the_git_host(rendered):
    _, objects = rendered
    _, pod, _ = _server(objects)
    labels = pod["metadata"]["labels"]
    pods = _pod_labels(objects)
    pols = [o for o in objects if o["kind"] == "NetworkPolicy" and _selects(o["spec"]["podSelector"], labels)]
    assert {p["metadata"]["name"] for p in pols} >= {"default-deny", "allow-dns", NAME}
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and p["spec"]["podSelector"] == {} for p in pols)

    # Ingress: every rule names its peers; together they admit the worker and the flow-run pods, nothing else.
    ingress_rules = [r for p in pols if "Ingress" in p["spec"]["policyTypes"] for r in p["spec"].get("ingress", [])]
    assert ingress_rules and all(r.get("from") for r in ingress_rules)
    peers = [peer for r in ingress_rules for peer in r["from"]]
    assert all(set(peer) == {"podSelector"} for peer in peers), "ingress from outside the namespace or an IP range"
    admitted = {name for name, lbl in pods.items() if any(_selects(peer["podSelector"], lbl) for peer in peers)}
    assert admitted == {"prefect-worker", "flow-run"}
    assert {port["port"] for r in ingress_rules for port in r["ports"]} == {3000}

    # Egress: the gateway's pods, GitHub's git ranges on 443/22, DNS; no other pod, no other address.
    egress_rules = [r for p in pols if "Egress" in p["spec"]["policyTypes"] for r in p["spec"].get("egress", [])]
    reached_pods: set[str] = set()
    for rule in egress_rules:
        ports = {(port.get("protocol", "TCP"), port["port"]) for port in rule.get("ports", [])}
        if "to" not in rule:
            assert ports == {("UDP", 53), ("TCP", 53)}, f"egress to any address on {ports}"
            continue
        for peer in rule["to"]:
            if "podSelector" in peer:
                assert "namespaceSelector" not in peer
                reached_pods |= {n for n, lbl in pods.items() if _selects(peer["podSelector"], lbl)}
                assert ports == {("TCP", 4000)}
            else:
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert any(net.subnet_of(r) for r in GIT_HOST_RANGES), f"egress to {net}, not the git host"
                assert ports == {("TCP", 443), ("TCP", 22)}
    assert reached_pods == {"llm-gateway"}

    # ...and the other ends agree: the gateway admits it, the flow runners may reach it.
    def admits(target: str, source: str) -> bool:
        return any(
            _selects(peer["podSelector"], pods[source])
            for p in objects
            if p["kind"] == "NetworkPolicy" and _selects(p["spec"]["podSelector"], pods[target])
            for r in p["spec"].get("ingress", [])
            for peer in r.get("from", [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        )

    def may_reach(source: str, target: str) -> bool:
        return any(
            _selects(peer["podSelector"], pods[target])
            for p in objects
            if p["kind"] == "NetworkPolicy" and _selects(p["spec"]["podSelector"], pods[source])
            for r in p["spec"].get("egress", [])
            for peer in r.get("to", [])
            if "podSelector" in peer
        )

    assert admits("llm-gateway", NAME)
    assert may_reach("prefect-worker", NAME) and may_reach("flow-run", NAME)
    assert not may_reach(NAME, "prefect-server") and not may_reach(NAME, "promptship-postgres")


def test_workspaces_volume_is_an_empty_dir_locally_and_a_claim_shared_with_the_worker_on_a_cluster(rendered):
    overlay, objects = rendered
    _, pod, container = _server(objects)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["workspaces"] == "/var/lib/promptship/workspaces"
    if overlay == "local":
        assert volumes["workspaces"] == {"name": "workspaces", "emptyDir": {}}
        assert not [
            o for o in objects if o["kind"] == "PersistentVolumeClaim" and "workspaces" in o["metadata"]["name"]
        ]
        return
    claim = volumes["workspaces"]["persistentVolumeClaim"]["claimName"]
    pvc = _get(objects, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = _get(objects, "Deployment", "prefect-worker")["spec"]["template"]["spec"]
    (wvol,) = [v for v in worker["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    wcontainer = worker["containers"][0]
    (wmount,) = [m for m in wcontainer["volumeMounts"] if m["name"] == wvol["name"]]
    assert wmount["mountPath"] == mounts["workspaces"]  # the agent sees the checkout at the worker's path
    env = {e["name"]: e.get("value") for e in wcontainer["env"]}
    assert env["PROMPTSHIP_PIPELINE__WORKSPACE_ROOT"] == mounts["workspaces"]


def test_limits_probes_and_a_read_only_root(rendered):
    _, objects = rendered
    _, pod, container = _server(objects)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    http_port = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and http_port[get["port"]] == 3000, probe
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # every directory the server writes is a volume (the root is read-only)
    mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    home = next(e["value"] for e in container["env"] if e["name"] == "HOME")
    assert "/tmp" in mounts and container["workingDir"] in mounts
    assert any(home.startswith(m + "/") for m in mounts)


# ---- the pod's start, on the real agent-server ------------------------------------------------------------------


def _as_the_kubelet_would(tmp_path: Path, key: str) -> tuple[list[str], dict[str, str], Path, int]:
    """The local overlay's agent-server container as a host process: its command and its exact environment
    (nothing inherited), the ConfigMap's files and the projected key file at host paths."""
    from promptship_sandbox.agent_server import agent_server_installed, agent_server_venv

    ok, why = agent_server_installed()
    require("openhands agent-server", ok, why)
    objects = kustomize("local")
    _, _, container = _server(objects)
    launch = _get(objects, "ConfigMap", "openhands-launch")["data"]
    etc = tmp_path / "etc"
    (etc / "launch").mkdir(parents=True)
    (etc / "session").mkdir()
    for name, text in launch.items():
        (etc / "launch" / name).write_text(text)
    key_file = etc / "session" / "session-api-key"
    key_file.write_text(key)
    key_file.chmod(0o400)
    work = tmp_path / "var-lib-openhands"
    (work / "home").mkdir(parents=True)
    venv = agent_server_venv()

    def host(value: str) -> str:
        return (
            value.replace("/etc/openhands", str(etc))
            .replace("/var/lib/openhands", str(work))
            .replace("/opt/venv", str(venv))
        )

    env = {e["name"]: host(e["value"]) for e in container["env"]}
    port = free_port()
    cmd = [host(a) for a in container["command"] + container.get("args", [])]
    assert cmd[0] == "python"
    cmd[0] = str(venv / "bin" / "python")
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # 0.0.0.0 in the pod; only loopback here
    cmd[cmd.index("--port") + 1] = str(port)
    return cmd, env, work, port


@pytest.mark.openhands
def test_the_pods_start_command_gives_a_server_that_needs_the_key_and_hides_it(tmp_path: Path):
    key = "psk-sess-" + os.urandom(16).hex()
    cmd, env, work, port = _as_the_kubelet_would(tmp_path, key)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no /health within 240 s"
            time.sleep(0.5)
        assert httpx.get(f"{url}/api/conversations/search", timeout=10).status_code == 401
        wrong = {"X-Session-API-Key": "psk-sess-wrong"}
        assert httpx.get(f"{url}/api/conversations/search", headers=wrong, timeout=10).status_code == 401
        ok = httpx.get(f"{url}/api/conversations/search", headers={"X-Session-API-Key": key}, timeout=10)
        assert ok.status_code == 200, ok.text
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode()
        assert key not in environ  # what the agent's terminal inherits
        assert {kv.split("=", 1)[0] for kv in environ.split("\0") if kv} == set(env)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
    assert key not in (tmp_path / "server.log").read_text()


@pytest.mark.openhands
def test_an_empty_key_file_stops_the_start_with_a_message_naming_it(tmp_path: Path):
    cmd, env, work, _ = _as_the_kubelet_would(tmp_path, "")
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "session key file" in r.stderr and env["OPENHANDS_SESSION_KEY_FILE"] in r.stderr
    assert not list((work).glob("workspace/conversations/*"))
