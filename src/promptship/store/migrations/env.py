"""Alembic environment of the store: uses the engine handed in by ``promptship.store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from promptship.store.migrate import metadata

config = context.config
engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata(),
        render_as_batch=engine.url.get_backend_name() == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
