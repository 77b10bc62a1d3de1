"""The sandbox kubelet's image resolution and command rules (no control plane needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from promptship_sandbox.kubelet import dockerfile_command, lookup_image, needs_record, resolve_argv

SHA = "a" * 40


@pytest.mark.parametrize(
    ("text", "entry", "cmd"),
    [
        ('FROM python\nCMD ["python", "-m", "app"]\n', [], ["python", "-m", "app"]),
        ('FROM python\nENTRYPOINT ["uvicorn"]\nCMD ["app:app"]\n', ["uvicorn"], ["app:app"]),
        ("FROM python\nCMD python -m app\n", [], ["/bin/sh", "-c", "python -m app"]),
        ('FROM node AS build\nCMD ["npm", "start"]\nFROM python\nCMD ["python", "app.py"]\n', [], ["python", "app.py"]),
        ('FROM python\nCMD ["python", \\\n  "app.py"]\n', [], ["python", "app.py"]),
    ],
)
def test_dockerfile_command_of_the_last_stage(tmp_path: Path, text: str, entry: list[str], cmd: list[str]) -> None:
    (tmp_path / "Dockerfile").write_text(text)
    assert dockerfile_command(tmp_path / "Dockerfile") == (entry, cmd)


def test_python_means_this_interpreter() -> None:
    assert resolve_argv(["python3", "-m", "app"], sys.executable) == [sys.executable, "-m", "app"]
    assert resolve_argv(["python", "app.py"], sys.executable)[0] == sys.executable
    assert resolve_argv(["/bin/sh", "-c", "x"], sys.executable) == ["/bin/sh", "-c", "x"]


def test_images_resolve_through_registry_records(tmp_path: Path) -> None:
    record = tmp_path / "demo" / "chat-app" / "backend" / f"{SHA}.json"
    record.parent.mkdir(parents=True)
    image = f"forge.local/demo/chat-app/backend:{SHA}"
    record.write_text(json.dumps({"image": image, "sha": SHA, "context": "backend", "git_dir": "/x.git"}))

    found = lookup_image(image, [tmp_path / "elsewhere", tmp_path])

    assert found is not None and (found.sha, found.context, found.git_dir) == (SHA, "backend", "/x.git")
    assert lookup_image(f"forge.local/demo/chat-app/frontend:{SHA}", [tmp_path]) is None
    assert needs_record(image) and not needs_record("nginx:1.25") and not needs_record("ghcr.io/a/b/c:1")


def test_dockerfile_env_of_the_last_stage(tmp_path: Path) -> None:
    from promptship_sandbox.kubelet import dockerfile_env

    (tmp_path / "Dockerfile").write_text(
        "FROM a AS build\nENV BUILD_ONLY=1\nFROM python\n"
        "ENV PATH=/opt/venv/bin:$PATH \\\n    PYTHONUNBUFFERED=1 \\\n    HOST=0.0.0.0\nENV GREETING hello world\n"
    )
    assert dockerfile_env(tmp_path / "Dockerfile") == {
        "PYTHONUNBUFFERED": "1",
        "HOST": "0.0.0.0",
        "GREETING": "hello world",
    }
