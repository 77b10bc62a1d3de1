"""`promptship chatapp serve`: the UI, the backend and the LLM stand-in come up on 127.0.0.1, a chat goes
through the UI's /chat proxy, and Ctrl-C or SIGTERM stops every process it started."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.chatapp.conftest import FRONTEND_DIST, free_port
from tests.conftest import require

pytestmark = pytest.mark.chatapp


def _as_a_background_job() -> None:
    """What a shell does to a job started with `&`: SIGINT ignored (Python then raises no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_answers_through_the_ui_and_stops_on_ctrl_c_or_sigterm_even_as_a_background_job(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    require("chat-app frontend build", (FRONTEND_DIST / "index.html").exists(), "run `make chatapp-deps`")
    port = free_port()
    out = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptship.cli", "chatapp", "serve", "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_as_a_background_job,  # it only sets a disposition: safe before exec
    )
    try:
        deadline = time.monotonic() + 90
        while "chat UI:" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        log = (tmp_path / "serve.log").read_text()
        assert f"chat UI: http://127.0.0.1:{port}" in log
        backend_port = int(re.search(r"backend: http://127\.0\.0\.1:(\d+)", log).group(1))  # type: ignore[union-attr]
        assert '<div id="root">' in httpx.get(f"http://127.0.0.1:{port}/").text
        r = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "hello there"}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json() == {"response": "[chat-model] hello there"}  # the stand-in echoes
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # leave nothing running, then fail
            raise
        finally:
            out.close()
    assert "the backend exited" not in (tmp_path / "serve.log").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{backend_port}/health", timeout=2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
