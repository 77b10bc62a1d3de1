"""CORS in a real browser: a UI built with VITE_BACKEND_URL calls the backend cross-origin; the backend
(FRONTEND_ORIGIN) lets exactly the frontend's origin through, and the browser blocks any other origin."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptship_sandbox.llm_server import LLMStandIn
from tests.chatapp.conftest import APP_ROOT, CHROMIUM, CHROMIUM_FLAGS, MODEL, running_backend, serving_frontend
from tests.conftest import require

pytestmark = [pytest.mark.chatapp, pytest.mark.browser]

FRONTEND = APP_ROOT / "frontend"


def build_for(backend_url: str, out: Path) -> Path:
    """`vite build` with VITE_BACKEND_URL set, into ``out``."""
    vite = FRONTEND / "node_modules" / ".bin" / "vite"
    require("chat-app frontend deps", vite.exists() and shutil.which("node") is not None, "run `make chatapp-deps`")
    env = {**os.environ, "VITE_BACKEND_URL": backend_url}
    result = subprocess.run(
        [str(vite), "build", "--outDir", str(out), "--emptyOutDir", "--logLevel", "error"],
        cwd=FRONTEND,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert backend_url in "".join(p.read_text() for p in (out / "assets").glob("*.js"))
    return out


@pytest.fixture
def chromium_browser() -> Iterator[object]:
    require("chromium", CHROMIUM.exists(), "run `make chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def test_only_the_frontend_origin_may_call_the_backend(
    chromium_browser,  # type: ignore[no-untyped-def]
    llm: LLMStandIn,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    # Two static servers of the same UI: the allowed origin and a foreign one (no /chat proxy used).
    with (
        serving_frontend("http://127.0.0.1:9", tmp_path / "dist") as allowed,
        serving_frontend("http://127.0.0.1:9", tmp_path / "dist") as foreign,
    ):
        with running_backend(f"{llm.base_url}/v1", tmp_path / "logs", FRONTEND_ORIGIN=allowed.url) as backend:
            build_for(backend.url, tmp_path / "dist")
            llm.reset()
            llm.script(MODEL, ["Cross-origin answer."])

            page = chromium_browser.new_page()  # type: ignore[attr-defined]
            page.goto(allowed.url)
            page.get_by_label("Message").fill("from the allowed origin")
            page.get_by_role("button", name="Send").click()
            expect(page.locator('li.message[data-role="assistant"]')).to_contain_text(
                "Cross-origin answer.", timeout=60_000
            )

            other = chromium_browser.new_page()  # type: ignore[attr-defined]
            other.goto(foreign.url)
            other.get_by_label("Message").fill("from a foreign origin")
            other.get_by_role("button", name="Send").click()
            expect(other.get_by_test_id("error")).to_contain_text("unreachable", timeout=60_000)
            # The preflight was refused, so the POST never reached the backend and the LLM was not called.
            assert [c.body["messages"][-1]["content"] for c in llm.completions(MODEL)] == ["from the allowed origin"]
