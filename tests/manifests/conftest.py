"""A local control plane for the manifest tests (its own, so these tests need no app registry)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require, shared_server


@pytest.fixture(scope="session")
def platform_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from promptship_sandbox import cluster

    bin_dir = cluster.find_binaries()
    require("control plane", bin_dir is not None, "no kube binaries or etcd: run `make cluster-build`")
    state = tmp_path_factory.mktemp("platform-cluster")
    with shared_server("platform_kubeconfig") as stack:
        stack.callback(cluster.stop, state)
        yield Path(cluster.start(state, bin_dir=bin_dir, registries=[], reuse=False).kubeconfig)
