"""Flow runs as Kubernetes Jobs beside flow runs as processes: N dev-cycle requests (instant durable fakes)
submitted at once to the ``dev-cycle`` deployment of each pool, the wall from submission to the last run
Completed, and the throughput (runs per minute) of

- the process pool: ``prefect worker start --type process`` (each run a subprocess of the worker);
- the Kubernetes pool: prefect-kubernetes' worker with promptship's base job template on the local control plane
  (each run a Job; the sandbox kubelet runs its pod as a process of the promptship image).

Both on one temporary Prefect server (SQLite), one after the other, in one run (quote the load: both share the
machine with whatever else runs). Needs the control-plane binaries (``make cluster-build``); without them the
Kubernetes line says so. ``PROMPTSHIP_BENCH_WORKPOOL_RUNS`` (default 5) sets N.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUNS = int(os.environ.get("PROMPTSHIP_BENCH_WORKPOOL_RUNS", "5"))
REPO_ROOT = Path(__file__).resolve().parents[3]


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from promptship_sandbox import cluster
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

    with tempfile.TemporaryDirectory(prefix="promptship-bench-workpool-") as name:
        tmp = Path(name)
        with running_prefect_server(tmp / "prefect") as server, using_prefect(server):
            load = os.getloadavg()[0]
            process = _measure(tmp / "process", server, kubernetes=None)
            print(f"   process pool x{RUNS}: {_line(process)}")
            if cluster.find_binaries() is None:
                print("   kubernetes pool: not measured (no control-plane binaries: make cluster-build)")
                return
            with cluster.running_control_plane(tmp / "cluster") as cp:
                k8s = _measure(tmp / "k8s", server, kubernetes=cp)
            print(f"   kubernetes pool x{RUNS}: {_line(k8s)}")
            print(
                f"   kubernetes ÷ process throughput {k8s['throughput'] / process['throughput']:.2f} "
                f"(load {load:.1f} → {os.getloadavg()[0]:.1f})"
            )


def _line(m: dict[str, float]) -> str:
    return (
        f"wall {m['wall']:.1f} s, throughput {m['throughput']:.1f} runs/min, "
        f"per-run median {m['median']:.1f} s (submission → Completed)"
    )


def _final_states(ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    return {r.id: r for r in runs if r.state is not None and r.state.is_final()}


@contextmanager
def _pool(work: Path, server: Any, kubernetes: Any, settings_env: dict[str, str]) -> Iterator[str]:
    """A pool with a dev-cycle deployment and its worker running; yields the deployment's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from promptship_sandbox.prefect_server import running_worker
    from promptship_sandbox.workpool import (
        create_kubernetes_pool,
        prepare_namespace,
        remove_namespace,
        running_kubernetes_worker,
    )

    pool = f"bench-{'k8s' if kubernetes else 'process'}-{uuid.uuid4().hex[:6]}"
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    job_variables: dict[str, Any] = {}
    admin = namespace = kubeconfig = None
    if kubernetes is not None:
        from kubernetes import config

        admin = config.new_client_from_config(config_file=str(kubernetes.kubeconfig))
        namespace = pool
        kubeconfig, job_variables = prepare_namespace(admin, kubernetes, namespace, work, settings_env=settings_env)
        create_kubernetes_pool(pool)
    with get_client(sync_client=True) as client:
        if kubernetes is None:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        client.create_deployment(
            flow_id=client.create_flow_from_name("dev-cycle"),
            name=pool,
            work_pool_name=pool,
            entrypoint="flows/dev_cycle.py:dev_cycle",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}],
            job_variables=job_variables,
        )
    worker_env = {"PREFECT_API_URL": server.api_url, "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONPATH": pythonpath}
    log = work / "worker.log"
    try:
        if kubernetes is None:
            env = {**worker_env, **settings_env, "PREFECT_LOCAL_STORAGE_PATH": str(work / "results")}
            with running_worker(server, REPO_ROOT, log, pool=pool, env=env):
                yield f"dev-cycle/{pool}"
        else:
            assert kubeconfig is not None and namespace is not None
            with running_kubernetes_worker(pool, kubeconfig, namespace, log, env=worker_env):
                yield f"dev-cycle/{pool}"
    finally:
        if admin is not None and namespace is not None:
            remove_namespace(admin, namespace)
            admin.close()


def _measure(work: Path, server: Any, *, kubernetes: Any) -> dict[str, float]:
    from prefect.deployments import run_deployment

    from promptship.domain.request import DevRequest

    work.mkdir(parents=True)
    fakes = work / "fakes"
    settings_env = {
        "PROMPTSHIP_SERVICES_FACTORY": "promptship_sandbox.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",
        "PROMPTSHIP_HOME": str(work / "home"),
    }
    with _pool(work, server, kubernetes, settings_env) as deployment:
        requests = [
            DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", auto_merge=True) for _ in range(RUNS)
        ]
        t0 = time.perf_counter()
        ids = [
            run_deployment(deployment, parameters={"request": r.model_dump(mode="json")}, timeout=0).id  # type: ignore[union-attr]
            for r in requests
        ]
        done: dict[uuid.UUID, float] = {}
        deadline = t0 + 120 + 60 * RUNS
        while len(done) < RUNS:
            if time.perf_counter() > deadline:
                tail = (work / "worker.log").read_text(errors="replace")[-3000:]
                raise TimeoutError(f"{RUNS - len(done)} runs unfinished after {deadline - t0:.0f} s\n{tail}")
            for run_id, fr in _final_states(ids).items():
                if run_id not in done:
                    if fr.state is None or not fr.state.is_completed():
                        raise RuntimeError(f"run {fr.name} ended {fr.state.name if fr.state else '?'}")
                    done[run_id] = time.perf_counter() - t0
            time.sleep(0.2)
        wall = max(done.values())
    return {"wall": wall, "throughput": 60 * RUNS / wall, "median": statistics.median(done.values())}
