"""promptship's Kubernetes work pool on the local control plane: flow runs as Jobs, started by prefect-kubernetes'
own worker (``prefect worker start --type kubernetes``) and run by the sandbox kubelet as processes of the
promptship image (this checkout and its virtualenv, ``register_local_image``).

``install_pool_namespace`` puts into one namespace what the base job template
(``deployments/kubernetes-base-job-template.json``) names — the flow runs' ServiceAccount, the settings ConfigMap,
the credentials and store Secrets, the results claim — and the worker's ServiceAccount, Role and RoleBinding
from ``k8s/base``. The local control plane's gaps, and what is done about each here:

- no PersistentVolume provisioner: a PVC stays Pending, and so does every pod that mounts it (the job template's
  ``results`` volume). A PersistentVolume is provisioned statically (``hostPath`` to a directory of this machine,
  pre-bound to the claim by ``claimRef``), as an administrator does on a cluster without a provisioner; the
  controller-manager binds the claim, and the scheduler then places the pods;
- no mounts (the kubelet runs processes on the host's filesystem): the pool's job variables point
  ``PREFECT_LOCAL_STORAGE_PATH`` and ``PROMPTSHIP_PIPELINE__WORKSPACE_ROOT`` at the host directories that back
  the volumes instead of their mount paths;
- ServiceAccount admission off (no token mounted in pods): the worker runs outside the cluster with a
  kubeconfig holding its ServiceAccount's token (a TokenRequest), so it has exactly its Role's rights;
- NetworkPolicy not enforced, no CEL (validating admission policies), ``securityContext`` and resources
  ignored: nothing here relies on them; the manifest tests check what they say.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptship.errors import ConfigError
from promptship_sandbox.cluster import static_volume
from promptship_sandbox.prefect_server import process_group

POOL_IMAGE = "promptship.local/promptship:venv"  # the sandbox kubelet's name for this checkout + its .venv
REPO_ROOT = Path(__file__).resolve().parents[3]
JOB_TEMPLATE = REPO_ROOT / "deployments" / "kubernetes-base-job-template.json"
WORKER_RBAC = REPO_ROOT / "k8s" / "base" / "prefect-worker.yaml"
FLOW_RUNS = REPO_ROOT / "k8s" / "base" / "flow-runs.yaml"


def base_job_template() -> dict[str, Any]:
    """The Kubernetes work pool's base job template, as promptship ships it."""
    return json.loads(JOB_TEMPLATE.read_text())


def template_defaults() -> dict[str, Any]:
    props = base_job_template()["variables"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def _yaml_objects(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def worker_rbac(namespace: str) -> list[dict[str, Any]]:
    """The worker's ServiceAccount, Role and RoleBinding of ``k8s/base/prefect-worker.yaml``, in ``namespace``."""
    out = []
    for obj in _yaml_objects(WORKER_RBAC):
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            obj["metadata"]["namespace"] = namespace
            for s in obj.get("subjects") or []:
                s["namespace"] = namespace
            out.append(obj)
    if {o["kind"] for o in out} != {"ServiceAccount", "Role", "RoleBinding"}:
        raise ConfigError(f"{WORKER_RBAC}: the worker's ServiceAccount, Role and RoleBinding are not all there")
    return out


def _secret(namespace: str, name: str, data: Mapping[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": encoded}


def flow_run_objects(
    namespace: str,
    *,
    results_dir: Path,
    settings_env: Mapping[str, str],
    credentials_env: Mapping[str, str],
    store_env: Mapping[str, str],
) -> list[dict[str, Any]]:
    """What the job template names, in ``namespace``: the flow runs' ServiceAccount and results claim from
    ``k8s/base/flow-runs.yaml``; the settings ConfigMap, credentials and store Secrets with the given values; and
    a statically provisioned PersistentVolume (``hostPath`` = ``results_dir``) pre-bound to the claim."""
    defaults = template_defaults()
    objs: list[dict[str, Any]] = []
    claim: dict[str, Any] | None = None
    for obj in _yaml_objects(FLOW_RUNS):
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "ServiceAccount":
            objs.append(obj)
        elif obj["kind"] == "PersistentVolumeClaim":
            claim = obj
    if claim is None or claim["metadata"]["name"] != defaults["results_claim"]:
        raise ConfigError(f"{FLOW_RUNS}: no PersistentVolumeClaim {defaults['results_claim']!r}")
    claim["spec"]["storageClassName"] = ""  # bind to the static volume, never wait for a provisioner
    results_dir.mkdir(parents=True, exist_ok=True)
    volume = static_volume(
        f"{namespace}-results",
        namespace,
        claim["metadata"]["name"],
        claim,
        results_dir,
        labels={"promptship.dev/namespace": namespace},
    )
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": defaults["settings_config_map"], "namespace": namespace},
        "data": dict(settings_env),
    }
    objs += [
        volume,
        claim,
        config_map,
        _secret(namespace, defaults["credentials_secret"], credentials_env),
        _secret(namespace, defaults["store_secret"], store_env),
    ]
    return objs


def apply_objects(api_client: Any, objects: list[dict[str, Any]]) -> None:
    """Create each object (kept when it exists) with the admin client."""
    from kubernetes import utils
    from kubernetes.utils import FailToCreateError

    for obj in objects:
        try:
            utils.create_from_dict(api_client, obj)
        except FailToCreateError as exc:
            if not all(getattr(e, "status", None) == 409 for e in exc.api_exceptions):
                raise


def service_account_kubeconfig(api_client: Any, namespace: str, name: str, dest: Path) -> Path:
    """A kubeconfig for the ServiceAccount ``namespace/name`` (a one-hour TokenRequest token): what a pod of that
    account would have if the control plane mounted tokens."""
    from kubernetes import client

    answer = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        name,
        namespace,
        {"spec": {"audiences": [], "expirationSeconds": 3600}},  # type: ignore[arg-type]
    )
    if answer.status is None or not answer.status.token:
        raise ConfigError(f"no token for the ServiceAccount {namespace}/{name}")
    token = answer.status.token
    cfg = api_client.configuration
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "sandbox", "user": name, "namespace": namespace}}],
        "current-context": name,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(config, indent=2))
    dest.chmod(0o600)
    return dest


def create_kubernetes_pool(name: str) -> None:
    """The Kubernetes work pool ``name`` on the current Prefect API, with promptship's base job template."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="kubernetes", base_job_template=base_job_template()))
        except ObjectAlreadyExists:
            pass


@contextmanager
def running_kubernetes_worker(
    pool: str, kubeconfig: Path, namespace: str, log_path: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """prefect-kubernetes' worker (``prefect worker start --type kubernetes``) polling ``pool``, talking to the
    cluster with ``kubeconfig`` only, its observer watching ``namespace`` only; stopped by its process group."""
    worker_env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES": namespace,
        **(env or {}),
    }
    worker_env.pop("KUBERNETES_SERVICE_HOST", None)  # never take an in-cluster config by accident
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect) if prefect.exists() else "prefect", "worker", "start", "--pool", pool, "--type", "kubernetes"]
    with process_group(argv, cwd=REPO_ROOT, env=worker_env, log_path=log_path) as process:
        yield process


def prepare_namespace(
    admin: Any,
    control_plane: Any,
    namespace: str,
    work_dir: Path,
    *,
    settings_env: Mapping[str, str],
    credentials_env: Mapping[str, str] | None = None,
    store_env: Mapping[str, str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Everything the pool needs in a new ``namespace`` of ``control_plane`` (the promptship image registered,
    the worker's RBAC, what the job template names; host directories under ``work_dir``). Returns the worker's
    kubeconfig (its ServiceAccount's token) and the deployment's job variables for this namespace."""
    from kubernetes import client

    results, workspaces = work_dir / "results", work_dir / "workspaces"
    workspaces.mkdir(parents=True, exist_ok=True)
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    control_plane.register_local_image(POOL_IMAGE, REPO_ROOT, sys.executable, {"PYTHONPATH": pythonpath})
    apply_objects(admin, worker_rbac(namespace))
    apply_objects(
        admin,
        flow_run_objects(
            namespace,
            results_dir=results,
            settings_env=settings_env,
            credentials_env=credentials_env or {},
            store_env=store_env or {},
        ),
    )
    kubeconfig = service_account_kubeconfig(admin, namespace, "promptship-worker", work_dir / "worker.kubeconfig")
    job_variables = {
        "namespace": namespace,
        "image": POOL_IMAGE,
        "image_pull_policy": "Never",
        # no mounts on the sandbox node: the host directories behind the volumes (module docstring)
        "env": {"PREFECT_LOCAL_STORAGE_PATH": str(results), "PROMPTSHIP_PIPELINE__WORKSPACE_ROOT": str(workspaces)},
    }
    return kubeconfig, job_variables


def remove_namespace(admin: Any, namespace: str) -> None:
    """Delete ``namespace`` and the PersistentVolume provisioned for it."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(admin)
    for delete in (
        lambda: core.delete_namespace(namespace),
        lambda: core.delete_persistent_volume(f"{namespace}-results"),
    ):
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise
