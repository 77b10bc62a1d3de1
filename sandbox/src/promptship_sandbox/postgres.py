"""A throw-away PostgreSQL server for tests and benchmarks: Debian's PostgreSQL binaries, a fresh cluster under a
directory of ours, listening on 127.0.0.1 only, stopped by the PID this program started.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` system user.
The cluster trusts connections from 127.0.0.1 (it lives as long as one test session and holds test data only),
and runs with ``fsync=off``: a crash of the machine loses it, which a throw-away cluster may.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from promptship.errors import ConfigError
from promptship_sandbox.net import free_port

DATABASE = "promptship"
USER = "promptship"


@dataclass(frozen=True)
class PostgresServer:
    process: subprocess.Popen[bytes]
    port: int
    version: str

    def url(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; returns its URL."""
        _create_database(self.port, name)
        return self.url(name)


def _create_database(port: int, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"host=127.0.0.1 port={port} user={USER} dbname=postgres", autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def find_binaries() -> Path | None:
    """The bin directory of the newest installed Debian PostgreSQL, else one on PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def postgres_installed() -> tuple[bool, str]:
    if find_binaries() is None:
        return False, "no PostgreSQL server binaries (Debian: apt-get install postgresql; `make postgres`)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False, "running as root and there is no `postgres` user to own the cluster"
    return True, ""


def _as_owner() -> dict[str, object]:
    """Popen arguments that run the server binaries as ``postgres`` when we are root (the PID stays the binary's)."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


@contextmanager
def running_postgres(state: Path, *, start_timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """A fresh cluster with database ``promptship`` owned by role ``promptship``; its log under ``state``.

    The cluster's files live in a new directory of the system's temporary directory (as root, owned by the
    ``postgres`` user, which cannot reach a root-only directory such as pytest's), removed afterwards.
    """
    ok, why = postgres_installed()
    if not ok:
        raise ConfigError(why)
    bindir = find_binaries()
    assert bindir is not None
    state.mkdir(parents=True, exist_ok=True)
    cluster = Path(tempfile.mkdtemp(prefix="promptship-pg-"))
    data, sockets = cluster / "data", cluster / "sockets"
    sockets.mkdir()
    data.mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (cluster, data, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    try:
        yield from _serve(bindir, data, sockets, state, start_timeout_s)
    finally:
        shutil.rmtree(cluster, ignore_errors=True)


def _serve(bindir: Path, data: Path, sockets: Path, state: Path, start_timeout_s: float) -> Iterator[PostgresServer]:
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        cwd=data,
        **_as_owner(),  # type: ignore[arg-type]
    )
    if init.returncode != 0:
        raise ConfigError(f"initdb failed: {init.stderr[-1000:]}")
    port = free_port()
    log = (state / "postgres.log").open("wb")
    settings = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]  # fmt: skip
    # the postmaster itself (no pg_ctl or runuser in between), so the PID we hold is the server's
    process = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data), "-k", str(sockets), "-h", "127.0.0.1", "-p", str(port), *settings],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=data,
        **_as_owner(),  # type: ignore[arg-type]
    )
    try:
        version = _wait_ready(process, port, start_timeout_s, state / "postgres.log")
        _create_database(port, DATABASE)
        yield PostgresServer(process=process, port=port, version=version)
    finally:
        _stop(process)
        log.close()


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float, log: Path) -> str:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ConfigError(f"postgres exited during start: {log.read_text()[-1500:]}")
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user={USER} dbname=postgres", connect_timeout=2) as c:
                row = c.execute("SHOW server_version").fetchone()
                return str(row[0]) if row else "?"
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                _stop(process)
                raise ConfigError(f"postgres did not accept connections within {timeout_s:.0f} s") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: the postmaster ends its sessions), SIGKILL of its group after 15 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
