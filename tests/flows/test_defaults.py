"""Every deployment in prefect.yaml runs as written: its parameters make a valid DevRequest whose deploy target
exists in the seed app's manifests (examples/chat-app/k8s)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptship.domain.request import DeployTarget, DevRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_K8S = REPO_ROOT / "examples" / "chat-app" / "k8s"
# what a GitHub issue delivers to the github-event trigger's templates (a sample payload)
SAMPLE_EVENT = {
    "event.payload.prompt": "Add a GET /version endpoint that returns the deployed commit SHA",
    "event.payload.repository": "demo/chat-app",
    "event.payload.issue_number": 42,
    "event.payload.requester": "octocat",
    "event.payload.delivery_id": "d-1",
}


def _seed_containers() -> dict[str, set[str]]:
    """Deployment name → its container names, from the seed app's manifests."""
    out: dict[str, set[str]] = {}
    for path in SEED_K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                containers = doc["spec"]["template"]["spec"]["containers"]
                out[doc["metadata"]["name"]] = {c["name"] for c in containers}
    return out


def _render(value: Any) -> Any:
    """Substitute the trigger's whole-string templates with the sample payload's JSON values."""
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    if isinstance(value, str):
        m = re.fullmatch(r"\{\{\s*([\w.]+)\s*(\| default\(none\))?\s*\}\}", value)
        if m:  # a field the sample payload lacks renders as null with `| default(none)` (a follow-up's fields)
            return SAMPLE_EVENT[m.group(1)] if not m.group(2) else SAMPLE_EVENT.get(m.group(1))
    return value


def _dev_cycle_deployments() -> list[tuple[str, dict[str, Any]]]:
    doc = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    found = []
    for d in doc["deployments"]:
        if not d["entrypoint"].endswith(":dev_cycle"):
            continue
        params = dict(d.get("parameters") or {})
        for trigger in d.get("triggers") or []:
            params = {**params, **_render(trigger.get("parameters") or {})}
        # the UI form's deployment has no parameters: the form starts from DevRequest's defaults
        params.setdefault("request", {"prompt": "Add a GET /version endpoint"})
        found.append((d["name"], params))
    return found


@pytest.mark.parametrize(("name", "params"), _dev_cycle_deployments(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_dev_cycle_deployment_makes_a_request_whose_target_the_seed_app_has(name: str, params: dict) -> None:
    request = DevRequest.model_validate(params["request"])
    containers = _seed_containers()
    target = request.deploy.deployment
    assert target in containers, f"{name}: no Deployment {target!r} in the seed app"
    assert request.deploy.container in containers[request.deploy.deployment]


def test_there_are_dev_cycle_deployments_and_the_default_target_is_the_seed_backend() -> None:
    assert {n for n, _ in _dev_cycle_deployments()} >= {"dev-cycle", "demo", "github-event"}
    assert (DeployTarget().deployment, DeployTarget().container) == ("backend", "backend")
