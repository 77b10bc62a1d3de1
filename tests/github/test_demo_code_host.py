"""The demo's code host: the forge seeded with examples/chat-app, its own `make test` as CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptship.domain.request import branch_for
from promptship_sandbox.forge import demo_code_host, running_forge
from tests.conftest import REPO_ROOT, require

pytestmark = pytest.mark.forge

CHAT_APP = REPO_ROOT / "examples" / "chat-app"


def test_demo_code_host_runs_the_chat_apps_tests_and_publishes_its_images(tmp_path: Path):
    require("examples/chat-app", (CHAT_APP / "Makefile").is_file(), "the seed chat app is missing")
    with running_forge(tmp_path / "forge") as forge:
        host = demo_code_host(forge)
        seeded = forge.ci_runs[0]
        assert seeded.repository == "demo/chat-app" and seeded.conclusion == "success", seeded
        assert {ref.rsplit("/", 1)[-1].split(":")[0] for ref in seeded.images} == {"backend", "frontend"}
        record = json.loads(forge.image_record("demo", "chat-app", "backend", seeded.sha).read_text())
        assert record["image"] == f"forge.local/demo/chat-app/backend:{seeded.sha}"

        # a change that breaks the backend's tests is red, with the failing test in the excerpt
        key = "demo0000000000ab"
        ws = Path(host.prepare_workspace("demo/chat-app", "main", branch_for(key), str(tmp_path / "ws")))
        app_files = sorted((ws / "backend" / "app").glob("*.py"))
        assert app_files, "the chat app's backend package is missing"
        (ws / "backend" / "tests" / "test_broken_on_purpose.py").write_text(
            "def test_broken_on_purpose():\n    assert 1 + 1 == 3, 'arithmetic is broken on purpose'\n"
        )
        sha = host.push_branch("demo/chat-app", str(ws), branch_for(key))
        ci = host.wait_for_ci("demo/chat-app", sha, timeout_s=900)
        assert ci.verdict == "failed"
        assert "test_broken_on_purpose" in ci.failing[0].log_excerpt
