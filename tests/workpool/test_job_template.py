"""promptship's Kubernetes base job template against prefect-kubernetes' own job configuration (no cluster; the
session's Prefect harness resolves block references)."""

from __future__ import annotations

import json

import pytest
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from promptship_sandbox.workpool import JOB_TEMPLATE

pytestmark = pytest.mark.manifests


async def test_the_worker_accepts_the_base_job_template_and_keeps_what_it_says(prefect_harness: None) -> None:
    """The library validates a job manifest before it creates a Job (it refused this template until it said
    ``parallelism``/``completions``); the rendered Job keeps the ConfigMap/Secret references and the volumes."""
    template = json.loads(JOB_TEMPLATE.read_text())
    config = await KubernetesWorkerJobConfiguration.from_template_and_values(template, {"namespace": "promptship"})

    job = config.job_manifest
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert job["spec"]["backoffLimit"] == 0  # the worker then tells the flow run to reschedule itself on SIGTERM
    assert container["envFrom"] == [
        {"configMapRef": {"name": "promptship-settings"}},
        {"secretRef": {"name": "promptship-credentials"}},
        {"secretRef": {"name": "promptship-store"}},
    ]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "promptship-results"}} in pod["volumes"]
    assert config.env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"  # type: ignore[index]
    assert pod["serviceAccountName"] == "promptship-flow-runner" and job["metadata"]["namespace"] == "promptship"
