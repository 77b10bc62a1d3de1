"""The frontend's real nginx config (frontend/nginx/default.conf.template) run by Debian's nginx on 127.0.0.1
in front of the built UI and the real backend process: static files, its own /health, the /chat proxy (also
when the backend is down), the single-page fallback, and the browser through it."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptship_sandbox.llm_server import LLMStandIn
from tests.chatapp.conftest import APP_ROOT, CHROMIUM, CHROMIUM_FLAGS, FRONTEND_DIST, MODEL, Backend, free_port
from tests.conftest import require

pytestmark = pytest.mark.chatapp

CACHE = Path(os.environ.get("PROMPTSHIP_CACHE", Path.home() / ".cache" / "promptship"))
NGINX_ROOT = CACHE / "nginx"
NGINX = NGINX_ROOT / "usr" / "sbin" / "nginx"
TEMPLATE = APP_ROOT / "frontend" / "nginx" / "default.conf.template"


def render(backend_url: str, port: int, tmp: Path) -> Path:
    """The image's template with what the container provides replaced: ${BACKEND_URL} (envsubst in the
    image), the listen address (127.0.0.1 here) and the document root (the Vite build here)."""
    server = TEMPLATE.read_text()
    for old, new in [
        ("${BACKEND_URL}", backend_url),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        ("root /usr/share/nginx/html;", f"root {FRONTEND_DIST};"),
    ]:
        assert old in server, f"template changed: {old!r} not found"
        server = server.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    include {NGINX_ROOT}/etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
{temp}
{server}
}}
"""
    )
    return conf


@pytest.fixture
def nginx(backend: Backend, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    require("nginx", NGINX.exists(), "run `make chatapp-deps` (unpacks Debian's nginx into the cache)")
    require("chat-app frontend build", (FRONTEND_DIST / "index.html").exists(), "run `make chatapp-deps`")
    port = free_port()
    conf = render(backend.url, port, tmp_path)
    check = subprocess.run([str(NGINX), "-t", "-e", "stderr", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = (tmp_path / "nginx.log").open("wb")
    proc = subprocess.Popen(
        [str(NGINX), "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "nginx.log").read_text()
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.05)
        yield url, conf
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_nginx_serves_the_ui_its_health_and_proxies_chat(nginx, fresh_llm: LLMStandIn) -> None:  # type: ignore[no-untyped-def]
    url, _ = nginx
    index = httpx.get(url)
    assert index.status_code == 200 and '<div id="root">' in index.text
    asset = next((FRONTEND_DIST / "assets").glob("*.js")).name
    js = httpx.get(f"{url}/assets/{asset}")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "immutable" in js.headers["cache-control"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    # A client-side route falls back to the app.
    assert '<div id="root">' in httpx.get(f"{url}/some/page").text

    fresh_llm.script(MODEL, ["proxied answer"])
    r = httpx.post(f"{url}/chat", json={"message": "through nginx"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"response": "proxied answer"}
    bad = httpx.post(f"{url}/chat", json={"message": ""}, timeout=60)
    assert bad.status_code == 400 and "error" in bad.json()


def test_nginx_answers_502_when_the_backend_is_down(tmp_path: Path) -> None:
    require("nginx", NGINX.exists(), "run `make chatapp-deps` (unpacks Debian's nginx into the cache)")
    require("chat-app frontend build", (FRONTEND_DIST / "index.html").exists(), "run `make chatapp-deps`")
    port = free_port()
    conf = render(f"http://127.0.0.1:{free_port()}", port, tmp_path)
    proc = subprocess.Popen(
        [str(NGINX), "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "nginx did not start"
                time.sleep(0.05)
        r = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "hi"}, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert r.status_code == 502


@pytest.mark.browser
def test_browser_through_nginx_shows_the_answer(nginx, fresh_llm: LLMStandIn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    require("chromium", CHROMIUM.exists(), "run `make chromium`")
    from playwright.sync_api import expect, sync_playwright

    url, _ = nginx
    fresh_llm.script(MODEL, ["Served by nginx, answered by the stand-in."])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.get_by_label("Message").fill("Hello nginx")
            page.get_by_role("button", name="Send").click()
            expect(page.locator('li.message[data-role="assistant"]')).to_contain_text("Served by nginx", timeout=60_000)
            shot = tmp_path / "chat-through-nginx.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
        finally:
            browser.close()
