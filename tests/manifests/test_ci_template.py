"""The CI template promptship adds to repositories lacking CI: triggers, least privilege, never deploys on push."""

from __future__ import annotations

from importlib.resources import files

import pytest
import yaml

pytestmark = pytest.mark.manifests


@pytest.fixture(scope="module")
def workflow() -> dict:
    text = files("promptship.templates.ci").joinpath("github-actions.yml").read_text()
    doc = yaml.safe_load(text)
    # YAML 1.1 reads the key `on` as True
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def test_triggers(workflow):
    on = workflow["on"]
    assert on["push"]["branches"] == ["main"]
    assert on["pull_request"]["branches"] == ["main"]
    assert "workflow_dispatch" in on


def test_least_privilege_permissions(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions", {})
        assert set(perms.values()) <= {"read", "write"}
        writes = {k for k, v in perms.items() if v == "write"}
        assert writes <= ({"packages"} if name == "image" else set()), f"job {name} writes {writes}"


def test_image_pushed_to_ghcr_tagged_with_the_commit_sha_only_on_the_base_branch(workflow):
    image = workflow["jobs"]["image"]
    assert "github.event_name == 'push'" in image["if"] and "refs/heads/main" in image["if"]
    push = next(s for s in image["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action"))
    assert push["with"]["push"] is True
    assert push["with"]["tags"].endswith(":${{ github.sha }}") and "${{ env.REGISTRY }}" in push["with"]["tags"]
    assert workflow["env"]["REGISTRY"] == "ghcr.io"


def test_it_never_deploys_on_push(workflow):
    deploying = {
        name: job
        for name, job in workflow["jobs"].items()
        if any("kubectl" in str(step.get("run", "")) for step in job.get("steps", []))
    }
    assert set(deploying) == {"deploy"}
    assert deploying["deploy"]["if"] == "github.event_name == 'workflow_dispatch'"
    assert deploying["deploy"]["environment"] == "production"


def test_current_action_versions(workflow):
    uses = {
        step["uses"].split("@")[0]: step["uses"].split("@")[1]
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "uses" in step
    }
    minimum = {
        "actions/checkout": 5,
        "actions/setup-python": 6,
        "docker/login-action": 3,
        "docker/build-push-action": 6,
        "docker/setup-buildx-action": 3,
    }
    for action, major in minimum.items():
        assert int(uses[action].lstrip("v")) >= major, f"{action}@{uses[action]}"
