"""The platform of ``k8s/overlays/local`` on the local control plane: the rendered overlay (``kubectl kustomize``),
mapped the way the sandbox kubelet can run it, applied with ``kubectl apply``.

    objects = render("local")
    local = localize(objects, state_dir, secrets={...})     # the mapping below, nothing else changed
    apply(kubeconfig, local.objects)                         # CRDs (without CEL), namespaces, then the rest
    wait_available(kubeconfig, "promptship", ["prefect-server", ...])
    local.service_urls["prefect-server"]                     # http://127.0.0.1:P, the kubelet's service proxy

The local control plane's gaps met by the platform, and what ``localize`` does about each:

- images: ``ghcr.io/promptship/promptship`` and ``prefecthq/prefect`` are *local images* of the kubelet (this
  checkout and its virtualenv, which holds the same Prefect); ``ghcr.io/promptship/openhands-agent-server`` is
  the agent-server's virtualenv (``scripts/openhands.sh install``) when it is installed (``register_images``);
  any other image (Ollama, PostgreSQL, curl) is a placeholder of the kubelet (Ready, no process);
- no PersistentVolume provisioner: every claim (Prefect's data, Ollama's models, the results, the store's
  StatefulSet claim) gets a static ``hostPath`` PersistentVolume pre-bound by ``claimRef``;
- no mounts (pods are host processes): each pod's volumes are host directories
  ``<state>/volumes/<workload>/<volume>`` and every env value or argument under a mount path is rewritten to the
  directory behind it; configMap and Secret volumes are written there as files (``items`` and ``defaultMode``
  honoured; a Secret's from the values ``secrets`` filled in); Prefect's data volume starts from the cached
  migrated database when there is one (a fresh one costs ~25 s of migrations);
- no pod network: each container listens on a host port of its own (pod annotation ``promptship.dev/host-ports``;
  its ``--port N`` argument and env values equal to its containerPort are rewritten, ``0.0.0.0`` becomes
  ``127.0.0.1``);
- no cluster DNS: each Service gets a fixed port of the kubelet's service proxy (annotation
  ``promptship.dev/local-port``) and ``http://<service>.<namespace>.svc:<port>`` in env values becomes
  ``http://127.0.0.1:<that port>``;
- Secret templates carry no value: ``secrets`` fills them (``stringData``), as an operator does out of band;
- NetworkPolicy not enforced, ServiceAccount admission off (no token in pods), ``securityContext`` and resources
  ignored: nothing here relies on them (the manifest tests check what they say);
- no CEL (a v1.20 API server): the Gateway API CRDs are installed without their ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptship.errors import ConfigError
from promptship_sandbox.cluster import static_volume
from promptship_sandbox.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCAL_IMAGES = ("ghcr.io/promptship/promptship", "prefecthq/prefect")
AGENT_SERVER_IMAGE = "ghcr.io/promptship/openhands-agent-server"
DEPLOYER_KUBECONFIG_DIR = "/etc/promptship/deployer"  # where the worker mounts promptship-deployer-kubeconfig
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def kubectl() -> str:
    for candidate in (REPO_ROOT / ".venv" / "bin" / "kubectl", Path(sys.executable).parent / "kubectl"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("kubectl")
    if found is None:
        raise ConfigError("no kubectl: install the dev dependencies (make install)")
    return found


def render(overlay: str = "local") -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/overlays/<overlay>``, as objects."""
    import yaml

    out = subprocess.run(
        [kubectl(), "kustomize", str(REPO_ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


@dataclass
class LocalPlatform:
    objects: list[dict[str, Any]]
    state_dir: Path
    service_urls: dict[str, str] = field(default_factory=dict)
    local_images: list[str] = field(default_factory=list)
    agent_server_image: str | None = None  # the agent-server's image as the overlay names it (tag included)


def localize(
    objects: Sequence[Mapping[str, Any]],
    state_dir: Path,
    *,
    secrets: Mapping[str, Mapping[str, str]] = {},  # noqa: B006 (read only)
    prefect_template_db: Path | None = None,
) -> LocalPlatform:
    """The rendered platform mapped onto the sandbox kubelet (module docstring). ``objects`` is not changed."""
    objs = [copy.deepcopy(dict(o)) for o in objects]
    state_dir = state_dir.resolve()
    out = LocalPlatform(objects=objs, state_dir=state_dir)
    known = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    unknown = set(secrets) - known
    if unknown:
        raise ConfigError(f"secrets: no Secret template named {', '.join(sorted(unknown))} in the overlay")

    # Services: a fixed local port each, and the in-cluster URL → that port
    url_map: dict[str, str] = {}
    for svc in (o for o in objs if o["kind"] == "Service" and o["spec"].get("selector")):
        meta = svc["metadata"]
        port = free_port()
        meta.setdefault("annotations", {})["promptship.dev/local-port"] = str(port)
        first = svc["spec"]["ports"][0]["port"]
        url_map[f"{meta['name']}.{meta['namespace']}.svc:{first}"] = f"127.0.0.1:{port}"
        url_map[f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{first}"] = f"127.0.0.1:{port}"
        out.service_urls[meta["name"]] = f"http://127.0.0.1:{port}"

    def urls(value: str) -> str:
        for k, v in url_map.items():
            value = value.replace(k, v)
        return value

    for obj in objs:
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Secret" and meta["name"] in secrets:
            obj["stringData"] = dict(secrets[meta["name"]])
        if kind == "ConfigMap":
            obj["data"] = {k: urls(v) for k, v in (obj.get("data") or {}).items()}
        if kind not in WORKLOADS:
            continue
        pod = obj["spec"]["template"]
        spec = pod["spec"]
        volumes_dir = state_dir / "volumes" / meta["name"]
        host_dirs: dict[str, Path] = {}
        for tpl in obj["spec"].get("volumeClaimTemplates", []):
            host_dirs[tpl["metadata"]["name"]] = volumes_dir / tpl["metadata"]["name"]
        for vol in spec.get("volumes", []):
            d = volumes_dir / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            host_dirs[vol["name"]] = d
            if "configMap" in vol:
                cm = next(
                    (o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == vol["configMap"]["name"]),
                    None,
                )
                for k, v in ((cm or {}).get("data") or {}).items():
                    (d / k).write_text(v)
            if "secret" in vol:
                _write_secret_volume(d, vol["secret"], secrets.get(vol["secret"]["secretName"], {}))
        host_ports: dict[str, int] = {}
        for c in spec.get("containers", []):
            mounts = sorted(
                ((m["mountPath"].rstrip("/"), host_dirs[m["name"]]) for m in c.get("volumeMounts", [])),
                key=lambda m: -len(m[0]),
            )

            def local(value: str, mounts: list[tuple[str, Path]] = mounts) -> str:
                for path, d in mounts:
                    if value == path or value.startswith(path + "/"):
                        return str(d) + value[len(path) :]
                return urls(value)

            ports = [p["containerPort"] for p in c.get("ports", [])]
            if ports:
                host_ports[c["name"]] = free_port()
            mapped = {str(ports[0]): str(host_ports[c["name"]])} if ports else {}
            for key in ("command", "args"):
                if key in c:
                    c[key] = [mapped.get(a, "127.0.0.1" if a == "0.0.0.0" else local(a)) for a in c[key]]
            for e in c.get("env", []):
                if "value" in e:
                    v = str(e["value"])
                    e["value"] = mapped.get(v, "127.0.0.1" if v == "0.0.0.0" else local(v))
            if _image_name(c["image"]) in LOCAL_IMAGES and c["image"] not in out.local_images:
                out.local_images.append(c["image"])
            if _image_name(c["image"]) == AGENT_SERVER_IMAGE:
                out.agent_server_image = c["image"]
            if c["image"].startswith("prefecthq/prefect") and "data" in host_dirs:
                template = prefect_template_db
                db = host_dirs["data"] / "prefect.db"
                if template is not None and template.exists() and not db.exists():
                    shutil.copyfile(template, db)
        if host_ports:
            pod.setdefault("metadata", {}).setdefault("annotations", {})["promptship.dev/host-ports"] = json.dumps(
                host_ports
            )

    # a static volume for every claim (and every StatefulSet claim template)
    claims = [
        (o["metadata"]["namespace"], o["metadata"]["name"], o) for o in objs if o["kind"] == "PersistentVolumeClaim"
    ]
    for sts in (o for o in objs if o["kind"] == "StatefulSet"):
        for tpl in sts["spec"].get("volumeClaimTemplates", []):
            for i in range(sts["spec"].get("replicas", 1)):  # the claims the StatefulSet controller will make
                claims.append(
                    (sts["metadata"]["namespace"], f"{tpl['metadata']['name']}-{sts['metadata']['name']}-{i}", tpl)
                )
    for namespace, name, claim in claims:
        claim["spec"]["storageClassName"] = ""  # bind to the static volume, never wait for a provisioner
        d = state_dir / "pv" / name
        d.mkdir(parents=True, exist_ok=True)
        objs.append(static_volume(f"local-{namespace}-{name}", namespace, name, claim, d))
    return out


def with_outside_services(
    objects: list[dict[str, Any]],
    *,
    github_api_url: str | None = None,
    llm_base_url: str | None = None,
    deployer_kubeconfig: bool = False,
    worker_env: Mapping[str, str] = {},  # noqa: B006 (read only)
) -> None:
    """What an operator patches into the rendered platform (in place, before ``localize``) to point it at its
    outside services:

    - ``github_api_url``: the worker's code host (GitHub Enterprise, or the sandbox's forge):
      ``PROMPTSHIP_GITHUB__API_URL``;
    - ``llm_base_url``: the gateway's providers — its local (Ollama protocol, ``PROMPTSHIP_LLM__OLLAMA_BASE_URL``)
      and cloud (OpenAI protocol, ``<url>/v1``, ``PROMPTSHIP_LLM__OPENROUTER_BASE_URL``) base URLs;
    - ``deployer_kubeconfig``: the deployer's credentials for a target cluster that is not this one: the Secret
      ``promptship-deployer-kubeconfig`` (key ``kubeconfig``) mounted read-only into the worker at
      ``/etc/promptship/deployer`` and ``PROMPTSHIP_KUBE__KUBECONFIG`` naming the file (its flow runs inherit it);
    - ``worker_env``: further ``PROMPTSHIP_*`` settings of the worker (and so of its flow runs).
    """

    def deployment(name: str) -> dict[str, Any]:
        found = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        if not found:
            raise ConfigError(f"the rendered platform has no Deployment {name}")
        return found[0]

    def set_env(container: dict[str, Any], name: str, value: str) -> None:
        env = container.setdefault("env", [])
        env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]

    worker = deployment("prefect-worker")["spec"]["template"]["spec"]
    (wc,) = worker["containers"]
    for name, value in worker_env.items():
        set_env(wc, name, value)
    if github_api_url is not None:
        set_env(wc, "PROMPTSHIP_GITHUB__API_URL", github_api_url)
    if deployer_kubeconfig:
        worker.setdefault("volumes", []).append(
            {
                "name": "deployer-kubeconfig",
                "secret": {
                    "secretName": "promptship-deployer-kubeconfig",
                    "defaultMode": 0o400,
                    "items": [{"key": "kubeconfig", "path": "kubeconfig"}],
                },
            }
        )
        wc.setdefault("volumeMounts", []).append(
            {"name": "deployer-kubeconfig", "mountPath": DEPLOYER_KUBECONFIG_DIR, "readOnly": True}
        )
        set_env(wc, "PROMPTSHIP_KUBE__KUBECONFIG", f"{DEPLOYER_KUBECONFIG_DIR}/kubeconfig")
    if llm_base_url is not None:
        (gc,) = deployment("llm-gateway")["spec"]["template"]["spec"]["containers"]
        set_env(gc, "PROMPTSHIP_LLM__OLLAMA_BASE_URL", llm_base_url)
        set_env(gc, "PROMPTSHIP_LLM__OPENROUTER_BASE_URL", llm_base_url.rstrip("/") + "/v1")


def register_images(
    control_plane: Any,
    local: LocalPlatform,
    *,
    python: Path,
    env: Mapping[str, str] = {},  # noqa: B006 (read only)
    agent_server_python: Path | None = None,
) -> None:
    """Map the platform's images onto this machine: the promptship and Prefect images are this checkout with
    ``python`` (its virtualenv) and ``env`` (the image's ``ENV``); with ``agent_server_python`` the agent-server's
    image is that virtualenv, run from the pod's ``state`` volume (the image's working directory
    ``/var/lib/openhands``, where the server keeps its conversations). Without it the agent-server stays a
    placeholder."""
    for image in local.local_images:
        control_plane.register_local_image(image, REPO_ROOT, python, dict(env))
    if agent_server_python is not None and local.agent_server_image is not None:
        workdir = local.state_dir / "volumes" / "openhands-agent-server" / "state"
        control_plane.register_local_image(local.agent_server_image, workdir, agent_server_python, {})


def _write_secret_volume(d: Path, source: Mapping[str, Any], data: Mapping[str, str]) -> None:
    """A Secret volume's files as the kubelet projects them: every key, or only ``items`` (key → path), with
    ``defaultMode`` (default 0644, as Kubernetes). A key the filled Secret lacks is left out (an optional item)."""
    mode = int(source.get("defaultMode", 0o644))
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] not in data:
            continue
        f = d / item["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.unlink(missing_ok=True)
        f.write_text(data[item["key"]])
        f.chmod(int(item.get("mode", mode)))


def without_cel(node: Any) -> Any:
    """A CRD without its CEL rules (``x-kubernetes-validations``) and empty-string defaults, which a v1.20 API
    server does not know (it mangles those defaults into null)."""
    if isinstance(node, dict):
        return {
            k: without_cel(v)
            for k, v in node.items()
            if k != "x-kubernetes-validations" and not (k == "default" and v == "")
        }
    if isinstance(node, list):
        return [without_cel(v) for v in node]
    return node


def _run(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True, text=True
    )


def apply(kubeconfig: Path, objects: Sequence[Mapping[str, Any]], *, crd_files: Sequence[Path] = ()) -> None:
    """``kubectl apply``: the CRDs (CEL rules dropped), the namespaces, then everything else."""
    import yaml

    for crd in crd_files:
        docs = [without_cel(d) for d in yaml.safe_load_all(crd.read_text()) if d]
        r = _run(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(docs))
        if r.returncode != 0:
            raise ConfigError(f"applying {crd.name}: {r.stderr.strip()}")
    kinds = {o["kind"] for o in objects}
    namespaces = [dict(o) for o in objects if o["kind"] == "Namespace"]
    r = _run(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(namespaces))
    if r.returncode != 0:
        raise ConfigError(f"applying the namespaces: {r.stderr.strip()}")
    if crd_files and kinds & {"Gateway", "HTTPRoute"}:
        deadline = time.monotonic() + 30
        while _run(kubeconfig, "get", "httproutes.gateway.networking.k8s.io", "-A").returncode != 0:
            if time.monotonic() > deadline:
                raise ConfigError("the Gateway API CRDs are not served after 30 s")
            time.sleep(0.5)
    rest = [dict(o) for o in objects if o["kind"] != "Namespace"]
    r = _run(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(rest))
    if r.returncode != 0:
        raise ConfigError(f"kubectl apply: {r.stderr.strip()}")


def deployment_status(kubeconfig: Path, namespace: str) -> dict[str, dict[str, Any]]:
    r = _run(kubeconfig, "-n", namespace, "get", "deployments", "-o", "json")
    if r.returncode != 0:
        raise ConfigError(f"kubectl get deployments: {r.stderr.strip()}")
    return {d["metadata"]["name"]: d.get("status", {}) for d in json.loads(r.stdout)["items"]}


def available(status: Mapping[str, Any]) -> bool:
    """A Deployment's ``Available`` condition is True."""
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or [])


def wait_available(
    kubeconfig: Path, namespace: str, names: Sequence[str], *, timeout_s: float = 150.0
) -> dict[str, float]:
    """Seconds until each Deployment in ``names`` was Available; ConfigError naming the others at the timeout."""
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    while True:
        status = deployment_status(kubeconfig, namespace)
        for name in names:
            if name not in seen and available(status.get(name, {})):
                seen[name] = time.monotonic() - t0
        if len(seen) == len(names):
            return seen
        if time.monotonic() - t0 > timeout_s:
            missing = sorted(set(names) - set(seen))
            raise ConfigError(f"not Available after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(1.0)
