"""What a run shows on its Prefect page, read back from a real Prefect server: the progress artifact while CI
runs and after the run, and the report artifact's markdown.

The run is a real ``dev_cycle`` in another process (durable fakes: ``tests/flows/durable_fakes.py``), held
inside CI so the test can look at it from outside while it waits.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact

from promptship.domain.redaction import REDACTED
from promptship.domain.request import DevRequest
from tests.flows.durable_fakes import JsonState
from tests.flows.test_processes import _env, _wait_for, spawned  # noqa: F401  (a fixture)

pytestmark = pytest.mark.flow

REPO_ROOT = Path(__file__).resolve().parents[2]
# a made-up token in GitHub's format: the report, the run name and the progress must never show it
TOKEN_BODY = "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"


def _flow_runs_of(request: DevRequest) -> list[Any]:
    """The flow runs of ``request``, by its key (their parameter may be the sealed form: prompt redacted)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    # the shared server also holds other flows' runs (a bare chain, policy-review): only dev-cycle runs have a request
    return [
        r
        for r in runs
        if "request" in r.parameters and DevRequest.model_validate(r.parameters["request"]).run_key == request.run_key
    ]


def _artifacts(flow_run_id: UUID) -> dict[str, list[Artifact]]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_type: dict[str, list[Artifact]] = {}
    for a in found:
        by_type.setdefault(a.type or "", []).append(a)
    return by_type


def test_the_progress_shows_the_ci_stage_while_ci_runs_and_the_report_tells_the_story(
    prefect_harness: None,
    tmp_path: Path,
    spawned: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    fakes = tmp_path / "fakes"
    JsonState(fakes)
    (fakes / "hold-ci").write_text("")
    request = DevRequest(
        prompt=f"Add GET /version ({uuid.uuid4().hex[:8]}); the registry token is ghp_{TOKEN_BODY}",
        auto_merge=True,
        requester="octocat",
    )
    script = (
        "import sys\n"
        "from flows.dev_cycle import dev_cycle\n"
        "from promptship.domain.request import DevRequest\n"
        "dev_cycle(DevRequest.model_validate_json(sys.argv[1]))\n"
    )
    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-c", script, request.model_dump_json()],
        cwd=REPO_ROOT,
        env=_env(fakes),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    spawned.append(worker)
    _wait_for(lambda: (fakes / "at-ci").exists() or worker.poll() is not None, "the run to wait on CI", log=log_path)
    assert worker.poll() is None, log_path.read_text()[-3000:]

    (run,) = _flow_runs_of(request)
    (waiting,) = _artifacts(run.id)["progress"]
    assert waiting.key == f"progress-{request.run_key}"
    assert waiting.data == 40.0  # stages 1-4 done (route, code, compile, PR); CI is stage 5 of 10
    assert waiting.description == "Stage 5/10 · wait_for_ci#1 — waiting for CI"

    (fakes / "hold-ci").unlink()
    assert worker.wait(timeout=180) == 0, log_path.read_text()[-3000:]

    artifacts = _artifacts(run.id)
    (final,) = artifacts["progress"]  # the same artifact, moved on: one per run
    assert final.id == waiting.id
    assert (final.data, final.description) == (100.0, "Stage 10/10 · report — finished: deployed")

    (report,) = artifacts["markdown"]
    assert report.key == f"run-{request.run_key}"
    md = str(report.data)
    assert md.startswith(f"# promptship run `{request.run_key}` — deployed\n")
    # the prompt, redacted; the token shows nowhere in the run's artifacts or its name
    assert "- **Request**: Add GET /version" in md and f"is {REDACTED}" in md
    assert all(TOKEN_BODY not in str(a.data) + str(a.description) for kind in artifacts.values() for a in kind)
    with get_client(sync_client=True) as client:
        seen = client.read_flow_run(run.id)
    assert TOKEN_BODY not in seen.name and TOKEN_BODY not in str(seen.parameters)
    # links: the PR (the durable code host numbers it 1), the image built from the merge
    assert "- **Pull request**: [#1](https://forge.invalid/demo/chat-app/pull/1)" in md
    assert "- **Image deployed**: forge.local/demo/chat-app/backend:" in md
    # costs: the fake gateway's PR text is the one cloud call ($0.001); the agent's local work is free
    assert "- **LLM cost**: $0.0010 (cloud $0.0010, local $0.0000)" in md
    # the story, one line per step, in order
    story = md.split("## What happened\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(". ", 1)[0] for line in story] == [str(n) for n in range(1, 11)]
    assert story[0] == "1. Routed as **default** to `mistral` (local): fake policy: class default."
    assert story[3] == "4. Pull request [#1](https://forge.invalid/demo/chat-app/pull/1) opened."
    assert story[4].startswith("5. CI round 1 on `") and story[4].endswith("`: **passed**.")
    assert story[-1] == "10. Outcome: **deployed**."
    # route reasons: every step that made an LLM call, with its model and mode
    routes = md.split("## Route decisions\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert routes[2:] == [
        "| route | mistral | local | fake policy: class default |",
        "| generate_code | mistral | local | fake policy: class default |",
        "| open_pull_request | claude-docs | cloud | fake policy: class docs |",
    ]
    assert "| report | deployed |" in md
