"""Cluster benchmark: local control plane start time, rollout start → verdict, failed verdict → restored service,
and how soon a version whose pods crash-loop fails (``KubeCluster.crash_loop_restarts``).

Runs its own control plane in a temporary directory (needs ``make cluster-build``). Baseline measured in the
same run: the rollout of a placeholder image (no process to start, no probe) — the control plane's own cost.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

from promptship.bench.stats import summary


def _s(values: list[float]) -> str:
    return summary(values, unit="s")


def run(rounds: int = 5) -> None:
    import httpx
    from kubernetes import client, config

    from promptship.adapters.health import HttpHealthProbe
    from promptship.adapters.kube import KubeCluster
    from promptship.domain.request import DeployTarget
    from promptship_sandbox import cluster
    from promptship_sandbox.sample_app import SampleApps, sample_manifests

    if cluster.find_binaries() is None:
        print("   no control-plane binaries: run `make cluster-build` first")
        return
    with tempfile.TemporaryDirectory(prefix="promptship-bench-cluster-") as tmp:
        root = Path(tmp)
        apps = SampleApps(root / "apps")
        starts: list[float] = []
        for i in range(2):
            t0 = time.perf_counter()
            cluster.start(root / f"cp{i}", registries=[apps.registry], reuse=False)
            starts.append(time.perf_counter() - t0)
            cluster.stop(root / f"cp{i}")
        cp = cluster.start(root / "cp", registries=[apps.registry], reuse=False)
        print(f"   control plane start (etcd+apiserver+controller-manager+scheduler+kubelet, node Ready): {_s(starts)}")
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        try:
            ns = f"bench-{uuid.uuid4().hex[:6]}"
            client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
            kube = KubeCluster(api, poll_interval_s=0.2)
            http = httpx.Client()
            probe = HttpHealthProbe(http, consecutive=3, retries=10, interval_s=0.1)

            placeholder = DeployTarget(namespace=ns, deployment="baseline", container="app")
            kube.apply_manifests(placeholder, sample_manifests("nginx:1.25", name="baseline"))
            base: list[float] = []
            for i in range(rounds):
                t0 = time.perf_counter()
                r = kube.roll_out(placeholder, f"nginx:1.25.{i}", run_key=f"b{i}", timeout_s=120)
                base.append(time.perf_counter() - t0)
                assert r.verdict == "complete", r

            target = DeployTarget(namespace=ns, deployment="web", container="app")
            first = apps.publish("ok")
            kube.apply_manifests(target, sample_manifests(first.image, progress_deadline_s=3))
            kube.roll_out(target, first.image, run_key="first", timeout_s=120)
            url = cluster.service_url(cp.kubeconfig, ns, "web")
            real: list[float] = []
            health: list[float] = []
            for i in range(rounds):
                image = apps.publish("ok").image
                t0 = time.perf_counter()
                r = kube.roll_out(target, image, run_key=f"r{i}", timeout_s=120)
                real.append(time.perf_counter() - t0)
                assert r.verdict == "complete", r
                t0 = time.perf_counter()
                h = probe.check(f"{url}/health")
                health.append(time.perf_counter() - t0)
                assert h.verdict == "healthy", h
            stall: list[float] = []
            restore: list[float] = []
            for i in range(max(2, rounds // 2)):
                bad = apps.publish("unready").image
                t0 = time.perf_counter()
                r = kube.roll_out(target, bad, run_key=f"s{i}", timeout_s=120)
                stall.append(time.perf_counter() - t0)
                assert r.verdict == "stalled", r
                t0 = time.perf_counter()
                rb = kube.rollback(target, timeout_s=120)
                h = probe.check(f"{url}/health")
                restore.append(time.perf_counter() - t0)
                assert rb.verdict == "restored" and h.verdict == "healthy", (rb, h)
            # a version that exits at start, under the Kubernetes default deadline (600 s): the crash loop decides
            crashy = DeployTarget(namespace=ns, deployment="crashy", container="app")
            kube.apply_manifests(crashy, sample_manifests(first.image, name="crashy", progress_deadline_s=600))
            assert kube.roll_out(crashy, first.image, run_key="c-first", timeout_s=120).verdict == "complete"
            crash: list[float] = []
            for i in range(rounds):
                t0 = time.perf_counter()
                r = kube.roll_out(crashy, apps.publish("crash").image, run_key=f"c{i}", timeout_s=120)
                crash.append(time.perf_counter() - t0)
                assert r.verdict == "failed" and "crash-looping" in r.reason, r
                assert kube.rollback(crashy, timeout_s=120).verdict == "restored"
            http.close()
            print(f"   rollout → complete, placeholder image (baseline): {_s(base)}")
            print(f"   rollout → complete, real process + readiness probe: {_s(real)}")
            print(f"     ratio real/baseline (medians): {statistics.median(real) / statistics.median(base):.2f}x")
            print(f"   health gate (3 consecutive 2xx through the service proxy): {_s(health)}")
            print(f"   rollout → stalled verdict (progressDeadlineSeconds=3): {_s(stall)}")
            print(f"     of which beyond the deadline itself: {_s([s - 3 for s in stall])}")
            print(f"   failed verdict → restored and healthy again (undo + rollout + gate): {_s(restore)}")
            print(f"   rollout → failed, pods crash-looping (3 restarts; without it the 600 s deadline): {_s(crash)}")
        finally:
            api.close()
            cluster.stop(cp.state_dir)


if __name__ == "__main__":
    run()
