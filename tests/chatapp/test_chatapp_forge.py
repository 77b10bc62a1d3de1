"""The chat app as the demo uses it: seeded into the local forge, whose CI runner runs the app's `make test`
on every push; green on main publishes one image per Dockerfile context (backend, frontend). The demo's
change (GET /version with its test) stays green; a change that breaks the app's contract turns CI red."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from promptship_sandbox.forge import running_forge
from tests.chatapp.conftest import APP_ROOT

pytestmark = [pytest.mark.chatapp, pytest.mark.forge]


def test_seeded_chat_app_is_green_and_publishes_both_images(tmp_path: Path) -> None:
    with running_forge(tmp_path / "forge") as forge:
        sha = forge.seed_repository("demo", "chat-app", APP_ROOT)
        assert forge.wait_idle(600)
        [build] = [b for b in forge.ci_runs if b.sha == sha]
        assert build.conclusion == "success", build
        assert sorted(build.images) == [
            f"forge.local/demo/chat-app/backend:{sha}",
            f"forge.local/demo/chat-app/frontend:{sha}",
        ]

        # The seeded tree honours the app's .gitignore: no node_modules or build output went in.
        record = json.loads(forge.image_record("demo", "chat-app", "backend", sha).read_text())
        files = subprocess.run(
            ["git", "--git-dir", record["git_dir"], "ls-tree", "-r", "--name-only", sha],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "backend/app/main.py" in files and "frontend/package-lock.json" in files
        assert not [f for f in files if f.startswith(("frontend/node_modules/", "frontend/dist/"))]

        # The demo's request, done by hand: GET /version plus its test — CI stays green and publishes.
        main_py = (APP_ROOT / "backend" / "app" / "main.py").read_text()
        health = '    @app.get("/health")\n'
        assert health in main_py
        with_version = main_py.replace(
            health,
            '    @app.get("/version")\n    async def version() -> dict[str, str]:\n'
            '        return {"version": "1.2.3"}\n\n' + health,
        )
        version_test = (
            "from fastapi.testclient import TestClient\n\n"
            "from app.config import Config\nfrom app.main import create_app\n\n\n"
            "def test_version() -> None:\n"
            "    with TestClient(create_app(Config(llm_model='m'), warm_up=False)) as client:\n"
            "        assert client.get('/version').json() == {'version': '1.2.3'}\n"
        )
        green_sha = forge.commit_files(
            "demo",
            "chat-app",
            "main",
            {"backend/app/main.py": with_version, "backend/tests/test_version.py": version_test},
            "add GET /version",
        )
        assert forge.wait_idle(600)
        [green] = [b for b in forge.ci_runs if b.sha == green_sha]
        assert green.conclusion == "success"
        assert f"forge.local/demo/chat-app/backend:{green_sha}" in green.images

        broken = (
            (APP_ROOT / "backend" / "app" / "main.py")
            .read_text()
            .replace('return {"status": "ok"}', 'return {"status": "broken"}')
        )
        assert "broken" in broken
        red_sha = forge.commit_files("demo", "chat-app", "main", {"backend/app/main.py": broken}, "break /health")
        assert forge.wait_idle(600)
        [red] = [b for b in forge.ci_runs if b.sha == red_sha]
        assert red.conclusion == "failure"
        assert red.images == ()
