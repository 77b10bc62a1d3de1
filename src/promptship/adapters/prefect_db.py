"""Prefect's own database, when it is a SQLite file on this machine: drop the old WAL frames of a replaced value.

A run started with the prompt itself (the UI form, an in-process call) has its parameters written by Prefect's
server before promptship's code runs; the run then replaces them with the sealed form
(``tasks.context.keep_prompt_out_of_prefect``). The SQLite build here secure-deletes, so ``prefect.db`` keeps no
copy, but the WAL frames that wrote the first version stay in ``prefect.db-wal`` until a checkpoint resets the
WAL and later writes overwrite them (measured: 3 copies of a planted token while the server runs). Prefect's
connect pragmas cannot be extended, so ``checkpoint_prefect_wal`` asks for ``PRAGMA wal_checkpoint(TRUNCATE)``
from its own connection: every frame is copied into the database (which secure-deletes the old row's bytes) and
the ``-wal`` file is cut to zero bytes.

Never a reason to fail a run: every case it cannot handle — PostgreSQL, a server whose file is not on this
machine, a database busy past the bounded retries, an SQLite error — comes back as one sentence naming what was
not done (the caller logs it). The sentence never carries the connection URL (a PostgreSQL URL may hold a
password).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path


def prefect_sqlite_path() -> tuple[Path | None, str]:
    """The file of Prefect's server database as this process's Prefect settings name it, or (None, why not)."""
    from prefect.settings import get_current_settings
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    secret = get_current_settings().server.database.connection_url
    if secret is None:
        return None, "Prefect's server database URL is not set in this process"
    try:
        url = make_url(secret.get_secret_value())
    except ArgumentError:
        return None, "Prefect's server database URL is not a database URL"
    backend = url.get_backend_name()
    if backend != "sqlite":
        return None, f"Prefect's server database is {backend}, not a SQLite file (see docs/SECURITY.md)"
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        return None, "Prefect's server database is not a SQLite file path"
    path = Path(url.database).expanduser().resolve()
    if not path.is_file():
        return None, f"Prefect's server database {path} is not on this machine"
    return path, ""


def checkpoint_prefect_wal(
    *,
    attempts: int = 4,
    busy_timeout_s: float = 0.25,
    pause_s: float = 0.1,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Checkpoint Prefect's SQLite WAL and truncate it (``PRAGMA wal_checkpoint(TRUNCATE)``).

    None when the WAL was reset (or the database is not in WAL mode: nothing to drop); else one sentence saying
    what was not done and why. A busy database is tried ``attempts`` times, each waiting at most
    ``busy_timeout_s`` for the server's readers and writers, with ``pause_s`` between — bounded in total by
    ``attempts * (busy_timeout_s + pause_s)`` (1.4 s by default).
    """
    path, why = prefect_sqlite_path()
    if path is None:
        return f"old WAL frames not checkpointed: {why}"
    last = ""
    for attempt in range(attempts):
        if attempt:
            sleep(pause_s)
        try:
            # mode=rw: never create a database that is not there; autocommit: the pragma runs outside a transaction
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            return f"old WAL frames of {path} not checkpointed: cannot open it ({type(exc).__name__}: {exc})"
        try:
            busy, log_frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:  # "database is locked" past the busy timeout
            last = f"{type(exc).__name__}: {exc}"
            continue
        except sqlite3.Error as exc:
            return f"old WAL frames of {path} not checkpointed: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if not busy:
            return None if log_frames in (0, -1) else f"WAL of {path} checkpointed but not truncated"
        last = "busy (a reader or writer of Prefect's server held it)"
    return f"old WAL frames of {path} not checkpointed after {attempts} tries: {last}"
