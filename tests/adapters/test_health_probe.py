"""HttpHealthProbe against a real HTTP server on 127.0.0.1, and the Kubernetes builders of wiring.py."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promptship.adapters.health import HttpHealthProbe
from promptship.errors import ConfigError
from promptship.settings import Settings
from promptship.wiring import build_cluster, build_health_probe, build_kube_api_client


class _Scripted(http.server.ThreadingHTTPServer):
    """Answers GET with the next status of ``script`` (the last one repeats)."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.hits = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Scripted  # type: ignore[assignment]

    def do_GET(self) -> None:
        s = self.server
        code = s.script[min(s.hits, len(s.script) - 1)]
        s.hits += 1
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    servers: list[_Scripted] = []

    def start(script: list[int]) -> tuple[str, _Scripted]:
        s = _Scripted(script)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return f"http://127.0.0.1:{s.server_address[1]}/health", s

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _probe(http: httpx.Client, **kw: object) -> HttpHealthProbe:
    return HttpHealthProbe(http, interval_s=0, sleep=lambda _s: None, **kw)  # type: ignore[arg-type]


def test_three_successes_make_it_healthy(serve) -> None:
    url, server = serve([200])
    with httpx.Client() as http:
        result = _probe(http, consecutive=3, retries=10).check(url)
    assert result.verdict == "healthy" and result.attempts == 3 and server.hits == 3
    assert result.latency_ms_p50 is not None


def test_one_flaky_probe_only_resets_the_streak(serve) -> None:
    url, _ = serve([200, 503, 200])
    with httpx.Client() as http:
        result = _probe(http, consecutive=3, retries=10).check(url)
    assert result.verdict == "healthy" and result.attempts == 5
    assert result.detail == "1 of 5 probes failed (HTTP 503)"


def test_a_down_service_is_unhealthy_once_the_gate_cannot_pass(serve) -> None:
    url, server = serve([503])
    with httpx.Client() as http:
        result = _probe(http, consecutive=3, retries=6).check(url)
    assert result.verdict == "unhealthy" and server.hits == 4  # after 4 failures 3 in a row cannot fit in 6
    assert "HTTP 503" in result.detail


def test_nothing_listening_is_unhealthy(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with httpx.Client() as http:
        result = _probe(http, consecutive=1, retries=2, timeout_s=1).check(f"http://127.0.0.1:{port}/health")
    assert result.verdict == "unhealthy" and "ConnectError" in result.detail


def test_latency_bound_counts_slow_answers_as_failures(serve) -> None:
    url, _ = serve([200])
    ticks = iter(range(0, 10_000, 1))  # each clock() call is 1 s later: every answer takes 1000 ms
    with httpx.Client() as http:
        probe = HttpHealthProbe(
            http, consecutive=2, retries=3, max_latency_ms=500, interval_s=0, sleep=lambda _s: None,
            clock=lambda: float(next(ticks)),
        )  # fmt: skip
        result = probe.check(url)
    assert result.verdict == "unhealthy" and "slower than 500 ms" in result.detail


def test_builders_take_their_bounds_from_settings(tmp_path: Path) -> None:
    settings = Settings(health={"consecutive": 5, "retries": 7}, kube={"kubeconfig": tmp_path / "missing"})
    with httpx.Client() as http:
        probe = build_health_probe(settings, http=http)
        assert (probe.gate.consecutive, probe.gate.retries) == (5, 7)
    with pytest.raises(ConfigError, match="PROMPTSHIP_KUBE__KUBECONFIG"):
        build_kube_api_client(settings)
    assert build_cluster(settings, api=object()).lease_wait_s == settings.kube.lease_wait_s
