"""A throw-away Prefect server: ``prefect server start`` on 127.0.0.1 with SQLite under its own PREFECT_HOME (or on
a PostgreSQL database), stopped by the PID this program started (used by the demo, the flow benchmark and the
deployment tests);
``deploy_project`` registers a checkout's ``prefect.yaml`` deployments on it and ``running_worker`` runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from promptship.errors import ConfigError
from promptship_sandbox.net import free_port

# Prefect's server keeps at most 5 + 10 PostgreSQL connections by default; a 50-run burst on PostgreSQL exhausted
# them ("QueuePool limit of size 5 overflow 10 reached", a 500 that Prefect's client does not retry: docs/BENCH.md
# "50 at once"). 20 + 30 stay well under the sandbox PostgreSQL's max_connections (200).
POSTGRES_POOL: dict[str, str] = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "30",
}


@dataclass
class PrefectServer:
    """A ``prefect server start`` process this program started."""

    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this server and its result storage."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def stop(self) -> None:
        """Stop the server: SIGTERM to the process group it leads (it was started in its own session)."""
        stop_process_group(self.process)


def live_descendants(pid: int) -> list[int]:
    """The live (not zombie) processes below ``pid``, from ``/proc``: what a worker still holds."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def is_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_process_group(process: subprocess.Popen[bytes], *, grace_s: float = 20) -> None:
    """SIGTERM to the process group ``process`` leads (started with ``start_new_session``), SIGKILL after
    ``grace_s``; nothing when it has ended."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def process_group(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in a session of its own (its output appended to ``log_path``) for the block's duration, then
    ``stop_process_group``: how every worker the sandbox and the benches start is run and stopped."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process)


def _template_db() -> Path:
    """A migrated database of this Prefect version, kept in the cache: a fresh SQLite file makes the server run
    every Alembic migration before it answers (measured: 38 s to healthy on a fresh file vs 12 s on a migrated
    one, on a loaded 2-core machine), so new servers start from a copy of it instead."""
    import prefect

    cache = Path(os.environ.get("PROMPTSHIP_CACHE") or Path.home() / ".cache" / "promptship")
    return cache / f"prefect-{prefect.__version__}-migrated.db"


def _copy_sqlite(source: Path, dest: Path) -> None:
    """A consistent copy of a SQLite database, even while a server writes to it (SQLite's backup API)."""
    import sqlite3

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with sqlite3.connect(source) as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)
    tmp.replace(dest)


def start_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    ui: bool = False,
    timeout_s: float = 90,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> PrefectServer:
    """Start ``prefect server start`` on 127.0.0.1 with SQLite under ``home`` (or the database at
    ``database_url``, e.g. ``postgresql+asyncpg://user@127.0.0.1:5432/prefect``); return once /api/health answers.
    ``env`` adds server settings (``PREFECT_SERVER_…``).

    A new SQLite database starts as a copy of the cached migrated one (made by the first server of this Prefect
    version), so the server does not spend its start-up on migrations; another database is migrated by the
    server as it starts."""
    home.mkdir(parents=True, exist_ok=True)
    db = home / "prefect.db"
    template = _template_db()
    fresh = database_url is None and not db.exists()
    if fresh and template.exists():
        _copy_sqlite(template, db)
    port = port or free_port()
    log_path = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{db}",
        **(POSTGRES_POOL if database_url and database_url.startswith("postgresql") else {}),
        # the UI's pages call this API: without it they name the default port 4200 ("Can't connect")
        "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
        **(env or {}),
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [_prefect_bin(), "server", "start", "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = PrefectServer(process=process, port=port, home=home, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"prefect server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                if fresh and not template.exists():
                    _copy_sqlite(db, template)  # migrated, nothing of this server's use in it yet
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise ConfigError(f"prefect server did not answer /api/health within {timeout_s:.0f} s; see {log_path}")


@contextmanager
def running_prefect_server(
    home: Path,
    *,
    ui: bool = False,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 90,
) -> Iterator[PrefectServer]:
    """``start_prefect_server`` for the block's duration; stopped by its PID."""
    server = start_prefect_server(home, ui=ui, database_url=database_url, env=env, timeout_s=timeout_s)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def using_prefect(server: PrefectServer) -> Iterator[None]:
    """Point this process's Prefect client and result storage at ``server``."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    previous = {k: os.environ.get(k) for k in server.env()}
    _drain_prefect_senders()
    os.environ.update(server.env())
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_HOME: server.home}):
            yield
            _drain_prefect_senders()
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _drain_prefect_senders() -> None:
    """Send what this process's Prefect event and log workers hold, and stop them. Prefect keeps ONE events worker
    per process whatever the API URL (``EventsWorker.instance()`` is keyed by client type only, and the client
    reads the URL once): a second server used by the same process would get none of its task runs' events — they
    went to the first server (the server builds task runs from those events). Stopped here, the next use starts
    workers that connect to the server in force."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=30, at_exit=False)


def _prefect_bin() -> str:
    found = Path(sys.executable).with_name("prefect")
    return str(found) if found.exists() else "prefect"


def deploy_project(server: PrefectServer, root: Path, *, pool: str = "local-process", timeout_s: float = 300) -> None:
    """Register every deployment of ``root``'s ``prefect.yaml`` on ``server``, as ``prefect deploy --all`` run in
    ``root`` does, after creating the process work pool ``pool`` they use (kept if it exists).

    Raises ConfigError, with the end of prefect's output, when a command fails.
    """
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PWD": str(root), "PREFECT_CLI_WRAP_LINES": "false"}
    for args in (["work-pool", "create", pool, "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        done = subprocess.run(
            [_prefect_bin(), *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        exists = args[0] == "work-pool" and "already exists" in done.stdout + done.stderr
        if done.returncode != 0 and not exists:
            tail = (done.stdout + done.stderr)[-2000:]
            raise ConfigError(f"`prefect {' '.join(args)}` in {root} failed ({done.returncode}): {tail}")


@contextmanager
def running_worker(
    server: PrefectServer,
    root: Path,
    log_path: Path,
    *,
    pool: str = "local-process",
    env: Mapping[str, str] | None = None,
    inherit: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """``promptship worker --pool POOL`` (Prefect's process worker with promptship's fix of its double crash report,
    docs/RELIABILITY.md finding 3) in ``root`` against ``server`` (its flow runs are subprocesses that
    inherit ``env``, on top of this process's environment unless ``inherit`` is off: then ``env`` is the whole
    environment besides the server's); stopped at the end by the process group it leads."""
    worker_env = {**(os.environ if inherit else {}), **server.env(), "PWD": str(root), **(env or {})}
    argv = [sys.executable, "-m", "promptship.cli", "worker", "--pool", pool]
    with process_group(argv, cwd=root, env=worker_env, log_path=log_path) as process:
        yield process
