"""The sandbox kubelet: a node of the local control plane that runs pods as real local processes.

    python -m promptship_sandbox.kubelet --kubeconfig K --state-dir D [--node-name N] [--registry DIR ...]

What it does, like a kubelet, through the API server only:
- registers a Ready node and keeps it alive (node status heartbeat + a Lease in ``kube-node-lease``);
- for every pod the scheduler binds to it, runs each container (docs/CONTRACTS.md "Images"): the image
  ``<host>/<owner>/<repo>/<context>:<sha>`` is looked up in the registry directories
  (``<registry>/<owner>/<repo>/<context>/<sha>.json``), ``sha`` is checked out of the record's ``git_dir`` into
  ``<state>/checkouts/<sha>``, and the container's ``command`` + ``args`` (else the Dockerfile's ENTRYPOINT/CMD)
  run in ``<checkout>/<context>`` with ``python`` meaning this interpreter and ``HOST=127.0.0.1``,
  ``PORT=<free port>``, ``PROMPTSHIP_IMAGE``, ``PROMPTSHIP_IMAGE_SHA`` added to the container's env;
- reports the port in the pod annotation ``promptship.dev/host-port`` and marks the pod Running, and Ready
  only while its readinessProbe (httpGet path / tcpSocket) passes on ``127.0.0.1:PORT``;
- restarts a container whose process exits (``CrashLoopBackOff`` with back-off), finalises deleted pods after
  stopping their processes;
- a ``forge.local/...`` image with no registry record stays ``ErrImagePull`` (never ready); any other image
  (``nginx:1.25``…) is a *placeholder*: Ready with no process;
- a *service proxy*: every Service with a selector gets a listener on ``127.0.0.1:<port>`` (annotation
  ``promptship.dev/local-url``) forwarding TCP to a ready pod's host port, so a health URL stays stable across
  rollouts and rollbacks. The port is fixed when the Service asks (annotation ``promptship.dev/local-port``, or
  ``nodePort`` of a NodePort Service). Pod and cluster IPs are fake and never contacted.

- a *local image* (``<state>/local-images.json`` = ``{"<image>": {"workdir": D, "python": P, "env": {...}}}``,
  written by ``promptship_sandbox.cluster.register_local_image``) runs from a directory already on this machine
  with its own interpreter — the promptship image is the project's checkout and virtualenv: ``python`` and the
  tools next to ``P`` (``prefect``…) are that virtualenv's, ``env`` is the image's ``ENV``;
- *eviction*, as the kubelet evicts under node pressure: a pod annotated ``promptship.dev/sandbox-evict`` (the
  value is the grace in seconds, ``0`` = a hard eviction: SIGKILL at once; otherwise SIGTERM, then SIGKILL
  after the grace) has its processes stopped and is left ``Failed`` with reason ``Evicted`` — never restarted,
  not deleted (the Job controller counts it as a failed pod, as on a real node).
Not a kubelet: no mounts (volumes are not mounted; a process sees the host's filesystem), no users
(``securityContext`` is ignored: processes run as the kubelet's user), no ServiceAccount token, no NetworkPolicy,
no resource limits, no log endpoint (``kubectl logs`` fails; the log is ``<state>/logs/<ns>_<pod>_<ctr>.log``).

Test hooks: ``<state>/faults.json`` = ``{"<image>": "crash" | "unready"}`` or the pod annotation
``promptship.dev/sandbox-fault``; ``<state>/registries.txt`` adds registry directories while running.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import logging
import os
import re
import selectors
import shlex
import signal
import socket
import socketserver
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promptship_sandbox.net import free_port

log = logging.getLogger("promptship.kubelet")

HOST_PORT_ANNOTATION = "promptship.dev/host-port"
FAULT_ANNOTATION = "promptship.dev/sandbox-fault"
LOCAL_URL_ANNOTATION = "promptship.dev/local-url"
LOCAL_PORTS_ANNOTATION = "promptship.dev/local-ports"
LOCAL_PORT_ANNOTATION = "promptship.dev/local-port"
EVICT_ANNOTATION = "promptship.dev/sandbox-evict"
PLACEHOLDER_HOSTS_NEEDING_RECORD = ("forge.local",)
_IMAGE_RE = re.compile(
    r"^(?P<host>[^/]+)/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?P<context>[^:@]+):(?P<sha>[0-9a-f]{7,64})$"
)
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONDONTWRITEBYTECODE", "LITELLM_LOCAL_MODEL_COST_MAP",
             "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "PROMPTSHIP_CACHE")  # fmt: skip


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _die_with_parent() -> None:  # runs in the child before exec: a killed kubelet takes its pods along
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


@dataclass
class ImageRecord:
    image: str
    sha: str
    context: str
    git_dir: str


@dataclass
class LocalImage:
    """An image that is a directory and an interpreter of this machine (``<state>/local-images.json``)."""

    workdir: Path
    python: str
    env: dict[str, str]


def lookup_image(image: str, registries: Sequence[Path]) -> ImageRecord | None:
    """The registry record of ``image`` (docs/CONTRACTS.md "Images"), or None."""
    m = _IMAGE_RE.match(image)
    if not m:
        return None
    for reg in registries:
        f = reg / m["owner"] / m["repo"] / m["context"] / f"{m['sha']}.json"
        if f.is_file():
            data = json.loads(f.read_text())
            return ImageRecord(
                image=image,
                sha=data.get("sha", m["sha"]),
                context=data.get("context", m["context"]),
                git_dir=data["git_dir"],
            )
    return None


def needs_record(image: str) -> bool:
    """True for images that must come from a registry record (no record: ErrImagePull)."""
    return image.split("/", 1)[0] in PLACEHOLDER_HOSTS_NEEDING_RECORD


def _dockerfile_instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line of a Dockerfile, continuation lines joined; none if it is absent."""
    if not dockerfile.is_file():
        return
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            yield parts[0].upper(), parts[1].strip()


def dockerfile_command(dockerfile: Path) -> tuple[list[str], list[str]]:
    """(ENTRYPOINT, CMD) of a Dockerfile's last stage (exec form or shell form)."""
    entry: list[str] = []
    cmd: list[str] = []
    for word, rest in _dockerfile_instructions(dockerfile):
        if word == "FROM":
            entry, cmd = [], []
        if word not in ("ENTRYPOINT", "CMD"):
            continue
        try:
            value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        except json.JSONDecodeError:
            value = ["/bin/sh", "-c", rest]
        if word == "ENTRYPOINT":
            entry = [str(v) for v in value]
        else:
            cmd = [str(v) for v in value]
    return entry, cmd


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """``ENV`` of a Dockerfile's last stage (``K=V …`` and ``K V`` forms; ``$VAR`` references are dropped
    with their variable, and PATH/HOME are left to the host)."""
    env: dict[str, str] = {}
    for word, rest in _dockerfile_instructions(dockerfile):
        if word == "FROM":
            env = {}
        if word != "ENV":
            continue
        try:
            tokens = shlex.split(rest)
        except ValueError:
            continue
        pairs = [t.split("=", 1) for t in tokens] if "=" in tokens[0] else [[tokens[0], " ".join(tokens[1:])]]
        for pair in pairs:
            if len(pair) == 2 and "$" not in pair[1] and pair[0] not in ("PATH", "HOME"):
                env[pair[0]] = pair[1]
    return env


def resolve_argv(argv: list[str], python: str) -> list[str]:
    """``python`` → this interpreter; a tool installed next to it (uvicorn…) → that executable."""
    if not argv:
        return argv
    head = argv[0]
    if re.fullmatch(r"python(3(\.\d+)?)?", head):
        return [python, *argv[1:]]
    candidate = Path(python).parent / head
    if "/" not in head and candidate.exists():
        return [str(candidate), *argv[1:]]
    return argv


def checkout(record: ImageRecord, root: Path) -> Path:
    """A checkout of ``record.sha`` under ``root`` (cached per commit)."""
    dest = root / record.sha
    if (dest / ".promptship-complete").exists():
        return dest
    tmp = root / f".{record.sha}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    data = subprocess.run(
        ["git", f"--git-dir={record.git_dir}", "archive", "--format=tar", record.sha],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / ".promptship-complete").write_text(record.image)
    try:
        tmp.rename(dest)
    except OSError:  # someone else finished first
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return dest


# ----------------------------------------------------------------------------------------------- containers


@dataclass
class ContainerRun:
    name: str
    image: str
    spec: dict[str, Any]
    port: int
    placeholder: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    restart_count: int = 0
    ready: bool = False
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: dict[str, Any] | None = None
    next_start: float = 0.0
    next_probe: float = 0.0
    probe_failures: int = 0
    probe_successes: int = 0
    ever_started: bool = False
    exited_ok: bool = False

    def probe(self) -> dict[str, Any] | None:
        return self.spec.get("readinessProbe")


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    labels: dict[str, str]
    containers: list[ContainerRun]
    pod_ip: str
    restart_policy: str
    grace_s: float
    started: str = field(default_factory=now_iso)
    ready_since: str | None = None
    last_status: dict[str, Any] | None = None
    annotated: bool = False
    terminating_deadline: float | None = None
    events_sent: set[str] = field(default_factory=set)
    evicted: str | None = None  # the eviction message, once the kubelet evicts the pod
    evict_deadline: float | None = None

    @property
    def ready(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers)


# ------------------------------------------------------------------------------------------------ the proxy


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _ProxyServer = self.server  # type: ignore[assignment]
        backend = server.pick()
        client: socket.socket = self.request
        if backend is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", backend), timeout=5)
        except OSError:
            client.close()
            return
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            open_ends = 2
            while open_ends:
                for key, _ in sel.select(timeout=60):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    data = src.recv(65536)
                    if not data:
                        sel.unregister(src)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        open_ends -= 1
                    else:
                        dst.sendall(data)
                else:
                    if not sel.get_map():
                        break
        except OSError:
            pass
        finally:
            sel.close()
            upstream.close()
            client.close()


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.backends: list[int] = []
        self._rr = 0
        self._lock = threading.Lock()

    def pick(self) -> int | None:
        with self._lock:
            if not self.backends:
                return None
            self._rr = (self._rr + 1) % len(self.backends)
            return self.backends[self._rr]

    def set_backends(self, ports: list[int]) -> None:
        with self._lock:
            self.backends = list(ports)


# ---------------------------------------------------------------------------------------------- the kubelet


class SandboxKubelet:
    """Registers a node and runs the pods bound to it (see the module docstring)."""

    def __init__(
        self,
        api: Any,
        *,
        node_name: str,
        state_dir: Path,
        registries: Sequence[Path] = (),
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        # Any: plain dict bodies are what the API takes; the client's generated models add nothing here
        self.core: Any = client.CoreV1Api(api)
        self.coord: Any = client.CoordinationV1Api(api)
        self.node_name = node_name
        self.state_dir = state_dir
        self.static_registries = [Path(r) for r in registries]
        self.python = python
        self.clock = clock
        self.pods: dict[str, PodRun] = {}
        self.proxies: dict[tuple[str, str, int], _ProxyServer] = {}
        self._ip_counter = 1
        self._last_heartbeat = -1e9
        self._last_services = -1e9
        (state_dir / "checkouts").mkdir(parents=True, exist_ok=True)
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)

    # -- configuration files (test hooks)

    def registries(self) -> list[Path]:
        f = self.state_dir / "registries.txt"
        extra = [Path(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
        return self.static_registries + extra

    def fault_for(self, image: str, annotations: dict[str, str]) -> str | None:
        if annotations.get(FAULT_ANNOTATION):
            return annotations[FAULT_ANNOTATION]
        f = self.state_dir / "faults.json"
        if f.exists():
            with contextlib.suppress(ValueError):
                return json.loads(f.read_text()).get(image)
        return None

    def local_image(self, image: str) -> LocalImage | None:
        f = self.state_dir / "local-images.json"
        if not f.exists():
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(f.read_text()).get(image)
            if entry:
                return LocalImage(
                    workdir=Path(entry["workdir"]), python=entry["python"], env=dict(entry.get("env") or {})
                )
        return None

    # -- raw API helpers (dicts, not generated models: faster and simpler here)

    def _get(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        resp = call(*args, _preload_content=False, **kwargs)
        return json.loads(resp.data)

    # -- node

    def _node_status(self) -> dict[str, Any]:
        t = now_iso()
        cond = [
            ("Ready", "True", "KubeletReady", "sandbox kubelet is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]
        resources = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": ty,
                    "status": st,
                    "reason": rs,
                    "message": msg,
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": self._node_started,
                }  # fmt: skip
                for ty, st, rs, msg in cond
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "sandbox",
                "systemUUID": "sandbox",
                "bootID": self._boot_id,
                "kernelVersion": os.uname().release,
                "osImage": "promptship sandbox",
                "containerRuntimeVersion": "sandbox://processes",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },  # fmt: skip
        }

    def register_node(self) -> None:
        from kubernetes.client.exceptions import ApiException

        self._node_started = now_iso()
        self._boot_id = uuid.uuid4().hex
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "promptship.dev/sandbox": "true",
                },
            },
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.heartbeat(force=True)

    def heartbeat(self, force: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        if not force and self.clock() - self._last_heartbeat < 10:
            return
        self._last_heartbeat = self.clock()
        self.core.patch_node_status(self.node_name, {"status": self._node_status()})
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
        }
        try:
            self.coord.patch_namespaced_lease(self.node_name, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as exc:
            if exc.status != 404:
                raise
            with contextlib.suppress(ApiException):
                self.coord.create_namespaced_lease("kube-node-lease", lease)

    # -- events

    def event(self, pod: PodRun, reason: str, message: str, kind: str = "Warning", once_key: str | None = None) -> None:
        key = once_key or f"{reason}:{message}"
        if key in pod.events_sent:
            return
        pod.events_sent.add(key)
        t = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod.name}.{uuid.uuid4().hex[:12]}", "namespace": pod.namespace},
            "involvedObject": {
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "apiVersion": "v1",
            },  # fmt: skip
            "reason": reason,
            "message": message,
            "type": kind,
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
            "source": {"component": "kubelet", "host": self.node_name},
        }
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(pod.namespace, body)

    # -- pods

    def _admit(self, pod: dict[str, Any]) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        annotations = meta.get("annotations") or {}
        ports_before: dict[str, int] = {}
        with contextlib.suppress(ValueError):
            ports_before = json.loads(annotations.get(HOST_PORT_ANNOTATION + "s", "{}"))
        containers = [
            ContainerRun(
                name=c["name"], image=c.get("image", ""), spec=c, port=ports_before.get(c["name"]) or free_port()
            )
            for c in spec.get("containers", [])
        ]
        self._ip_counter += 1
        run = PodRun(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            labels=meta.get("labels") or {},
            containers=containers,
            pod_ip=f"10.88.{(self._ip_counter // 250) % 250}.{self._ip_counter % 250 + 2}",
            restart_policy=spec.get("restartPolicy", "Always"),
            grace_s=min(float(spec.get("terminationGracePeriodSeconds", 30) or 0), 5.0),
        )
        for c in containers:
            c.placeholder = False
            c.spec = dict(c.spec)
            c.spec["_fault"] = self.fault_for(c.image, annotations)
        return run

    def _env(
        self, pod: PodRun, c: ContainerRun, record: ImageRecord | None, image_env: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _PASS_ENV}
        env.update(image_env or {})
        for src in c.spec.get("envFrom") or []:
            env.update(self._env_from(pod.namespace, src))
        for item in c.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif item.get("valueFrom"):
                value = self._value_from(pod, item["valueFrom"])
                if value is not None:
                    env[item["name"]] = value
        env.update({"HOST": "127.0.0.1", "PORT": str(c.port), "PROMPTSHIP_IMAGE": c.image})
        if record:
            env["PROMPTSHIP_IMAGE_SHA"] = record.sha
        return env

    def _env_from(self, namespace: str, src: dict[str, Any]) -> dict[str, str]:
        import base64

        prefix = src.get("prefix", "")
        with contextlib.suppress(Exception):
            if src.get("configMapRef"):
                cm = self._get(self.core.read_namespaced_config_map, src["configMapRef"]["name"], namespace)
                return {prefix + k: v for k, v in (cm.get("data") or {}).items()}
            if src.get("secretRef"):
                s = self._get(self.core.read_namespaced_secret, src["secretRef"]["name"], namespace)
                return {prefix + k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        return {}

    def _value_from(self, pod: PodRun, ref: dict[str, Any]) -> str | None:
        import base64

        with contextlib.suppress(Exception):
            if ref.get("configMapKeyRef"):
                r = ref["configMapKeyRef"]
                cm = self._get(self.core.read_namespaced_config_map, r["name"], pod.namespace)
                return (cm.get("data") or {}).get(r["key"])
            if ref.get("secretKeyRef"):
                r = ref["secretKeyRef"]
                s = self._get(self.core.read_namespaced_secret, r["name"], pod.namespace)
                raw = (s.get("data") or {}).get(r["key"])
                return base64.b64decode(raw).decode() if raw is not None else None
            if ref.get("fieldRef"):
                path = ref["fieldRef"].get("fieldPath")
                return {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "status.podIP": pod.pod_ip,
                        "spec.nodeName": self.node_name, "status.hostIP": "127.0.0.1"}.get(path)  # fmt: skip
        return None

    def _start(self, pod: PodRun, c: ContainerRun) -> None:
        fault = c.spec.get("_fault")
        local = self.local_image(c.image)
        record = None if local else lookup_image(c.image, self.registries())
        if local is None and record is None and not needs_record(c.image):
            c.placeholder = True
            if fault == "crash":
                self._crashed(pod, c, 1, "placeholder told to crash")
                return
            c.waiting_reason = None
            c.started_at = c.started_at or now_iso()
            c.ever_started = True
            return
        python = self.python
        if local is not None:
            if not local.workdir.is_dir() or not Path(local.python).exists():
                c.waiting_reason = "ErrImagePull"
                c.waiting_message = f"local image {c.image}: {local.workdir} or {local.python} is missing"
                c.next_start = self.clock() + 2
                self.event(pod, "Failed", c.waiting_message)
                return
            tree = workdir = local.workdir
            python, image_env = local.python, local.env
            entry, cmd = dockerfile_command(tree / "Dockerfile")
        else:
            if record is None:
                c.waiting_reason = "ErrImagePull"
                c.waiting_message = f"image {c.image} is not in any registry ({len(self.registries())} searched)"
                c.next_start = self.clock() + 2
                self.event(pod, "Failed", f"Failed to pull image {c.image!r}: not found in the sandbox registry")
                return
            try:
                tree = checkout(record, self.state_dir / "checkouts")
            except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
                c.waiting_reason = "ErrImagePull"
                c.waiting_message = f"checkout of {record.sha} from {record.git_dir} failed: {exc}"
                c.next_start = self.clock() + 2
                self.event(pod, "Failed", c.waiting_message)
                return
            workdir = tree / record.context
            entry, cmd = dockerfile_command(tree / record.context / "Dockerfile")
            image_env = dockerfile_env(tree / record.context / "Dockerfile")
        if c.spec.get("workingDir") and (tree / c.spec["workingDir"].lstrip("/")).is_dir():
            workdir = tree / c.spec["workingDir"].lstrip("/")
        command: list[str] = list(c.spec.get("command") or entry)
        spec_args = c.spec.get("args")
        args: list[str] = list(spec_args) if spec_args is not None else ([] if c.spec.get("command") else cmd)
        argv = resolve_argv([*command, *args], python)
        if fault == "crash":
            argv = [python, "-c", "import sys; print('sandbox fault: crash'); sys.exit(1)"]
        if not argv:
            c.waiting_reason = "CreateContainerError"
            c.waiting_message = "no command: neither the container nor the Dockerfile gives one"
            c.next_start = self.clock() + 5
            return
        logf = (self.state_dir / "logs" / f"{pod.namespace}_{pod.name}_{c.name}.log").open("ab")
        try:
            c.proc = subprocess.Popen(
                argv,
                cwd=workdir if workdir.is_dir() else tree,
                env=self._env(pod, c, record, image_env),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            c.waiting_reason = "CreateContainerError"
            c.waiting_message = str(exc)
            c.next_start = self.clock() + 5
            return
        finally:
            logf.close()
        c.waiting_reason = None
        c.waiting_message = ""
        c.started_at = now_iso()
        c.ever_started = True
        c.probe_failures = c.probe_successes = 0
        delay = float((c.probe() or {}).get("initialDelaySeconds", 0) or 0)
        c.next_probe = self.clock() + min(delay, 10.0)
        self.event(pod, "Started", f"Started container {c.name} ({shlex.join(argv[:4])}) on port {c.port}",
                   kind="Normal", once_key=f"started:{c.name}:{c.restart_count}")  # fmt: skip

    def _crashed(self, pod: PodRun, c: ContainerRun, code: int, message: str = "") -> None:
        c.last_terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": c.started_at or now_iso(),
            "finishedAt": now_iso(),
        }
        c.proc = None
        c.ready = False
        c.started_at = None
        if pod.restart_policy == "Never" or (pod.restart_policy == "OnFailure" and code == 0):
            c.exited_ok = code == 0
            c.waiting_reason = "Terminated"
            c.next_start = float("inf")
            return
        c.restart_count += 1
        backoff = min(2 ** (c.restart_count - 1), 10)
        c.waiting_reason = "CrashLoopBackOff"
        c.waiting_message = f"back-off {backoff}s restarting failed container={c.name} pod={pod.name}"
        c.next_start = self.clock() + backoff
        self.event(pod, "BackOff", f"Back-off restarting failed container {c.name} (exit code {code})",
                   once_key=f"backoff:{c.name}")  # fmt: skip

    def _probe(self, pod: PodRun, c: ContainerRun) -> None:
        fault = c.spec.get("_fault")
        if fault == "unready":
            if c.ready or not c.probe_failures:
                self.event(pod, "Unhealthy", "Readiness probe failed: sandbox fault 'unready'", once_key="unready")
            c.ready = False
            c.probe_failures += 1
            return
        if c.placeholder:
            c.ready = True
            return
        if c.proc is None or self.clock() < c.next_probe:
            return
        probe = c.probe()
        if not probe:
            c.ready = True
            return
        period = min(float(probe.get("periodSeconds", 10) or 10), 1.0)
        c.next_probe = self.clock() + period
        timeout = min(float(probe.get("timeoutSeconds", 1) or 1), 2.0)
        ok, detail = False, ""
        try:
            if probe.get("httpGet"):
                import http.client

                path = probe["httpGet"].get("path") or "/"
                conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=timeout)
                try:
                    conn.request("GET", path, headers={"User-Agent": "kube-probe/1.20"})
                    status = conn.getresponse().status
                finally:
                    conn.close()
                ok, detail = 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
            elif probe.get("tcpSocket"):
                with socket.create_connection(("127.0.0.1", c.port), timeout=timeout):
                    ok = True
            else:  # exec probes: the process being alive is all the sandbox can tell
                ok = True
        except OSError as exc:
            ok, detail = False, f"Get http://127.0.0.1:{c.port}: {type(exc).__name__}"
        if ok:
            c.probe_successes += 1
            c.probe_failures = 0
            if c.probe_successes >= int(probe.get("successThreshold", 1) or 1):
                c.ready = True
        else:
            c.probe_failures += 1
            c.probe_successes = 0
            if not c.ready or c.probe_failures >= int(probe.get("failureThreshold", 3) or 3):
                if c.ready or c.probe_failures == 1 or c.probe_failures % 10 == 0:
                    self.event(pod, "Unhealthy", f"Readiness probe failed: {detail}", once_key=f"unhealthy:{detail}")
                c.ready = False

    def _evict(self, pod: PodRun, grace: str) -> None:
        """Evict ``pod`` as a kubelet under node pressure does: stop its processes (SIGTERM, SIGKILL after the
        grace; a grace of 0 kills at once) and leave it Failed/Evicted, never restarted."""
        if pod.evicted is None:
            try:
                grace_s = max(float(grace), 0.0)
            except ValueError:
                grace_s = 0.0
            pod.evicted = "The node was low on resource: memory. (sandbox eviction)"
            pod.evict_deadline = self.clock() + grace_s
            self.event(pod, "Evicted", pod.evicted, once_key="evicted")
        force = self.clock() >= (pod.evict_deadline or 0.0)
        for c in pod.containers:
            c.ready = False
            c.next_start = float("inf")
            if c.proc is None:
                if c.waiting_reason != "Terminated":
                    c.waiting_reason, c.exited_ok = "Terminated", False
                    c.last_terminated = c.last_terminated or {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                                              "finishedAt": now_iso()}  # fmt: skip
                continue
            code = c.proc.poll()
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL if force else signal.SIGTERM)
                continue
            c.last_terminated = {
                "exitCode": 128 - code if code < 0 else code,
                "reason": "Error" if code else "Completed",
                "message": pod.evicted,
                "startedAt": c.started_at or now_iso(),
                "finishedAt": now_iso(),
            }
            c.proc, c.started_at = None, None
            c.waiting_reason, c.exited_ok = "Terminated", False

    def _stop_processes(self, pod: PodRun, *, force: bool) -> bool:
        """Signal the pod's processes; True once all are gone."""
        alive = False
        for c in pod.containers:
            c.ready = False
            if c.proc is None:
                continue
            if c.proc.poll() is not None:
                c.proc = None
                continue
            alive = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL if force else signal.SIGTERM)
        return not alive

    def _status(self, pod: PodRun) -> dict[str, Any]:
        statuses = []
        for c in pod.containers:
            if c.waiting_reason or (c.proc is None and not c.placeholder):
                state: dict[str, Any] = {"waiting": {"reason": c.waiting_reason or "ContainerCreating"}}
                if c.waiting_message:
                    state["waiting"]["message"] = c.waiting_message
                if c.waiting_reason == "Terminated" and c.last_terminated:
                    state = {"terminated": c.last_terminated}
            else:
                state = {"running": {"startedAt": c.started_at}}
            s: dict[str, Any] = {
                "name": c.name,
                "image": c.image,
                "imageID": f"sandbox://{c.image}",
                "ready": c.ready,
                "restartCount": c.restart_count,
                "started": "running" in state,
                "state": state,
                "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
            }
            if "running" in state:
                s["containerID"] = f"sandbox://{c.proc.pid if c.proc else 'placeholder'}"
            statuses.append(s)
        ready = pod.ready
        ready_s = "True" if ready else "False"
        if ready and pod.ready_since is None:
            pod.ready_since = now_iso()
        if not ready:
            pod.ready_since = None
        transition = pod.ready_since or pod.started
        if all(c.waiting_reason == "Terminated" for c in pod.containers) and pod.containers:
            phase = "Succeeded" if all(c.exited_ok for c in pod.containers) else "Failed"
        elif any(c.ever_started for c in pod.containers):
            phase = "Running"
        else:
            phase = "Pending"
        reason = {} if ready else {"reason": "ContainersNotReady"}
        evicted: dict[str, str] = {}
        if pod.evicted is not None and all(c.proc is None for c in pod.containers):
            phase, evicted = "Failed", {"reason": "Evicted", "message": pod.evicted}
        return {
            **evicted,
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": pod.pod_ip,
            "podIPs": [{"ip": pod.pod_ip}],
            "startTime": pod.started,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": pod.started},
                {"type": "Ready", "status": ready_s, "lastTransitionTime": transition, **reason},
                {"type": "ContainersReady", "status": ready_s, "lastTransitionTime": transition, **reason},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": pod.started},
            ],
            "containerStatuses": statuses,
        }

    def _push_status(self, pod: PodRun) -> None:
        from kubernetes.client.exceptions import ApiException

        if not pod.annotated:
            ports = {c.name: c.port for c in pod.containers}
            first = pod.containers[0].port if pod.containers else 0
            body = {"metadata": {"annotations": {HOST_PORT_ANNOTATION: str(first),
                                                 HOST_PORT_ANNOTATION + "s": json.dumps(ports)}}}  # fmt: skip
            try:
                self.core.patch_namespaced_pod(pod.name, pod.namespace, body)
                pod.annotated = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
        status = self._status(pod)
        if status == pod.last_status:
            return
        try:
            self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})
            pod.last_status = status
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def sync_once(self) -> None:
        """One pass: admit new pods, run/restart/probe containers, finalise deleted pods, update statuses."""
        from kubernetes.client.exceptions import ApiException

        self.heartbeat()
        listing = self._get(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={self.node_name}")
        seen: set[str] = set()
        for item in listing.get("items", []):
            meta = item["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            run = self.pods.get(uid)
            if meta.get("deletionTimestamp"):
                if run is None:
                    run = self.pods[uid] = self._admit(item)
                if run.terminating_deadline is None:
                    run.terminating_deadline = self.clock() + run.grace_s
                gone = self._stop_processes(run, force=self.clock() > run.terminating_deadline)
                if gone:
                    with contextlib.suppress(ApiException):
                        self.core.delete_namespaced_pod(
                            run.name, run.namespace, grace_period_seconds=0, body={"preconditions": {"uid": uid}}
                        )
                    self.pods.pop(uid, None)
                continue
            if run is None:
                run = self.pods[uid] = self._admit(item)
            grace = (meta.get("annotations") or {}).get(EVICT_ANNOTATION)
            if run.evicted is not None or grace is not None:
                self._evict(run, grace or "0")
                self._push_status(run)
                continue
            for c in run.containers:
                if c.proc is not None and (code := c.proc.poll()) is not None:
                    self._crashed(run, c, code)
                if c.proc is None and not (c.placeholder and c.waiting_reason is None) and self.clock() >= c.next_start:
                    self._start(run, c)
                self._probe(run, c)
            self._push_status(run)
        for uid in list(self.pods):
            if uid not in seen:  # deleted with grace 0 by someone else
                self._stop_processes(self.pods[uid], force=True)
                self.pods.pop(uid, None)
        self.sync_services()

    # -- services

    def sync_services(self) -> None:
        from kubernetes.client.exceptions import ApiException

        listing = self._get(self.core.list_service_for_all_namespaces)
        wanted: set[tuple[str, str, int]] = set()
        for svc in listing.get("items", []):
            meta, spec = svc["metadata"], svc.get("spec", {})
            selector = spec.get("selector") or {}
            if not selector:
                continue
            annotations = meta.get("annotations") or {}
            known: dict[str, int] = {}
            with contextlib.suppress(ValueError):
                known = {k: int(v) for k, v in json.loads(annotations.get(LOCAL_PORTS_ANNOTATION, "{}")).items()}
            local_ports: dict[str, int] = {}
            for sp in spec.get("ports") or []:
                key = (meta["namespace"], meta["name"], int(sp["port"]))
                wanted.add(key)
                proxy = self.proxies.get(key)
                if proxy is None:
                    # a fixed port when asked for (annotation promptship.dev/local-port on the Service, or the
                    # nodePort of a NodePort Service, as kube-proxy would open it), else the one given before
                    wanted_port = known.get(str(sp["port"])) or sp.get("nodePort")
                    if annotations.get(LOCAL_PORT_ANNOTATION) and sp is (spec.get("ports") or [None])[0]:
                        wanted_port = int(annotations[LOCAL_PORT_ANNOTATION])
                    proxy = self._listen(wanted_port)
                    self.proxies[key] = proxy
                local_ports[str(sp["port"])] = proxy.server_address[1]
                proxy.set_backends(self._backends(meta["namespace"], selector, sp.get("targetPort", sp["port"])))
            if local_ports and known != local_ports:
                first = next(iter(local_ports.values()))
                body = {"metadata": {"annotations": {LOCAL_PORTS_ANNOTATION: json.dumps(local_ports),
                                                     LOCAL_URL_ANNOTATION: f"http://127.0.0.1:{first}"}}}  # fmt: skip
                with contextlib.suppress(ApiException):
                    self.core.patch_namespaced_service(meta["name"], meta["namespace"], body)
        for key in list(self.proxies):
            if key not in wanted:
                self.proxies.pop(key).shutdown_and_close()  # type: ignore[attr-defined]

    def _listen(self, preferred: int | None) -> _ProxyServer:
        server: _ProxyServer | None = None
        if preferred:
            with contextlib.suppress(OSError):
                server = _ProxyServer(preferred)
        if server is None:
            server = _ProxyServer(0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

        def shutdown_and_close(s: _ProxyServer = server) -> None:
            s.shutdown()
            s.server_close()

        server.shutdown_and_close = shutdown_and_close  # type: ignore[attr-defined]
        return server

    def _backends(self, namespace: str, selector: dict[str, str], target: int | str) -> list[int]:
        ports = []
        for pod in self.pods.values():
            if pod.namespace != namespace or pod.terminating_deadline is not None or not pod.ready:
                continue
            if any(pod.labels.get(k) != v for k, v in selector.items()):
                continue
            chosen = pod.containers[0]
            for c in pod.containers:
                for p in c.spec.get("ports") or []:
                    if target in (p.get("containerPort"), p.get("name")):
                        chosen = c
            if not chosen.placeholder:
                ports.append(chosen.port)
        return ports

    # -- main loop

    def run(self, stop: threading.Event, interval_s: float = 0.25) -> None:
        self.register_node()
        while not stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # the API server may restart; keep the node going
                log.warning("sync failed: %s: %s", type(exc).__name__, exc)
            stop.wait(interval_s)
        self.shutdown()

    def shutdown(self) -> None:
        for pod in self.pods.values():
            self._stop_processes(pod, force=False)
        deadline = self.clock() + 3
        while self.clock() < deadline and not all(self._stop_processes(p, force=False) for p in self.pods.values()):
            time.sleep(0.1)
        for pod in self.pods.values():
            self._stop_processes(pod, force=True)
        for proxy in self.proxies.values():
            proxy.shutdown_and_close()  # type: ignore[attr-defined]
        self.proxies.clear()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptship_sandbox.kubelet")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", default="sandbox-node")
    parser.add_argument("--registry", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s kubelet %(levelname)s %(message)s")
    from kubernetes import config

    api = config.new_client_from_config(config_file=args.kubeconfig)
    kubelet = SandboxKubelet(api, node_name=args.node_name, state_dir=args.state_dir, registries=args.registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("node %s; state %s", args.node_name, args.state_dir)
    kubelet.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
