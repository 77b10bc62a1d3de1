"""The real OpenHands agent-server for tests, the benchmark and the demo — started by ``scripts/openhands.sh``
(scrubbed environment, session key never in its environment) — and the demo's scripted "developer".

    ok, why = agent_server_installed()                 # `make openhands-install` done?
    with running_agent_server(state_dir) as server:     # a free 127.0.0.1 port, a fresh session key
        server.url, server.session_key                  # stopped (by its PID) when the block ends

``demo_developer_replies(workspace)``: the tool calls the LLM stand-in answers with so that the agent-server
really implements the demo request (``GET /version`` in ``examples/chat-app``): code, a test, a manifest
change, the tests run, a commit, finish.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from promptship_sandbox.credentials import session_key as new_session_key
from promptship_sandbox.llm_server import Reply, ToolCall
from promptship_sandbox.net import free_port

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "openhands.sh"


@dataclass(frozen=True)
class AgentServerProcess:
    url: str
    session_key: str
    state_dir: Path


def agent_server_venv() -> Path:
    """Where ``scripts/openhands.sh install`` puts the agent-server's venv (same rule as the script)."""
    version = re.search(r"^VERSION=(\S+)", SCRIPT.read_text(), re.M)
    if not version:
        raise RuntimeError(f"{SCRIPT} has no VERSION= line")
    cache = Path(os.environ.get("PROMPTSHIP_CACHE") or Path.home() / ".cache" / "promptship")
    return cache / f"openhands-{version.group(1)}"


def agent_server_installed() -> tuple[bool, str]:
    """(True, "") when the venv exists and imports the server; else (False, what to run)."""
    if not SCRIPT.is_file():
        return False, f"{SCRIPT} not found (run from a promptship checkout)"
    venv = agent_server_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        return False, f"no venv at {venv}: run `make openhands-install`"
    probe = subprocess.run([str(python), "-c", "import openhands.agent_server"], capture_output=True)
    if probe.returncode != 0:
        return False, f"{venv} does not import openhands.agent_server: run `make openhands-install`"
    return True, ""


@contextmanager
def running_agent_server(
    state_dir: Path,
    *,
    session_key: str | None = None,
    port: int | None = None,
    parent_env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> Iterator[AgentServerProcess]:
    """Start the agent-server with ``scripts/openhands.sh up`` and stop it after the block.

    ``parent_env`` is the environment the script is started from (default: this process's); whatever it
    holds, the server gets only the scrubbed one.
    """
    key = session_key if session_key is not None else new_session_key()
    env = {
        **(parent_env if parent_env is not None else os.environ),
        "OPENHANDS_PORT": str(port or free_port()),
        "OPENHANDS_STATE_DIR": str(state_dir),
        "OPENHANDS_SESSION_API_KEY": key,
    }
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=timeout_s)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"scripts/openhands.sh up failed: {up.stderr[-2000:]}")
        yield AgentServerProcess(up.stdout.strip().splitlines()[-1], key, state_dir)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=60)


_HEALTH = """    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}
"""
_VERSION = '''
    @app.get("/version")
    async def version() -> dict[str, str]:
        """The commit this process was built from, and the pod that answered."""
        sha = os.environ.get("APP_COMMIT_SHA") or os.environ.get("PROMPTSHIP_IMAGE_SHA") or "unknown"
        return {"sha": sha, "pod": os.environ.get("POD_NAME", "")}
'''
_TEST = '''"""GET /version answers the commit the process was built from."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Config
from app.main import create_app


def _client() -> TestClient:
    return TestClient(create_app(Config(llm_model="m", llm_api_base=None, llm_api_key=None), warm_up=False))


def test_version_returns_the_commit_sha(monkeypatch) -> None:
    monkeypatch.setenv("APP_COMMIT_SHA", "0123abc")
    monkeypatch.setenv("POD_NAME", "backend-1")
    with _client() as client:
        r = client.get("/version")
    assert r.status_code == 200
    assert r.json() == {"sha": "0123abc", "pod": "backend-1"}


def test_version_without_a_sha_says_unknown(monkeypatch) -> None:
    monkeypatch.delenv("APP_COMMIT_SHA", raising=False)
    monkeypatch.delenv("PROMPTSHIP_IMAGE_SHA", raising=False)
    with _client() as client:
        assert client.get("/version").json()["sha"] == "unknown"
'''
_ENV_ANCHOR = """            - name: HOME
              value: /tmp
"""
_ENV_ADDED = """            - name: POD_NAME  # GET /version names the pod that answered
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
"""


def demo_developer_replies(workspace: str, *, python: str = sys.executable, run_tests: bool = True) -> list[Reply]:
    """Scripted tool calls implementing the demo request in a checkout of ``examples/chat-app`` at
    ``workspace``: the endpoint, its test, the Deployment's env, ``make test``, a commit, finish.
    ``run_tests=False`` leaves ``make test`` to CI (a test's time: 40-90 s at load 15)."""
    ws = workspace.rstrip("/")
    main = f"{ws}/backend/app/main.py"

    def edit(path: str, old: str, new: str) -> list[ToolCall]:
        return [ToolCall("file_editor", {"command": "str_replace", "path": path, "old_str": old, "new_str": new})]

    def create(path: str, text: str) -> list[ToolCall]:
        return [ToolCall("file_editor", {"command": "create", "path": path, "file_text": text})]

    make_test = [ToolCall("terminal", {"command": f"cd {ws} && make test PYTHON={python}", "timeout": 300})]

    return [
        edit(main, "import logging\n", "import logging\nimport os\n"),
        edit(main, _HEALTH, _HEALTH + _VERSION),
        [
            ToolCall(
                "file_editor", {"command": "create", "path": f"{ws}/backend/tests/test_version.py", "file_text": _TEST}
            )
        ],
        edit(f"{ws}/k8s/backend-deployment.yaml", _ENV_ANCHOR, _ENV_ANCHOR + _ENV_ADDED),
        *([make_test] if run_tests else []),
        [
            ToolCall(
                "terminal",
                {
                    "command": f"cd {ws} && git add -A && git commit -q -m 'Add GET /version (commit SHA and pod)' && "
                    "git log --oneline -1"
                },  # fmt: skip
            )
        ],
        [
            ToolCall(
                "finish",
                {
                    "message": "Added GET /version returning the build's commit SHA and the pod name, a test "
                    "(backend/tests/test_version.py) and POD_NAME in k8s/backend-deployment.yaml; "
                    + ("make test passes." if run_tests else "the tests are left to CI.")
                },
            )
        ],
    ]


# The `repair` scenario: the first attempt answers {"commit": ...} although its own test expects {"sha": ...}
# (and it did not run the tests); CI is red, the repair instruction carries the log, the second attempt fixes it.
_VERSION_WRONG_KEY = _VERSION.replace('return {"sha": sha,', 'return {"commit": sha,')


def repair_developer_replies(workspace: str, *, python: str = sys.executable) -> list[Reply]:
    """Scripted tool calls for the repair scenario: a first attempt with a real mistake the chat app's tests
    catch (no test run), then — after the repair instruction with the CI log — the fix, ``make test``, a commit."""
    ws = workspace.rstrip("/")
    main = f"{ws}/backend/app/main.py"
    first: list[Reply] = [
        _edit(main, "import logging\n", "import logging\nimport os\n"),
        _edit(main, _HEALTH, _HEALTH + _VERSION_WRONG_KEY),
        [
            ToolCall(
                "file_editor", {"command": "create", "path": f"{ws}/backend/tests/test_version.py", "file_text": _TEST}
            )
        ],
        _commit(ws, "Add GET /version (commit SHA and pod)"),
        [ToolCall("finish", {"message": "Added GET /version returning the commit SHA and the pod, with a test."})],
    ]
    repair: list[Reply] = [
        _edit(main, 'return {"commit": sha,', 'return {"sha": sha,'),
        [ToolCall("terminal", {"command": f"cd {ws} && make test PYTHON={python}", "timeout": 300})],
        _commit(ws, "GET /version: answer the SHA under 'sha', as the test expects"),
        [
            ToolCall(
                "finish",
                {"message": "CI failed on test_version: the key was 'commit'; it is 'sha' now; make test passes."},
            )
        ],
    ]
    return first + repair


# The `rollback` scenario: uvicorn refuses `workers` with an app object ("You must pass the application as an
# import string") and exits 1 — at start, in the pod. The tests never run `python -m app`, so CI is green.
_MAIN_IMPORTS = "import logging\nimport sys\n"
_MAIN_RUN = 'uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")'
_CONCURRENCY = '''

def web_concurrency(env: dict[str, str] | os._Environ[str]) -> int:
    """How many worker processes serve the app: WEB_CONCURRENCY, default 2, at least 1."""
    raw = env.get("WEB_CONCURRENCY", "").strip()
    return max(1, int(raw)) if raw.isdigit() else 2
'''
_CONCURRENCY_TEST = '''"""WEB_CONCURRENCY sets the number of worker processes."""

from __future__ import annotations

from app.__main__ import web_concurrency


def test_web_concurrency_defaults_to_two() -> None:
    assert web_concurrency({}) == 2


def test_web_concurrency_reads_the_variable() -> None:
    assert web_concurrency({"WEB_CONCURRENCY": "4"}) == 4
    assert web_concurrency({"WEB_CONCURRENCY": "0"}) == 1
    assert web_concurrency({"WEB_CONCURRENCY": "many"}) == 2
'''
_CONCURRENCY_ENV = """            - name: WEB_CONCURRENCY  # worker processes of the backend
              value: "2"
"""


def rollback_developer_replies(workspace: str, *, python: str = sys.executable) -> list[Reply]:
    """Scripted tool calls for the rollback scenario: several uvicorn workers from WEB_CONCURRENCY, tested and
    green in CI — but ``uvicorn.run(app_object, workers=2)`` exits at start, so the new pods never get ready."""
    ws = workspace.rstrip("/")
    entry = f"{ws}/backend/app/__main__.py"
    return [
        _edit(entry, _MAIN_IMPORTS, "import logging\nimport os\nimport sys\n"),
        _edit(entry, "\n\ndef main() -> int:", _CONCURRENCY + "\n\ndef main() -> int:"),
        _edit(entry, _MAIN_RUN, _MAIN_RUN[:-1] + ", workers=web_concurrency(os.environ))"),
        [
            ToolCall(
                "file_editor",
                {
                    "command": "create",
                    "path": f"{ws}/backend/tests/test_concurrency.py",
                    "file_text": _CONCURRENCY_TEST,
                },
            )
        ],
        _edit(f"{ws}/k8s/backend-deployment.yaml", _ENV_ANCHOR, _ENV_ANCHOR + _CONCURRENCY_ENV),
        [ToolCall("terminal", {"command": f"cd {ws} && make test PYTHON={python}", "timeout": 300})],
        _commit(ws, "Serve the backend with WEB_CONCURRENCY worker processes (default 2)"),
        [
            ToolCall(
                "finish", {"message": "uvicorn now runs WEB_CONCURRENCY workers (default 2); tested; make test passes."}
            )
        ],
    ]


def _edit(path: str, old: str, new: str) -> list[ToolCall]:
    return [ToolCall("file_editor", {"command": "str_replace", "path": path, "old_str": old, "new_str": new})]


def _commit(ws: str, message: str) -> list[ToolCall]:
    command = f"cd {ws} && git add -A && git commit -q -m {message!r} && git log --oneline -1"
    return [ToolCall("terminal", {"command": command})]
