"""The cost ledger: budgets reserved atomically before calls, spend kept across restarts, aggregates."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from promptship.domain.results import Usage
from promptship.store import make_engine
from promptship.store.ledger import CostLedger

pytestmark = pytest.mark.gateway


def _ledger(url: str, **kw) -> CostLedger:
    ledger = CostLedger(make_engine(url), **kw)
    ledger.create_schema()
    return ledger


def test_concurrent_runs_cannot_overspend_the_daily_cloud_budget(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # Two processes' worth of ledgers: separate engines on the same file, as two workers would have.
    ledgers = [_ledger(url, cloud_daily_usd=1.0, run_default_usd=100.0) for _ in range(4)]
    start = threading.Barrier(4)
    granted: list[list[str]] = [[] for _ in range(4)]

    def run(i: int) -> None:
        start.wait()
        for _ in range(20):
            r = ledgers[i].reserve(f"run-{i}", "cloud", 0.1)
            if r.check.ok:
                assert r.id is not None
                granted[i].append(r.id)
                ledgers[i].settle(
                    r, run_key=f"run-{i}", step="generate_code", model="gpt-4o", mode="cloud", usage=Usage(cost_usd=0.1)
                )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(len(g) for g in granted) == 10
    assert ledgers[0].day_spend_usd() == pytest.approx(1.0)
    refused = ledgers[1].reserve("run-1", "cloud", 0.1)
    assert not refused.check.ok and refused.check.scope == "day"


def test_open_reservations_count_and_released_ones_do_not(tmp_path) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}", cloud_daily_usd=10.0)
    ledger.open_run("r1", budget_usd=1.0, repository="demo/chat-app")
    first = ledger.reserve("r1", "cloud", 0.7)
    assert first.check.ok
    second = ledger.reserve("r1", "cloud", 0.7)
    assert not second.check.ok and second.check.scope == "run"
    ledger.release(first)
    assert ledger.reserve("r1", "local", 0.7).check.ok


def test_a_restart_keeps_the_days_spend_and_aggregates(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    noon = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # already the 23rd in Paris
    ledger = _ledger(url, cloud_daily_usd=1.0, timezone="Europe/Paris", clock=lambda: noon)
    ledger.open_run("r1", budget_usd=5.0, repository="demo/chat-app")
    for step, cost in (("generate_code", 0.4), ("repair#1", 0.3)):
        r = ledger.reserve("r1", "cloud", cost)
        ledger.settle(r, run_key="r1", step=step, model="gpt-4o", mode="cloud", usage=Usage(cost_usd=cost))
    ledger.settle(None, run_key="r1", step="route", model="mistral", mode="local", usage=Usage(prompt_tokens=9))
    ledger.engine.dispose()

    again = _ledger(url, cloud_daily_usd=1.0, timezone="Europe/Paris", clock=lambda: noon)
    assert again.day_spend_usd() == pytest.approx(0.7)
    assert again.totals("day") == {"2026-11-23": pytest.approx(0.7)}
    assert again.totals("step", run_key="r1") == {
        "generate_code": pytest.approx(0.4),
        "repair#1": pytest.approx(0.3),
        "route": 0.0,
    }
    assert again.totals("repository") == {"demo/chat-app": pytest.approx(0.7)}
    assert again.run_cost_usd("r1") == pytest.approx(0.7)
    refused = again.reserve("r2", "cloud", 0.31)
    assert not refused.check.ok and refused.check.scope == "day"
    assert again.reserve("r2", "cloud", 0.3).check.ok


def test_missing_cloud_cost_is_flagged(tmp_path) -> None:
    ledger = _ledger(f"sqlite:///{tmp_path / 'l.db'}")
    usage = Usage(prompt_tokens=100, completion_tokens=10, cost_usd=0.00035, cost_missing=True)
    ledger.settle(None, run_key="r", step="s", model="gpt-4o", mode="cloud", usage=usage)
    assert ledger.missing_cost_calls("r") == 1
    assert ledger.run_usage("r").cost_missing
    assert ledger.run_cost_usd("r") > 0


def test_repository_totals_fall_back_to_the_runs_report(tmp_path) -> None:
    from promptship.domain.report import RunReport
    from promptship.store import Store

    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = _ledger(url)
    # the ledger's runs are attempts: the agent's calls are charged to attempt 1 of request "r-agent"
    ledger.settle(None, run_key="r-agent-a1", step="agent", model="gpt-4o", mode="cloud", usage=Usage(cost_usd=0.25))
    ledger.settle(None, run_key="r-orphan", step="agent", model="gpt-4o", mode="cloud", usage=Usage(cost_usd=0.5))
    moment = datetime(2026, 11, 22, tzinfo=UTC)
    Store(ledger.engine).record_run(
        RunReport(
            run_key="r-agent",
            attempt_id="r-agent-a1",
            repository="demo/chat-app",
            prompt_redacted="add GET /version",
            requester="me",
            outcome="deployed",
            started_at=moment,
            ended_at=moment,
            steps=(),
        )
    )
    assert ledger.totals("repository") == {"demo/chat-app": 0.25, "(none)": 0.5}
