"""``checkpoint_prefect_wal`` on SQLite files of its own (no Prefect server): a replaced value's old WAL frames
are gone from the ``-wal`` file once it has run; what it cannot do comes back as one sentence, never an exception
and never the database URL. (The run-level proof on Prefect's own server: ``tests/flows/test_sealed_prompts.py``.)"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

from promptship.adapters.prefect_db import checkpoint_prefect_wal


@contextmanager
def prefect_database(url: str) -> Iterator[None]:
    with temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: url}):
        yield


def _server_like(path: Path, value: str) -> sqlite3.Connection:
    """A WAL database holding ``value`` in a row that is then replaced, as a server's connection leaves it (open:
    its last close would checkpoint and delete the WAL by itself). Secure-delete on, as this SQLite build does."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("CREATE TABLE flow_run (id INTEGER PRIMARY KEY, parameters TEXT)")
    conn.execute("INSERT INTO flow_run VALUES (1, ?)", (f'{{"prompt": "use {value}"}}',))
    conn.execute("UPDATE flow_run SET parameters = ? WHERE id = 1", ('{"prompt": "use [REDACTED]"}',))
    return conn


def _copies(path: Path, value: str) -> int:
    return path.read_bytes().count(value.encode()) if path.exists() else 0


def test_the_old_frames_of_a_replaced_value_leave_the_wal(tmp_path: Path) -> None:
    database, value = tmp_path / "prefect.db", "ghp_" + secrets.token_hex(18)
    server = _server_like(database, value)
    wal = database.with_name("prefect.db-wal")
    assert _copies(wal, value) >= 1  # what a run started with the prompt itself left behind

    with prefect_database(f"sqlite+aiosqlite:///{database}"):
        assert checkpoint_prefect_wal() is None

    assert [_copies(p, value) for p in (database, wal, database.with_name("prefect.db-shm"))] == [0, 0, 0]
    assert server.execute("SELECT parameters FROM flow_run").fetchone() == ('{"prompt": "use [REDACTED]"}',)
    server.close()


def test_a_busy_database_is_tried_a_bounded_number_of_times_and_named(tmp_path: Path) -> None:
    database, value = tmp_path / "prefect.db", "ghp_" + secrets.token_hex(18)
    server = _server_like(database, value)
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM flow_run").fetchall()  # a read transaction pins the WAL
    server.execute("UPDATE flow_run SET parameters = '{}' WHERE id = 1")
    pauses: list[float] = []

    with prefect_database(f"sqlite+aiosqlite:///{database}"):
        not_done = checkpoint_prefect_wal(attempts=3, busy_timeout_s=0.01, pause_s=0.0, sleep=pauses.append)

    assert not_done is not None and "not checkpointed after 3 tries" in not_done and str(database) in not_done
    assert _copies(database.with_name("prefect.db-wal"), value) >= 1  # said, not pretended
    reader.execute("COMMIT")
    reader.close()
    server.close()


def test_what_it_cannot_reach_is_one_sentence_without_the_url(tmp_path: Path) -> None:
    password = secrets.token_hex(8)
    with prefect_database(f"postgresql+asyncpg://prefect:{password}@127.0.0.1:5432/prefect"):
        not_done = checkpoint_prefect_wal()
    assert not_done is not None and "postgresql" in not_done and password not in not_done

    missing = tmp_path / "elsewhere" / "prefect.db"
    with prefect_database(f"sqlite+aiosqlite:///{missing}"):
        not_done = checkpoint_prefect_wal()
    assert not_done is not None and "not on this machine" in not_done
    assert not missing.exists()  # never creates a database that was not there
