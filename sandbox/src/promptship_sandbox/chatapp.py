"""The seed chat app (examples/chat-app) run locally, the way tests and people try it.

- ``running_backend(llm_base_url, log_dir)``: ``python -m app`` from the app's backend directory (as the sandbox
  kubelet runs it) on a free 127.0.0.1 port, waited on until ``/health`` answers; stopped by PID afterwards.
- ``serving_frontend(backend_url)``: the Vite build (``make chatapp-deps``) served on 127.0.0.1 with ``POST /chat``
  forwarded to the backend — what the image's nginx does (an HTML 502 when the backend is down, like nginx).
- ``promptship chatapp serve``: both, plus the LLM stand-in unless ``--llm-base-url`` is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from promptship_sandbox.net import free_port

APP_ROOT = Path(__file__).resolve().parents[3] / "examples" / "chat-app"
BACKEND_DIR = APP_ROOT / "backend"
FRONTEND_DIST = APP_ROOT / "frontend" / "dist"
# Variables of the caller's environment that never reach the app (it gets its LLM settings explicitly).
_DROPPED_PREFIXES = ("LLM_", "OPENAI_", "PROMPTSHIP_", "FRONTEND_", "OPENROUTER_", "ANTHROPIC_", "GITHUB_", "GH_")


@dataclass
class Backend:
    """A running backend process."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_backend(
    llm_base_url: str,
    log_dir: Path,
    *,
    model: str,
    api_key: str | None = None,
    python: str = sys.executable,
    ready_timeout_s: float = 60.0,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Backend]:
    """Start the backend against an OpenAI-compatible ``llm_base_url`` (…/v1); stop it when the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        LLM_API_BASE=llm_base_url,
        LLM_MODEL=model,
        LLM_MAX_RETRIES="0",
        LLM_TIMEOUT_SECONDS="20",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    if api_key:
        env["LLM_API_KEY"] = api_key
    env.update(extra_env or {})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"backend-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [python, "-m", "app"], cwd=BACKEND_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise OSError(f"chat-app backend exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"chat-app backend not healthy after {ready_timeout_s:g} s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Backend(url=url, process=process, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _static_with_proxy(root: Path, backend_url: Callable[[], str]) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
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
                with urllib.request.urlopen(request, timeout=120) as r:
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
    """A served frontend; ``backend_url`` may be changed while it runs (e.g. to a dead port)."""

    url: str
    backend_url: str


@contextmanager
def serving_frontend(backend_url: str, root: Path = FRONTEND_DIST, *, port: int = 0) -> Iterator[Frontend]:
    """Serve the built UI from ``root`` on 127.0.0.1 with ``POST /chat`` forwarded to ``backend_url``."""
    state = Frontend(url="", backend_url=backend_url)
    server = ThreadingHTTPServer(("127.0.0.1", port), _static_with_proxy(root, lambda: state.backend_url))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
