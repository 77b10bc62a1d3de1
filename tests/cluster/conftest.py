"""The local control plane for the cluster tests (one per session) and the sample app published into a registry
(``promptship_sandbox.sample_app``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptship_sandbox.sample_app import SampleApps
from tests.conftest import require


@pytest.fixture(scope="session")
def app_registry(tmp_path_factory: pytest.TempPathFactory) -> SampleApps:
    return SampleApps(tmp_path_factory.mktemp("apps"))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, app_registry: SampleApps) -> Iterator[Any]:
    """One local control plane (etcd, apiserver, controller-manager, scheduler, sandbox kubelet) per session."""
    from promptship_sandbox import cluster

    bin_dir = cluster.find_binaries()
    require("control plane", bin_dir is not None, "no kube binaries or etcd: run `make cluster-build`")
    state = tmp_path_factory.mktemp("cluster")
    cp = cluster.start(state, bin_dir=bin_dir, registries=[app_registry.registry], reuse=False)
    try:
        yield cp
    finally:
        cluster.stop(state)


@pytest.fixture
def api_client(control_plane: Any) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})  # type: ignore[arg-type]
    yield name
    core.delete_namespace(name)


def wait_for_version(url: str, want: str, wait_s: float = 15.0) -> str:
    """What /version answers once the service proxy routes to ``want`` (or the last answer after wait_s):
    endpoints follow a rollout with a short lag, as on a real cluster."""
    deadline = time.monotonic() + wait_s
    last = ""
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/version", timeout=2).text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if last == want:
            return last
        time.sleep(0.2)
    return last
