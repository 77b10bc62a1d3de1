"""Flow runs as Kubernetes Jobs, for real: a Kubernetes work pool with promptship's base job template on the
session's Prefect server, prefect-kubernetes' own worker polling it with its ServiceAccount's token only, the
local control plane's Job controller and scheduler, and the sandbox kubelet running each flow-run pod as a
process of the promptship image (this checkout and its virtualenv). The boundaries are the durable fakes
(one JSON state and store shared by every pod, the test and the sweeper).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import get_current_settings

from promptship.domain.request import DevRequest, conversation_id_for
from promptship.store import Store
from promptship_sandbox.durable_fakes import JsonState, durable_services
from promptship_sandbox.workpool import (
    POOL_IMAGE,
    REPO_ROOT,
    create_kubernetes_pool,
    prepare_namespace,
    remove_namespace,
    running_kubernetes_worker,
)

pytestmark = pytest.mark.workpool

CREDENTIAL = f"sandbox-credential-{uuid.uuid4().hex}"  # must reach the pods, and appear nowhere else
LEASE_TTL_S = 4


@dataclass
class Pool:
    namespace: str
    fakes: Path
    state: JsonState
    store: Store
    deployment: str
    worker: subprocess.Popen[bytes]
    log: Path
    kubeconfig: Path
    api_client: Any
    env: dict[str, str]  # what a process outside the cluster (the sweeper) needs to act on the same runs

    def submit(self, request: DevRequest) -> FlowRun:
        run = run_deployment(self.deployment, parameters={"request": request.model_dump(mode="json")}, timeout=0)
        assert isinstance(run, FlowRun)
        return run

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def _read(run_id: uuid.UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _wait_for(predicate: Any, what: str, pool: Pool, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{pool.tail()}")


def _request() -> DevRequest:
    return DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", auto_merge=True)


@pytest.fixture(scope="module")
def pool(prefect_harness: None, control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The pool, its namespace (what the job template names + the worker's RBAC), the dev-cycle deployment on the
    pool and one prefect-kubernetes worker."""
    from kubernetes import config

    tmp = tmp_path_factory.mktemp("workpool")
    fakes = tmp / "fakes"
    namespace = f"pool-{uuid.uuid4().hex[:6]}"
    admin = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    settings_env = {
        "PROMPTSHIP_SERVICES_FACTORY": "promptship_sandbox.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        "PROMPTSHIP_TEST_LEASE_TTL_S": str(LEASE_TTL_S),
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",
        "PROMPTSHIP_HOME": str(tmp / "home"),
    }
    kubeconfig, job_variables = prepare_namespace(
        admin,
        control_plane,
        namespace,
        tmp,
        settings_env=settings_env,
        credentials_env={"PROMPTSHIP_GITHUB__TOKEN": CREDENTIAL},
        store_env={"PROMPTSHIP_DATABASE_URL": f"sqlite:///{fakes / 'home' / 'promptship.db'}"},
    )

    pool_name = f"k8s-{uuid.uuid4().hex[:6]}"
    create_kubernetes_pool(pool_name)
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name("dev-cycle")
        prefect.create_deployment(
            flow_id=flow_id,
            name="dev-cycle",
            work_pool_name=pool_name,
            entrypoint="flows/dev_cycle.py:dev_cycle",
            concurrency_limit=5,  # a small cap on the deployment's runs for the test (prefect.yaml sets none)
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}],
            job_variables=job_variables,
        )
    api_url = str(get_current_settings().api.url)
    env = {
        **os.environ,
        **settings_env,
        "PREFECT_API_URL": api_url,
        "PREFECT_LOCAL_STORAGE_PATH": job_variables["env"]["PREFECT_LOCAL_STORAGE_PATH"],
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PYTHONPATH": pythonpath,
    }
    log = tmp / "worker.log"
    worker_env = {"PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONPATH": pythonpath}
    store = durable_services(fakes).sink
    assert isinstance(store, Store)
    try:
        with running_kubernetes_worker(pool_name, kubeconfig, namespace, log, env=worker_env) as worker:
            yield Pool(namespace, fakes, JsonState(fakes), store, "dev-cycle/dev-cycle", worker, log, kubeconfig,
                       admin, env)  # fmt: skip
    finally:
        remove_namespace(admin, namespace)
        admin.close()


def _jobs_of(pool: Pool, run: FlowRun) -> list[Any]:
    from kubernetes import client

    jobs = client.BatchV1Api(pool.api_client).list_namespaced_job(
        pool.namespace, label_selector=f"prefect.io/flow-run-id={run.id}"
    )
    return list(jobs.items)


def _succeeded_job(pool: Pool, run: FlowRun) -> Any:
    jobs = _jobs_of(pool, run)
    return jobs[0] if len(jobs) == 1 and jobs[0].status.succeeded == 1 else None


def _pods_of(pool: Pool, run: FlowRun) -> list[Any]:
    from kubernetes import client

    pods = client.CoreV1Api(pool.api_client).list_namespaced_pod(
        pool.namespace, label_selector=f"prefect.io/flow-run-id={run.id}"
    )
    return list(pods.items)


def _final(pool: Pool, run: FlowRun, timeout_s: float = 180) -> FlowRun:
    def done() -> FlowRun | None:
        now = _read(run.id)
        return now if now.state is not None and now.state.is_final() else None

    return _wait_for(done, f"flow run {run.name} to finish", pool, timeout_s)


def test_five_requests_submitted_at_once_run_as_jobs_and_all_deploy_with_one_pr_each(pool: Pool) -> None:
    requests = [_request() for _ in range(5)]
    runs = [pool.submit(r) for r in requests]
    finals = [_final(pool, run, timeout_s=240) for run in runs]

    assert [f.state.name for f in finals if f.state] == ["Completed"] * 5, pool.tail()
    shared = pool.state.read()
    for request, run in zip(requests, runs, strict=True):
        report = pool.store.run(request.run_key)
        assert report is not None and report.outcome == "deployed", report
        assert len([pr for key, pr in shared["prs"].items() if key == request.run_key]) == 1
        assert shared["conversations"][conversation_id_for(request.run_key)]["runs"] == 1
        # exactly one Job per flow run, and it succeeds (its pod's process exits just after the run completes)
        job = _wait_for(lambda run=run: _succeeded_job(pool, run), f"the Job of {run.name} to succeed", pool, 60)
        assert len(_jobs_of(pool, run)) == 1
        assert _read(run.id).infrastructure_pid == f"{pool.namespace}:{job.metadata.name}"
        (pod,) = _pods_of(pool, run)
        container = pod.spec.containers[0]
        assert container.image == POOL_IMAGE and container.args[:3] == ["prefect", "flow-run", "execute"]
        env = {e.name: e.value for e in container.env}
        assert env["PREFECT__FLOW_RUN_ID"] == str(run.id) and env["PREFECT_API_URL"].startswith("http://127.0.0.1:")
        # the credential came in through the Secret: the pod spec names the Secret, never the value
        assert CREDENTIAL not in json.dumps(pool.api_client.sanitize_for_serialization(job))
        assert CREDENTIAL not in json.dumps(_read(run.id).parameters)
    assert shared["pr_creations"] == len(shared["prs"]) and shared["merges"] == len(shared["prs"])
    assert CREDENTIAL not in pool.log.read_text(errors="replace")


def test_an_evicted_flow_run_pod_does_not_stay_running_and_is_resumed_without_duplicates(pool: Pool) -> None:
    """Prefect #15945: a pod killed under a flow run leaves the run ``Running``. The sandbox kubelet evicts the pod
    hard (SIGKILL, ``Failed``/``Evicted``, as under memory pressure) while the run waits for CI; the Job fails,
    prefect-kubernetes' observer marks the run Crashed, and ``promptship sweep`` resumes it from the step
    cache once its request lease expired: one PR, one agent run, one merge, deployed."""
    from kubernetes import client

    hold = pool.fakes / "hold-ci"
    hold.write_text("")
    (pool.fakes / "at-ci").unlink(missing_ok=True)
    request = _request()
    run = pool.submit(request)
    try:
        _wait_for(lambda: (pool.fakes / "at-ci").exists(), "the run to wait for CI in its pod", pool)
        (pod,) = _pods_of(pool, run)
        client.CoreV1Api(pool.api_client).patch_namespaced_pod(
            pod.metadata.name, pool.namespace, {"metadata": {"annotations": {"promptship.dev/sandbox-evict": "0"}}}
        )

        def evicted() -> bool:
            p = client.CoreV1Api(pool.api_client).read_namespaced_pod(pod.metadata.name, pool.namespace)
            return p.status.phase == "Failed" and p.status.reason == "Evicted"

        _wait_for(evicted, "the pod to be evicted", pool, timeout_s=60)
        crashed = _final(pool, run, timeout_s=120)  # not Running forever: the observer saw the Job fail
        assert crashed.state is not None and crashed.state.name == "Crashed", crashed.state
        (job,) = _jobs_of(pool, run)
        assert job.status.failed == 1 and not job.status.succeeded
    finally:
        hold.unlink(missing_ok=True)
    before = pool.state.read()
    assert before["prs"][request.run_key] and before["pr_creations"] == len(before["prs"])

    time.sleep(LEASE_TTL_S + 1)  # the dead run's lease expires
    swept = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "sweep"],
        cwd=REPO_ROOT,
        env=pool.env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    assert f"{run.id}" in swept.stdout and "resumed" in swept.stdout, swept.stdout

    report = pool.store.run(request.run_key)
    assert report is not None and report.outcome == "deployed", report
    after = pool.state.read()
    assert after["pr_creations"] == before["pr_creations"]  # the PR opened before the eviction is the only one
    assert after["conversations"][conversation_id_for(request.run_key)]["runs"] == 1
    assert after["merges"] == before.get("merges", 0) + 1
    steps = [s.step for s in report.steps]
    assert len(steps) == len(set(steps)), steps
    assert _read(run.id).state.name == "Crashed"  # type: ignore[union-attr]  # it stays what it was: dead


def test_the_workers_service_account_has_its_role_and_no_more(pool: Pool) -> None:
    """The worker ran every Job above with this token (its Role is enough); everything else is refused."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    worker = config.new_client_from_config(config_file=str(pool.kubeconfig))
    try:
        batch, core = client.BatchV1Api(worker), client.CoreV1Api(worker)
        batch.list_namespaced_job(pool.namespace)  # what it needs: no 403
        core.list_namespaced_pod(pool.namespace)
        refused = {
            "read the flow runs' Secrets": lambda: core.list_namespaced_secret(pool.namespace),
            "read the settings ConfigMap": lambda: core.list_namespaced_config_map(pool.namespace),
            "create a pod directly": lambda: core.create_namespaced_pod(
                pool.namespace,
                {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}},  # type: ignore[arg-type]
            ),
            "delete a pod": lambda: core.delete_namespaced_pod("x", pool.namespace),
            "patch a Job": lambda: batch.patch_namespaced_job(
                "x", pool.namespace, {"metadata": {"labels": {"a": "b"}}}
            ),
            "list Jobs of another namespace": lambda: batch.list_namespaced_job("default"),
            "list pods cluster-wide": lambda: core.list_pod_for_all_namespaces(),
            "create a Deployment": lambda: client.AppsV1Api(worker).create_namespaced_deployment(
                pool.namespace,
                {  # type: ignore[arg-type]
                    "metadata": {"name": "x"},
                    "spec": {
                        "selector": {"matchLabels": {"app": "x"}},
                        "template": {
                            "metadata": {"labels": {"app": "x"}},
                            "spec": {"containers": [{"name": "x", "image": "x"}]},
                        },
                    },
                },
            ),
            "bind itself cluster-admin": lambda: client.RbacAuthorizationV1Api(worker).create_cluster_role_binding(
                {  # type: ignore[arg-type]
                    "metadata": {"name": f"escalate-{pool.namespace}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "promptship-worker", "namespace": pool.namespace}],
                }
            ),
        }
        statuses = {}
        for what, call in refused.items():
            try:
                call()
                statuses[what] = "allowed"
            except ApiException as exc:
                statuses[what] = exc.status
        assert statuses == dict.fromkeys(refused, 403)
    finally:
        worker.close()
