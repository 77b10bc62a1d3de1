"""Webhook receiver: acknowledgement latency and deliveries per second on loopback.

Baseline, measured in the same run: a bare ASGI app that answers 204 to anything, served the same way
(uvicorn in a thread, one keep-alive httpx client per sender). The receiver gets signed ``issues.labeled``
deliveries (each a new delivery id: size and signature checks, JSON parse, decision, one insert into a SQLite
store, then a no-op start after the answer) and signed ``check_suite`` deliveries (wake-ups).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from promptship.bench.stats import percentile, summary
from promptship.domain.webhooks import WebhookTrigger, sign
from promptship.servers.webhook import create_app, running_asgi
from promptship.settings import GitHubSettings, Settings
from promptship.store.webhooks import InProcessCIWakeups, WebhookDeliveries, webhook_engine

SECRET = b"bench-secret"
REPO = "Codertocat/Hello-World"
SERIAL = 300
PARALLEL_SENDERS = 8
PARALLEL_EACH = 100


class _NoopStarter:
    def __init__(self) -> None:
        self.count = 0

    def start(self, trigger: WebhookTrigger) -> str:
        self.count += 1
        return trigger.delivery_id


async def _bare_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _payloads() -> tuple[dict[str, Any], dict[str, Any]]:
    """issues.labeled and check_suite.completed: GitHub's examples when installed, else minimal shapes."""
    from promptship_sandbox import specs

    if specs.specs_available():
        labeled = specs.webhook_examples("issues", "labeled")[0]
        suite = specs.webhook_examples("check_suite", "completed")[0]
    else:
        user = {"login": "Codertocat", "type": "User"}
        labeled = {
            "action": "labeled",
            "issue": {"number": 1, "title": "t", "body": "b", "author_association": "OWNER", "user": user},
            "label": {"name": "bug"},
            "repository": {"full_name": REPO},
            "sender": user,
        }
        suite = {"action": "completed", "check_suite": {"head_sha": "a" * 40}, "repository": {"full_name": REPO}}
    labeled["label"]["name"] = "promptship"
    labeled["issue"]["title"] = "Add a /health endpoint"
    return labeled, suite


def _request(event: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
        "User-Agent": "GitHub-Hookshot/bench",
    }


def _serial(url: str, make: Callable[[], tuple[bytes, dict[str, str]]], n: int) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=10) as client:
        for i in range(n + 20):
            body, headers = make()
            t0 = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code >= 400:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")
            if i >= 20:  # the first ones warm up connections and caches
                latencies.append(elapsed)
    return latencies


def _throughput(url: str, make: Callable[[], tuple[bytes, dict[str, str]]]) -> float:
    barrier = threading.Barrier(PARALLEL_SENDERS + 1)
    errors: list[str] = []

    def sender() -> None:
        requests = [make() for _ in range(PARALLEL_EACH)]
        with httpx.Client(timeout=30) as client:
            client.post(url, content=requests[0][0], headers=make()[1])  # connect before the clock starts
            barrier.wait()
            for body, headers in requests:
                status = client.post(url, content=body, headers=headers).status_code
                if status >= 400:
                    errors.append(str(status))

    threads = [threading.Thread(target=sender) for _ in range(PARALLEL_SENDERS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries failed, e.g. {errors[0]}")
    return PARALLEL_SENDERS * PARALLEL_EACH / elapsed


def run() -> None:
    labeled, suite = _payloads()
    labeled_body = json.dumps(labeled).encode()
    suite_body = json.dumps(suite).encode()
    print(f"   payloads: issues.labeled {len(labeled_body)} B, check_suite.completed {len(suite_body)} B")

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            github=GitHubSettings(webhook_secret=SecretStr(SECRET.decode()), allowed_repositories=[REPO])
        )
        deliveries = WebhookDeliveries(webhook_engine(f"sqlite:///{Path(tmp) / 'bench.db'}"))
        starter = _NoopStarter()
        app = create_app(settings, starter, deliveries=deliveries, wakeups=InProcessCIWakeups())
        receiver = app.state.receiver

        results: dict[str, tuple[list[float], float]] = {}
        with running_asgi(_bare_app) as base:
            make = lambda: _request("issues", labeled_body)  # noqa: E731
            latencies = _serial(base + "/github/webhook", make, SERIAL)
            results["bare ASGI app (baseline)"] = (latencies, _throughput(base + "/github/webhook", make))
        with running_asgi(app) as base:
            url = base + "/github/webhook"
            for name, event, body in (
                ("receiver, issues.labeled → start", "issues", labeled_body),
                ("receiver, check_suite → wake-up", "check_suite", suite_body),
            ):
                make = lambda event=event, body=body: _request(event, body)  # noqa: E731
                latencies = _serial(url, make, SERIAL)
                receiver.wait_idle(60)
                results[name] = (latencies, _throughput(url, make))
                receiver.wait_idle(60)

        base_median = statistics.median(results["bare ASGI app (baseline)"][0])
        base_rate = results["bare ASGI app (baseline)"][1]
        for name, (latencies, rate) in results.items():
            print(f"   {name}")
            print(f"      ack latency (serial, keep-alive): {summary(latencies)}")
            print(
                f"      ×{statistics.median(latencies) / base_median:.2f} the baseline's median, "
                f"p99 {percentile(latencies, 99):.2f} ms"
            )
            print(
                f"      throughput ({PARALLEL_SENDERS} senders × {PARALLEL_EACH}): {rate:.0f} deliveries/s "
                f"({rate / base_rate:.2f} of the baseline)"
            )
        print(f"   runs started: {starter.count} (one per delivery id)")
