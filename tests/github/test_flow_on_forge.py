"""The real dev_cycle flow with GitHubHost against the local forge (real PRs, real CI, real merges); the other
ports are the in-process fakes. Shows the wiring the demo uses for its code host."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptship.domain.request import DevRequest
from promptship.settings import Settings
from promptship.wiring import Ports, installed
from promptship_sandbox.forge import Forge, running_forge
from tests.github.conftest import NAME, OWNER, REPO, RecordingClock, client, make_host

pytestmark = [pytest.mark.forge, pytest.mark.flow]

# Red after the agent's first round (change_1.py alone), green once the repair round adds change_2.py.
MAKEFILE = """\
test:
\t@if [ -f change_1.py ] && [ ! -f change_2.py ]; then echo "FAILED test_version: change_2.py is missing"; exit 1; fi
\t@echo "all tests passed"
"""


@pytest.fixture
def forge_services(tmp_path: Path, prefect_harness: None) -> Iterator[tuple[Forge, Ports]]:
    from promptship_sandbox.fakes import fake_services

    src = tmp_path / "src"
    (src / "backend").mkdir(parents=True)
    (src / "Makefile").write_text(MAKEFILE)
    (src / "backend" / "Dockerfile").write_text("FROM scratch\n")
    with running_forge(tmp_path / "forge") as forge:
        forge.seed_repository(OWNER, NAME, src)
        assert forge.wait_idle(120)
        settings = Settings(home=tmp_path / "home")
        settings.health.url = "http://127.0.0.1:9/health"
        services = fake_services(
            settings, code_host=make_host(forge, RecordingClock()), boundaries={"code_host": "protocol stand-in"}
        )
        with installed(services):
            yield forge, services


def test_dev_cycle_repairs_red_ci_merges_and_deploys_the_forges_image(forge_services: tuple[Forge, Ports]):
    from flows.dev_cycle import dev_cycle

    forge, services = forge_services
    request = DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", repository=REPO, auto_merge=True)
    report = dev_cycle(request)

    assert report.outcome == "deployed", report
    steps = {s.step: s for s in report.steps}
    assert steps["wait_for_ci#1"].verdict == "failed" and steps["wait_for_ci#2"].verdict == "passed"
    # the failing job's log excerpt reached the agent's repair instruction
    conversation = next(iter(services.agent.conversations.values()))  # type: ignore[attr-defined]
    assert "change_2.py is missing" in conversation["instructions"][1]

    pulls = list(client(forge).get_repo(REPO).get_pulls(state="all"))
    assert len(pulls) == 1 and pulls[0].merged
    merge_sha = pulls[0].merge_commit_sha
    assert client(forge).get_repo(REPO).get_branch("main").commit.sha == merge_sha
    assert report.image == f"forge.local/{OWNER}/{NAME}/backend:{merge_sha}"
    assert forge.image_record(OWNER, NAME, "backend", merge_sha).is_file()

    again = dev_cycle(request)  # the same request again: attempt 2 finds its PR, merge and rollout, opens none
    assert again.outcome == "already_done" and again.attempt_number == 2
    assert len(list(client(forge).get_repo(REPO).get_pulls(state="all"))) == 1
