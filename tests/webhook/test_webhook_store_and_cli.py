"""Durable pieces (delivery claims, CI wake-ups across processes sharing the store) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from promptship.domain.webhooks import CISignal, sign
from promptship.store import make_engine
from promptship.store.webhooks import InProcessCIWakeups, StoreCIWakeups, WebhookDeliveries
from promptship_sandbox.net import free_port

pytestmark = pytest.mark.webhook

SHA = "b" * 40


def test_a_delivery_is_claimed_once(store_url: str) -> None:
    deliveries = WebhookDeliveries(make_engine(store_url))
    deliveries.create_schema()
    assert deliveries.claim("d1", "issues", "a/b") is True
    assert deliveries.claim("d1", "issues", "a/b") is False
    deliveries.finish("d1", "failed", "boom")
    assert deliveries.claim("d1", "issues", "a/b") is True  # a failed one may be handled again
    deliveries.finish("d1", "started", "run-1")
    assert deliveries.claim("d1", "issues", "a/b") is False
    assert deliveries.outcomes() == {"d1": "started"}


def test_store_wakeups_reach_a_waiter_using_another_engine(store_url: str) -> None:
    receiver_side = StoreCIWakeups(make_engine(store_url))
    WebhookDeliveries(make_engine(store_url)).create_schema()
    worker_side = StoreCIWakeups(make_engine(store_url), interval_s=0.05)

    seen = worker_side.generation("Acme/App", SHA)
    assert seen == 0
    assert worker_side.wait("Acme/App", SHA, after=seen, timeout_s=0.1) == 0  # nothing yet: times out
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(worker_side.wait("acme/app", SHA, after=0, timeout_s=30)))
    waiter.start()
    receiver_side.notify(CISignal(repository="Acme/App", sha=SHA, event="check_suite"))
    waiter.join(30)
    assert woke == [1]
    receiver_side.notify(CISignal(repository="Acme/App", sha=SHA.upper(), event="status"))
    assert worker_side.generation("ACME/app", SHA) == 2


def test_store_wakeups_time_out_on_an_injected_clock(store_url: str) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    wakeups = StoreCIWakeups(make_engine(store_url), interval_s=1.0, clock=lambda: now[0], sleep=sleep)
    wakeups.create_schema()
    assert wakeups.wait("a/b", SHA, after=0, timeout_s=2.5) == 0
    assert slept == [1.0, 1.0, 0.5]


def test_in_process_wakeups_do_not_miss_an_event_announced_before_the_wait() -> None:
    wakeups = InProcessCIWakeups()
    seen = wakeups.generation("a/b", SHA)
    wakeups.notify(CISignal(repository="a/b", sha=SHA, event="check_run"))
    assert wakeups.wait("a/b", SHA, after=seen, timeout_s=0) == seen + 1
    assert wakeups.wait("a/b", "c" * 40, after=0, timeout_s=0) == 0


def test_serve_refuses_to_start_without_a_secret() -> None:
    from promptship.cli import app

    result = CliRunner().invoke(app, ["webhook", "serve", "--port", "1"])
    assert result.exit_code != 0
    assert "PROMPTSHIP_GITHUB_WEBHOOK_SECRET" in result.output


def test_serve_answers_signed_deliveries(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PROMPTSHIP_GITHUB_WEBHOOK_SECRET": "cli-secret",
        "PROMPTSHIP_GITHUB__ALLOWED_REPOSITORIES": '["Acme/App"]',
        "PROMPTSHIP_HOME": str(tmp_path / "home"),
    }
    cmd = [sys.executable, "-m", "promptship.cli", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the receiver did not come up"
            time.sleep(0.2)
        body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"}
        signed = httpx.post(
            f"{url}/github/webhook", content=body, headers={**headers, "X-Hub-Signature-256": sign(b"cli-secret", body)}
        )
        unsigned = httpx.post(f"{url}/github/webhook", content=body, headers=headers)
        assert (signed.status_code, signed.json()["outcome"]) == (200, "pong")
        assert unsigned.status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output = proc.stdout.read() if proc.stdout else ""
    assert "cli-secret" not in output
