"""Schema migrations of the one store (Alembic). Every component's ``create_schema`` runs ``upgrade``.

``python -m promptship.store.migrate [revision]`` upgrades the configured store (default: head).
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def metadata():  # type: ignore[no-untyped-def]
    """The metadata of every table of the store (importing each module that defines tables)."""
    from promptship.store import ledger, tables, webhooks  # noqa: F401

    return tables.Base.metadata


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


# Any fixed 64-bit number shared by every promptship process: the key of PostgreSQL's advisory lock on upgrades.
_PG_UPGRADE_LOCK = 0x70726F6D7074  # "prompt"


@contextmanager
def _lock(engine: Engine) -> Iterator[None]:
    """Serialize concurrent upgrades of one store: several processes start at once (the demo's worker and
    servers; on the platform every pod runs the migrations at start). SQLite: a lock file beside the database;
    PostgreSQL: a session-level advisory lock held on a connection of its own."""
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_UPGRADE_LOCK})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_UPGRADE_LOCK})")
        return
    database = engine.url.database if backend == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_suffix(".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def at_head(engine: Engine) -> bool:
    """Whether the store's schema is at the newest migration (one query and a look at the migration files)."""
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store's schema to ``revision``.

    Every process of the platform calls this as it opens the store (each flow-run process, each pod): a store
    already at head returns without the lock and without Alembic's migration environment. Measured (docs/BENCH.md
    "Flow runs as processes"): the full upgrade of an up-to-date store costs ~1 s of a new process under load, and
    under the lock that cost was paid one process after another when a burst of runs started at once."""
    if revision == "head" and at_head(engine):
        return
    with _lock(engine):
        command.upgrade(alembic_config(engine), revision)


def pending_differences(engine: Engine) -> list[object]:
    """What differs between the migrated database and the models (empty when migrations are complete)."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata()))


if __name__ == "__main__":
    from promptship.settings import Settings
    from promptship.store.db import make_engine

    upgrade(make_engine(Settings().store_url()), sys.argv[1] if len(sys.argv) > 1 else "head")
