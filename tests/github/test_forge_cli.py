"""`promptship forge serve` as its own process, used through wiring.build_code_host — the way a demo or a
developer points promptship at it with environment settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from promptship.settings import GitHubSettings, Settings
from promptship.wiring import build_code_host
from tests.github.conftest import make_source

pytestmark = pytest.mark.forge


def test_forge_serve_process_with_build_code_host(tmp_path: Path):
    token = "ghp_" + "0" * 36  # a sandbox token handed to the forge, as PROMPTSHIP_GITHUB__TOKEN would be
    env = {**os.environ, "PROMPTSHIP_GITHUB__TOKEN": token}
    command = [sys.executable, "-m", "promptship.cli", "forge", "serve", "--port", "0"]
    command += ["--root", str(tmp_path / "forge"), "--seed", f"demo/app={make_source(tmp_path)}"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        api_url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"forge API\s+(http://127\.0\.0\.1:\d+/api/v3)", line)
            if match:
                api_url = match.group(1)
                break
        assert api_url, "forge serve did not print its address"
        assert (tmp_path / "forge" / "token").read_text().strip() == token
        settings = Settings(github=GitHubSettings(api_url=api_url, token=SecretStr(token)))
        host = build_code_host(settings)
        ws = Path(host.prepare_workspace("demo/app", "main", "promptship/cli", str(tmp_path / "ws")))
        (ws / "hello.txt").write_text("hello\n")
        sha = host.push_branch("demo/app", str(ws), "promptship/cli")
        pr = host.find_or_create_pull_request(
            "demo/app", run_key="cli", branch="promptship/cli", base_branch="main", title="t", body="b"
        )
        assert pr.created and pr.head_sha == sha and pr.url.startswith(api_url.removesuffix("/api/v3"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
