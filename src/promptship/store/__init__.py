"""The one local store (SQLAlchemy): step records, run reports, the LLM cost ledger and KPI inputs.

SQLite under ``PROMPTSHIP_HOME`` by default, any SQLAlchemy URL (Postgres) in production.
"""

from promptship.store.db import Store, make_engine

__all__ = ["Store", "make_engine"]
