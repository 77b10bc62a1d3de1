"""The store's schema comes from Alembic migrations that match the models, and upgrades are idempotent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from promptship.store import Store, make_engine
from promptship.store.migrate import pending_differences, upgrade


def test_migrations_create_every_table_the_models_declare(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    assert pending_differences(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert {"steps", "runs", "llm_calls", "webhook_deliveries", "alembic_version"} <= tables


def test_upgrading_twice_and_concurrently_is_harmless(tmp_path: Path):
    db = tmp_path / "b.db"
    code = (
        "import sys; from promptship.store import Store, make_engine; Store(make_engine(sys.argv[1])).create_schema()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = Store(make_engine(f"sqlite:///{db}"))
    store.create_schema()
    assert pending_differences(store.engine) == []


def test_rows_of_a_store_made_before_attempts_read_as_attempt_1(tmp_path: Path):
    """0002: step and run rows keyed by run key become attempt 1; the ledger's runs follow."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    t = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    key = "0123456789abcdef"
    with engine.begin() as conn:
        for step, verdict, detail in [
            ("generate_code", "finished", '{"changed_files": 2}'),
            ("wait_for_ci#2", "passed", "{}"),
            ("rollback", "restored", '{"time_to_restore_s": 4.5}'),
            ("check_health:after_rollback", "healthy", "{}"),
        ]:
            conn.execute(
                text("INSERT INTO steps VALUES (:k, :s, :t, :t, :v, NULL, NULL, NULL, 0, 0, 0.5, 0, NULL, :d)"),
                {"k": key, "s": step, "t": t, "v": verdict, "d": detail},
            )
        report = json.dumps(
            {
                "run_key": key,
                "repository": "demo/chat-app",
                "prompt_redacted": "p",
                "requester": "r",
                "outcome": "rolled_back",
                "started_at": "2026-11-20T09:00:00Z",
                "ended_at": "2026-11-20T09:00:00Z",
                "steps": [],
            }
        )
        conn.execute(
            text(
                "INSERT INTO runs VALUES (:k, 'demo/chat-app', 'r', 'p', 'rolled_back', :t, :t, NULL, NULL, NULL, "
                "2.0, NULL, :rep)"
            ),
            {"k": key, "t": t, "rep": report},
        )
        conn.execute(text("INSERT INTO llm_runs VALUES (:k, 'demo/chat-app', 2.0)"), {"k": key})

    store = Store(engine)
    store.create_schema()
    assert pending_differences(engine) == []
    steps = {s.step: s for s in store.steps(key)}
    assert {s.attempt_id for s in steps.values()} == {f"{key}-a1"}
    assert (steps["wait_for_ci#2"].name, steps["wait_for_ci#2"].round) == ("wait_for_ci", 2)
    assert steps["generate_code"].facts.files_changed == 2
    assert steps["rollback"].facts.time_to_restore_s == 4.5
    assert steps["check_health:after_rollback"].facts.after_rollback is True
    (attempt,) = store.attempts(key)
    assert (attempt.id, attempt.number, attempt.outcome, attempt.finished) == (f"{key}-a1", 1, "rolled_back", True)
    (facts,) = store.run_facts()
    assert facts.rolled_back and facts.time_to_restore_s == 4.5
    with engine.connect() as conn:
        assert conn.execute(text("SELECT run_key FROM llm_runs")).scalar() == f"{key}-a1"


def test_a_store_at_head_opens_without_the_migration_lock_one_behind_waits_for_it(tmp_path: Path):
    """Every flow-run process opens the store: an up-to-date one must not queue behind the upgrade lock (a burst
    of runs paid ~1 s each, one after another, for nothing); a store behind head still upgrades under the lock."""
    import fcntl
    import threading

    from promptship.store.migrate import at_head

    current = make_engine(f"sqlite:///{tmp_path / 'current.db'}")
    upgrade(current)
    behind = make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    upgrade(behind, "0008")
    assert at_head(current) and not at_head(behind)

    locks = [open(tmp_path / f"{name}.migrate.lock", "w") for name in ("current", "behind")]  # noqa: SIM115
    for fh in locks:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another process is migrating both stores
    try:
        done = {name: threading.Event() for name in ("current", "behind")}
        for name, engine in (("current", current), ("behind", behind)):
            threading.Thread(target=lambda e=engine, n=name: (upgrade(e), done[n].set()), daemon=True).start()
        assert done["current"].wait(30)
        assert not done["behind"].wait(1.0)  # held by the lock, not upgraded around it
        assert not at_head(behind)
    finally:
        for fh in locks:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
    assert done["behind"].wait(60)
    assert at_head(behind) and pending_differences(behind) == []
