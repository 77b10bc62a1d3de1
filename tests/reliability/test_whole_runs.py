"""Part 3b's rules (``promptship_sandbox.reliability.wholeruns``) and the durable fakes' real boundaries.

The whole runs themselves run in ``promptship reliability`` (one in ``--quick``: test_campaign_quick.py); here,
without a server: which results pass, and that ``boundaries.json`` turns a fake into the real adapter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promptship.settings import Settings
from promptship_sandbox.durable_fakes import BOUNDARIES_FILE, durable_services, with_real_boundaries, write_boundaries
from promptship_sandbox.reliability.wholeruns import OUTAGE, WholeCase, WholeResult

BURST = WholeCase("forge-rest", "http_502", 2, "/api/v3/repos/")
OUTAGE_CASE = WholeCase("llm", "connect_refused", OUTAGE, expect="failed")
LLM_ERROR = "after compile_check: LLMError: codellama: APIConnectionError (after 20 attempts)"


@pytest.mark.parametrize(
    ("result", "passed", "lost"),
    [
        (WholeResult(BURST, True, "deployed", "deployed", requests=24, limit=88), True, False),
        # a fault that never fired proves nothing
        (WholeResult(BURST, False, "deployed", "deployed", requests=22, limit=88), False, False),
        # a wrong verdict under a burst the retries should absorb; and a run that never ended
        (WholeResult(BURST, True, "stopped", "deployed", requests=24, limit=88), False, True),
        (WholeResult(BURST, True, None, "deployed", note="the run did not end (flow run RUNNING)"), False, True),
        # more requests than CONTRACTS.md allows; a second PR
        (WholeResult(BURST, True, "deployed", "deployed", requests=89, limit=88), False, False),
        (
            WholeResult(BURST, True, "deployed", "deployed", differences=["+prs 2 vs 1"], requests=24, limit=88),
            False,
            False,
        ),
        # an outage: failed naming the service, resumed to the unfaulted verdict
        (
            WholeResult(OUTAGE_CASE, True, "failed", "deployed", "deployed", LLM_ERROR, requests=21, limit=21),
            True,
            False,
        ),
        # … failed without naming it; or not resumed to the unfaulted verdict (lost)
        (
            WholeResult(OUTAGE_CASE, True, "failed", "deployed", "deployed", "after route: boom", requests=1, limit=21),
            False,
            False,
        ),
        (WholeResult(OUTAGE_CASE, True, "failed", "deployed", "failed", LLM_ERROR, requests=1, limit=21), False, True),
        # an outage that "passed" through: the fault did not reach the run
        (WholeResult(OUTAGE_CASE, True, "deployed", "deployed", requests=1, limit=21), False, False),
    ],
)
def test_a_whole_run_passes_only_fired_with_its_verdict_its_side_effects_and_within_the_limit(
    result: WholeResult, passed: bool, lost: bool
) -> None:
    assert (result.passed, result.lost) == (passed, lost)


def test_an_unknown_boundary_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown boundaries \\['kube'\\]"):
        write_boundaries(tmp_path, {"kube": {"url": "http://127.0.0.1:1"}})
    assert not (tmp_path / BOUNDARIES_FILE).exists()


class _Up(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        status = 200 if self.path == "/app/up" else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Up)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_health_boundary_probes_the_named_url_over_http(tmp_path: Path, app: str) -> None:
    write_boundaries(tmp_path, {"health": {"url": f"{app}/app/up"}})
    assert (tmp_path / BOUNDARIES_FILE).stat().st_mode & 0o077 == 0  # it may hold the forge's token
    import json

    ports = with_real_boundaries(
        durable_services(tmp_path, Settings()), json.loads((tmp_path / BOUNDARIES_FILE).read_text())
    )
    url = f"{app}/app/up"
    assert ports.limits().default_health_url == url  # the run's health gate probes it (ctx.health_url)
    assert ports.health.check(url).verdict == "healthy"
    assert ports.health.check(f"{app}/app/down").verdict == "unhealthy"
