"""The local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager + kube-scheduler (built
from Debian's source package by ``scripts/cluster.sh build``) + the sandbox kubelet, all on 127.0.0.1.

    python -m promptship_sandbox.cluster up [--state-dir D] [--registry DIR ...]   # prints the kubeconfig path
    python -m promptship_sandbox.cluster down [--state-dir D]
    python -m promptship_sandbox.cluster status [--state-dir D]

In Python: ``with running_control_plane(state_dir) as cp: cp.kubeconfig``. Every process is started by PID
and stopped by PID (``pids.json`` in the state dir). Certificates and the admin token are made at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from promptship.errors import ConfigError
from promptship_sandbox.net import free_port

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_NAME = "sandbox-node"
# Only builds with Debian's reflect2 1.0.2 swapped in (scripts/cluster.sh): 1.0.1 crashes the API server
# built with Go >= 1.18 on the first custom resource it encodes.
BUILD_MARKER = ".reflect2-1.0.2"


def cache_dir() -> Path:
    return Path(os.environ.get("PROMPTSHIP_CACHE") or Path.home() / ".cache" / "promptship")


def default_state_dir() -> Path:
    return Path(os.environ.get("PROMPTSHIP_HOME") or ".promptship").resolve() / "cluster"


def find_binaries(root: Path | None = None) -> Path | None:
    """The newest cached build holding all three control-plane binaries (and etcd on PATH), or None."""
    kube = (root or cache_dir()) / "kube"
    if shutil.which("etcd") is None or not kube.is_dir():
        return None
    candidates = sorted((d for d in kube.iterdir() if d.is_dir()), key=lambda p: p.name, reverse=True)
    for d in candidates:
        if all(os.access(d / b, os.X_OK) for b in BINARIES) and (d / BUILD_MARKER).exists():
            return d
    return None


def static_volume(
    name: str,
    claim_namespace: str,
    claim_name: str,
    claim: dict[str, Any],
    path: Path,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``hostPath`` PersistentVolume at ``path``, pre-bound (``claimRef``) to the claim ``claim_namespace/
    claim_name`` with ``claim``'s size and access modes: the local control plane has no volume provisioner."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"]["accessModes"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": claim_namespace, "name": claim_name},
        },
    }


@dataclass
class ControlPlane:
    """A running local control plane."""

    state_dir: Path
    api_url: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    def add_registry(self, path: Path) -> None:
        """Let the sandbox kubelet resolve images published under ``path`` (a forge's ``registry`` dir)."""
        add_registry(self.kubelet_dir, path)

    def set_image_fault(self, image: str, fault: str | None) -> None:
        """Make pods of ``image`` ``crash`` (exit at once) or stay ``unready``; None clears it."""
        set_image_fault(self.kubelet_dir, image, fault)

    def register_local_image(
        self, image: str, workdir: Path, python: Path | str, env: dict[str, str] | None = None
    ) -> None:
        """Let pods of ``image`` run in ``workdir`` with the interpreter ``python`` (and the tools beside it)."""
        register_local_image(self.kubelet_dir, image, workdir, python, env)


def add_registry(kubelet_dir: Path, path: Path) -> None:
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    f = kubelet_dir / "registries.txt"
    existing = f.read_text().splitlines() if f.exists() else []
    if str(path.resolve()) not in existing:
        with f.open("a") as out:
            out.write(f"{path.resolve()}\n")


def register_local_image(
    kubelet_dir: Path, image: str, workdir: Path, python: Path | str, env: dict[str, str] | None = None
) -> None:
    """Map ``image`` to a directory and a virtualenv of this machine (the sandbox kubelet's local images): the
    promptship image is a checkout and its ``.venv``. ``env`` plays the image's ``ENV``."""
    if not Path(workdir).is_dir() or not Path(python).exists():
        raise ConfigError(f"local image {image}: {workdir} must be a directory and {python} an interpreter")
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    f = kubelet_dir / "local-images.json"
    images: dict[str, dict[str, object]] = json.loads(f.read_text()) if f.exists() else {}
    images[image] = {"workdir": str(Path(workdir).resolve()), "python": str(python), "env": dict(env or {})}
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(images))
    tmp.replace(f)


def set_image_fault(kubelet_dir: Path, image: str, fault: str | None) -> None:
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    f = kubelet_dir / "faults.json"
    faults: dict[str, str] = json.loads(f.read_text()) if f.exists() else {}
    if fault is None:
        faults.pop(image, None)
    else:
        faults[image] = fault
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults))
    tmp.replace(f)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "apiserver.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=promptship-sandbox-ca", cwd=pki)  # fmt: skip
    (pki / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)  # fmt: skip
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.cnf", "-extensions", "ext",
             cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _write_kubeconfig(path: Path, api_url: str, ca: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": api_url, "certificate-authority": str(ca)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "admin", "namespace": "default"}}],
        "current-context": "sandbox",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML: kubectl and the client read it
    path.chmod(0o600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _spawn(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> int:
    log = (logs / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    log.close()
    return proc.pid


def _ready(api_url: str, ca: Path, token: str) -> bool:
    try:
        r = httpx.get(f"{api_url}/readyz", verify=str(ca), headers={"Authorization": f"Bearer {token}"}, timeout=2)
        return r.status_code == 200
    except httpx.HTTPError:
        return False


def _node_schedulable(api_url: str, ca: Path, token: str) -> bool:
    try:
        r = httpx.get(
            f"{api_url}/api/v1/nodes/{NODE_NAME}",
            verify=str(ca),
            headers={"Authorization": f"Bearer {token}"},
            timeout=2,
        )
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    node = r.json()
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
    )
    taints = [t for t in node.get("spec", {}).get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
    return ready and not taints


def status(state_dir: Path) -> ControlPlane | None:
    """The control plane running from ``state_dir`` (all processes alive and the API ready), else None."""
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        return None
    info = json.loads(pids_file.read_text())
    pids: dict[str, int] = info.get("pids", {})
    if not pids or not all(_alive(p) for p in pids.values()):
        return None
    token = (state_dir / "pki" / "admin.token").read_text().strip()
    if not _ready(info["api_url"], state_dir / "pki" / "ca.crt", token):
        return None
    return ControlPlane(state_dir=state_dir, api_url=info["api_url"], pids=pids)


def start(
    state_dir: Path | None = None,
    *,
    bin_dir: Path | None = None,
    registries: Sequence[Path] = (),
    timeout_s: float = 90.0,
    reuse: bool = True,
) -> ControlPlane:
    """Start (or, with ``reuse``, find) the control plane under ``state_dir``; return once a node is Ready."""
    state_dir = (state_dir or default_state_dir()).resolve()
    if reuse and (cp := status(state_dir)) is not None:
        for r in registries:
            cp.add_registry(r)
        return cp
    stop(state_dir)
    bin_dir = bin_dir or find_binaries()
    if bin_dir is None:
        raise ConfigError("no control-plane binaries: run `make cluster-build` (scripts/cluster.sh build)")
    logs = state_dir / "logs"
    pki = state_dir / "pki"
    for d in (state_dir / "etcd", logs, pki, state_dir / "kubelet"):
        d.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state_dir / "etcd", ignore_errors=True)
    _make_pki(pki)
    token = secrets.token_hex(24)
    (pki / "admin.token").write_text(token)
    (pki / "admin.token").chmod(0o600)
    (pki / "tokens.csv").write_text(f'{token},promptship-admin,1,"system:masters"\n')
    (pki / "tokens.csv").chmod(0o600)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    api_url = f"https://127.0.0.1:{api_port}"
    _write_kubeconfig(state_dir / "kubeconfig", api_url, pki / "ca.crt", token)
    for r in registries:
        add_registry(state_dir / "kubelet", r)

    pids: dict[str, int] = {}

    def save() -> None:
        (state_dir / "pids.json").write_text(json.dumps({"api_url": api_url, "pids": pids}))

    try:
        pids["etcd"] = _spawn("etcd", [
            shutil.which("etcd") or "etcd", "--name", "sandbox", "--data-dir", str(state_dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"sandbox=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ], logs)  # fmt: skip
        save()
        pids["kube-apiserver"] = _spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            "--insecure-port=0", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none", "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true", "--profiling=false", "--v=0",
        ], logs)  # fmt: skip
        save()
        deadline = time.monotonic() + timeout_s

        def wait_until(ready: Callable[[], bool], what: str) -> None:
            while not ready():
                dead = [name for name, pid in pids.items() if not _alive(pid)]
                if dead:
                    raise ConfigError(f"control plane: {', '.join(dead)} exited; see {logs}/<name>.log")
                if time.monotonic() > deadline:
                    raise ConfigError(f"control plane: {what} not ready after {timeout_s:.0f} s; see {logs}")
                time.sleep(0.2)

        # the controller-manager gives up (exits) when the API server is slow to become healthy on a busy
        # machine: start it only once the API server is ready
        wait_until(lambda: _ready(api_url, pki / "ca.crt", token), "kube-apiserver")
        kubeconfig = str(state_dir / "kubeconfig")
        pids["kube-controller-manager"] = _spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
            "--port=0", "--secure-port=0", "--leader-elect=false", "--profiling=false",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=false", "--controllers=*,-csrsigning", "--v=0",
        ], logs)  # fmt: skip
        save()
        pids["kube-scheduler"] = _spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
            "--port=0", "--secure-port=0", "--leader-elect=false", "--profiling=false", "--v=0",
        ], logs)  # fmt: skip
        save()
        pids["kubelet"] = _spawn("kubelet", [
            sys.executable, "-m", "promptship_sandbox.kubelet", "--kubeconfig", kubeconfig,
            "--state-dir", str(state_dir / "kubelet"), "--node-name", NODE_NAME,
        ], logs)  # fmt: skip
        save()
        wait_until(lambda: _node_schedulable(api_url, pki / "ca.crt", token), "the sandbox node")
    except BaseException:
        stop(state_dir)
        raise
    return ControlPlane(state_dir=state_dir, api_url=api_url, pids=pids)


def stop(state_dir: Path | None = None, *, grace_s: float = 10.0) -> list[str]:
    """Stop every process ``start`` recorded under ``state_dir``, by PID (kubelet first, etcd last)."""
    state_dir = (state_dir or default_state_dir()).resolve()
    pids_file = state_dir / "pids.json"
    if not pids_file.exists():
        return []
    pids: dict[str, int] = json.loads(pids_file.read_text()).get("pids", {})
    stopped = []
    for name in reversed(list(pids)):
        pid = pids[name]
        if not _alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        stopped.append(name)
    pids_file.unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def running_control_plane(
    state_dir: Path, *, registries: Sequence[Path] = (), bin_dir: Path | None = None
) -> Iterator[ControlPlane]:
    """A control plane for the block; stops what it started at the end (a reused one is left running)."""
    existing = status(state_dir.resolve())
    cp = start(state_dir, registries=registries, bin_dir=bin_dir)
    try:
        yield cp
    finally:
        if existing is None:
            stop(state_dir)


def service_url(kubeconfig: Path, namespace: str, service: str, *, timeout_s: float = 30.0, path: str = "") -> str:
    """The stable local URL (``http://127.0.0.1:P``) the sandbox kubelet's service proxy gives ``service``
    (annotation ``promptship.dev/local-url``), waiting until it is there; ``path`` is appended."""
    config = json.loads(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(
                f"{cluster['server']}/api/v1/namespaces/{namespace}/services/{service}",
                verify=cluster["certificate-authority"],
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            if r.status_code == 200:
                url = (r.json()["metadata"].get("annotations") or {}).get("promptship.dev/local-url")
                if url:
                    return url + path
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"service {namespace}/{service} got no local URL within {timeout_s:g} s")
        time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptship_sandbox.cluster")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--registry", type=Path, action="append", default=[], help="a forge's registry dir")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    if args.action == "up":
        t0 = time.monotonic()
        try:
            cp = start(state_dir, bin_dir=args.bin_dir, registries=args.registry)
        except ConfigError as exc:
            print(f"cluster up failed: {exc}", file=sys.stderr)
            return 1
        print(f"control plane ready in {time.monotonic() - t0:.1f} s at {cp.api_url}", file=sys.stderr)
        print(cp.kubeconfig)
        return 0
    if args.action == "down":
        stopped = stop(state_dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
        return 0
    cp = status(state_dir)
    if cp is None:
        print(f"not running (state dir {state_dir})")
        return 1
    print(f"running at {cp.api_url}; kubeconfig {cp.kubeconfig}; pids {cp.pids}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
