"""Fixtures for the chat app's tests: its backend as a real process, the LLM stand-in, the built frontend
served with a /chat proxy, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promptship.sandbox.llm_server import LLMStandIn, running_llm_stand_in
from tests.conftest import REPO_ROOT

APP_ROOT = REPO_ROOT / "examples" / "chat-app"
BACKEND_DIR = APP_ROOT / "backend"
FRONTEND_DIST = APP_ROOT / "frontend" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
MODEL = "chat-model"
API_KEY = "sk-chatapp-test-9f8e7d6c5b4a-do-not-log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Backend:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_backend(llm_base_url: str, log_dir: Path, **extra_env: str) -> Iterator[Backend]:
    """`python -m app` from the app's backend directory, the way the sandbox kubelet runs it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OPENAI_", "PROMPTSHIP_", "FRONTEND_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        LLM_API_BASE=llm_base_url,
        LLM_API_KEY=API_KEY,
        LLM_MODEL=MODEL,
        LLM_MAX_RETRIES="0",
        LLM_TIMEOUT_SECONDS="20",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"backend-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=BACKEND_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"backend exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"backend not healthy after 60 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Backend(url=url, process=process, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMStandIn]:
    with running_llm_stand_in() as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def backend(llm: LLMStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with running_backend(f"{llm.base_url}/v1", tmp_path_factory.mktemp("backend")) as b:
        yield b


@pytest.fixture
def fresh_llm(llm: LLMStandIn) -> LLMStandIn:
    llm.reset()
    return llm


# ---- the built frontend behind a /chat proxy (what nginx does in the image) ------------------------------


def _static_with_proxy(root: Path, backend_url: Callable[[], str]) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            if self.path != "/chat":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = urllib.request.Request(
                f"{backend_url()}/chat",
                data=body,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
            except OSError:
                # What nginx answers when the upstream is down: an HTML 502 page.
                status, ctype = 502, "text/html"
                payload = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away (page closed)

    return Handler


@dataclass
class Frontend:
    url: str
    backend_url: str


@contextmanager
def serving_frontend(backend_url: str, root: Path = FRONTEND_DIST) -> Iterator[Frontend]:
    state = Frontend(url="", backend_url=backend_url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _static_with_proxy(root, lambda: state.backend_url))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


ARTIFACTS = REPO_ROOT / "tests" / "chatapp" / "artifacts"
