"""The built frontend in Debian's headless chromium (Playwright), talking to the real backend process:
a message sent shows the answer; a failing LLM and a backend that is down both show an error. Screenshots
are saved under tests/chatapp/artifacts/ (paths printed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptship_sandbox.llm_server import LLMStandIn
from tests.chatapp.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_FLAGS,
    FRONTEND_DIST,
    MODEL,
    Backend,
    Frontend,
    free_port,
    serving_frontend,
)
from tests.conftest import require

pytestmark = [pytest.mark.chatapp, pytest.mark.browser]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require("chromium", CHROMIUM.exists(), "run `make chromium` (Debian's chromium at /usr/bin/chromium)")
    require("chat-app frontend build", (FRONTEND_DIST / "index.html").exists(), "run `make chatapp-deps`")
    from playwright.sync_api import expect, sync_playwright

    # The backend's first chat waits for LiteLLM's import (seconds on a busy 2-core machine).
    expect.set_options(timeout=60_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def frontend(backend: Backend) -> Iterator[Frontend]:
    with serving_frontend(backend.url) as f:
        yield f


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 900, "height": 700})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        context.close()


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_a_message_sent_shows_the_answer(page, frontend: Frontend, fresh_llm: LLMStandIn) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    fresh_llm.script(MODEL, ["Hello! I am the stand-in model, answering through LiteLLM."])
    page.goto(frontend.url)
    expect(page.get_by_role("heading", name="LiteLLM Chat")).to_be_visible()
    send(page, "Hi there, who are you?")
    answer = page.locator('li.message[data-role="assistant"]')
    expect(answer).to_contain_text("I am the stand-in model")
    expect(page.locator('li.message[data-role="user"]')).to_contain_text("Hi there, who are you?")
    expect(page.get_by_test_id("loading")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_have_count(0)
    path = screenshot(page, "chat-answer")
    assert path.stat().st_size > 1000
    assert [c.body["messages"][-1]["content"] for c in fresh_llm.completions(MODEL)] == ["Hi there, who are you?"]


def test_an_llm_failure_shows_the_backends_error(page, frontend: Frontend, fresh_llm: LLMStandIn) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    fresh_llm.fail_next(1, status=503)
    page.goto(frontend.url)
    send(page, "Are you there?")
    expect(page.get_by_test_id("error")).to_contain_text("The language model failed (HTTP 503).")
    expect(page.locator('li.message[data-role="assistant"]')).to_have_count(0)
    screenshot(page, "chat-llm-error")


def test_a_backend_that_is_down_shows_an_error(page, frontend: Frontend) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    frontend.backend_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the proxy answers 502
    page.goto(frontend.url)
    send(page, "Hello?")
    error = page.get_by_test_id("error")
    expect(error).to_contain_text(re.compile(r"unavailable \(HTTP 502\)"))
    # The input works again after the failure (loading finished, button re-enabled once text is typed).
    expect(page.get_by_test_id("loading")).to_have_count(0)
    page.get_by_label("Message").fill("again")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    screenshot(page, "chat-backend-down")


class HeldBackend:
    """A backend stand-in that holds each /chat until released, so the loading state can be observed."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                release.wait(60)
                body = b'{"response": "Sorry for the wait."}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_loading_indicator_while_waiting_for_the_answer(page, frontend: Frontend) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    held = HeldBackend()
    try:
        frontend.backend_url = held.url
        page.goto(frontend.url)
        send(page, "Take your time")
        expect(page.get_by_test_id("loading")).to_be_visible()
        expect(page.get_by_role("button", name="Sending…")).to_be_disabled()
        screenshot(page, "chat-loading")
        held.release.set()
        expect(page.locator('li.message[data-role="assistant"]')).to_contain_text("Sorry for the wait.")
        expect(page.get_by_test_id("loading")).to_have_count(0)
    finally:
        held.close()
