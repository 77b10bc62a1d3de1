"""The one promptship store on a real PostgreSQL server, shared by several components at once.

On the platform the worker, the flow-run pods, the gateway and every webhook receiver replica open their own
engine on the same database. Each test here gives each "component" its own engine (its own connection pool, as a
separate process would have), and the contended cases race threads through those engines — or real processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from promptship.errors import AttemptInProgress
from promptship.store import Store, make_engine
from promptship.store.ledger import CostLedger
from promptship.store.migrate import alembic_config
from promptship.store.webhooks import StoreCIWakeups, WebhookDeliveries

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def _race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < n in n threads released together; the results (or exceptions) by i."""
    start = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the outcome under test, kept
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def _in_another_process(code: str, url: str) -> subprocess.Popen[bytes]:
    """``code`` run by a new Python process with ``sys.argv[1] = url`` (a component of its own)."""
    path = f"{ROOT / 'src'}:{ROOT / 'sandbox' / 'src'}:{ROOT}"
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-c", code, url], env=env, stderr=subprocess.PIPE)


def _head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_current_head())


def test_the_store_migrates_an_empty_database_to_head_from_many_processes_at_once(postgres_url: str) -> None:
    """Pods start together and each runs the migrations: exactly one upgrades, the others find it done."""
    code = "import sys; from promptship.store import Store, make_engine as e; Store(e(sys.argv[1])).create_schema()"
    procs = [_in_another_process(code, postgres_url) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [_head()]
    tables = set(inspect(engine).get_table_names())
    assert {"steps", "runs", "attempts", "request_leases", "requests", "llm_calls", "webhook_deliveries"} <= tables
    Store(engine).create_schema()  # once more: nothing to do, nothing broken
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [_head()]
    engine.dispose()


def _stores(url: str, n: int) -> list[Store]:
    first = Store(make_engine(url))
    first.create_schema()
    return [first, *(Store(make_engine(url)) for _ in range(n - 1))]


def test_one_request_gets_one_flow_run_when_workers_on_separate_engines_race_for_it(postgres_url: str) -> None:
    stores = _stores(postgres_url, 8)
    runs = [str(uuid.uuid4()) for _ in stores]
    outcomes = _race(len(stores), lambda i: stores[i].begin_attempt("req-raced", flow_run_id=runs[i]))
    won = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, AttemptInProgress)]
    assert len(won) == 1 and len(refused) == len(stores) - 1, outcomes
    holder = runs[outcomes.index(won[0])]
    # every component sees the same attempt, bound to the winner's flow run
    assert {s.attempt_of_flow_run(holder).id for s in stores} == {won[0].id}  # type: ignore[union-attr]
    for s in stores:
        s.engine.dispose()


def test_the_run_budget_holds_when_gateway_replicas_reserve_at_once(postgres_url: str) -> None:
    _stores(postgres_url, 1)[0].engine.dispose()
    ledgers = [CostLedger(make_engine(postgres_url), run_default_usd=1.0) for _ in range(6)]
    ledgers[0].open_run("run-budget", budget_usd=1.0)
    reservations = _race(20, lambda i: ledgers[i % len(ledgers)].reserve("run-budget", "cloud", 0.1))
    assert not [r for r in reservations if isinstance(r, Exception)], reservations
    granted = [r for r in reservations if r.check.ok]
    assert len(granted) == 10  # 20 × $0.10 asked against $1.00: exactly ten fit, whoever asked
    assert all(r.id for r in granted) and len({r.id for r in granted}) == 10
    for ledger in ledgers:
        ledger.engine.dispose()


def test_two_webhook_receivers_start_each_delivery_once(postgres_url: str) -> None:
    """GitHub redelivers, and the two receiver replicas behind one Service may each get a copy."""
    engine = make_engine(postgres_url)
    Store(engine).create_schema()
    receivers = [WebhookDeliveries(make_engine(postgres_url)) for _ in range(2)]
    deliveries = [f"delivery-{uuid.uuid4()}" for _ in range(25)]

    def claim_all(i: int) -> list[str]:
        return [d for d in deliveries if receivers[i % 2].claim(d, "issues", "demo/chat-app")]

    claimed = _race(4, claim_all)  # two threads per receiver
    assert not [c for c in claimed if isinstance(c, Exception)], claimed
    winners = [d for per_thread in claimed for d in per_thread]
    assert sorted(winners) == sorted(deliveries)  # each delivery claimed exactly once, none lost
    engine.dispose()


def test_a_ci_wakeup_recorded_by_a_receiver_process_reaches_a_waiting_worker(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    Store(engine).create_schema()
    waiter = StoreCIWakeups(make_engine(postgres_url), interval_s=0.05)
    before = waiter.generation("demo/chat-app", "abc123")
    code = (
        "import sys; from promptship.store import make_engine; from promptship.store.webhooks import StoreCIWakeups;"
        "from promptship.domain.webhooks import CISignal;"
        "signal = CISignal(repository='Demo/Chat-App', sha='ABC123', event='check_run');"
        "StoreCIWakeups(make_engine(sys.argv[1])).notify(signal)"
    )
    notifier = _in_another_process(code, postgres_url)
    seen = waiter.wait("demo/chat-app", "abc123", after=before, timeout_s=60)
    assert notifier.wait(timeout=60) == 0, notifier.stderr.read().decode() if notifier.stderr else ""
    assert seen == before + 1
    engine.dispose()


@pytest.mark.flow
def test_a_dev_cycle_with_its_store_on_postgres_deploys_and_its_records_and_kpis_are_there(
    postgres_url: str, tmp_path: Path, prefect_harness: None
) -> None:
    from pydantic import SecretStr

    from flows.dev_cycle import dev_cycle
    from promptship.domain.request import DevRequest
    from promptship.settings import Settings
    from promptship.store.sealing import PromptCipher
    from promptship.wiring import installed
    from promptship_sandbox.fakes import fake_services

    # a shared store: its prompt key is given (every component has the same one)
    settings = Settings(home=tmp_path / "home", database_url=postgres_url, store_key=SecretStr(PromptCipher.new_key()))
    settings.health.url = "http://127.0.0.1:9/health"
    services = fake_services(settings)
    assert services.sink.engine.url.get_backend_name() == "postgresql"  # type: ignore[attr-defined]
    request = DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", auto_merge=True)
    with installed(services):
        report = dev_cycle(request)
    assert report.outcome == "deployed"
    # read back through another engine, as the KPI flow or `promptship kpis` in another process would
    other = Store(make_engine(postgres_url))
    stored = other.run(report.run_key)
    assert stored is not None and stored.outcome == "deployed" and stored.attempt_id == report.attempt_id
    assert {s.step for s in other.steps(report.run_key)} >= {"route", "open_pull_request", "merge", "check_health"}
    facts = other.run_facts()
    assert [f.outcome for f in facts if f.run_key == report.run_key] == ["deployed"]
    other.engine.dispose()
