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
        "import sys; from promptship.store import Store, make_engine; "
        "Store(make_engine(sys.argv[1])).create_schema()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = Store(make_engine(f"sqlite:///{db}"))
    store.create_schema()
    assert pending_differences(store.engine) == []
