"""Many runs at once, for each database: SQLite (Prefect's server and the store on SQLite files) and PostgreSQL
(Prefect's server and the store on a throw-away PostgreSQL 15, ``promptship_sandbox.postgres``).

On each, on one temporary Prefect server:

- **flow-run processes** (the figure that counts: what users run): N dev-cycle runs with the cross-process
  instant fakes, then N runs of a bare Prefect chain of the same length (``promptship/bench/chain.py``), each
  through its deployment and one process worker (``promptship.bench.processes``) — first really one after another
  (each submitted once the previous one ended), then all at once. ``R = concurrent wall / sequential wall``; the
  median phases of a run (worker claim, flow-run process start-up, flow body) say where the time went;
- **threads of one process**: the same N dev_cycle and bare-chain runs in this process, one after another and as
  N threads at once;
- a burst of ``PROMPTSHIP_BENCH_FLOW_BURST`` (50) dev-cycle runs at once through the worker, with every error;
- the suspend figures (``promptship.bench.suspend``) on the same server and store.

``PROMPTSHIP_BENCH_FLOW_RUNS`` (10) sets N, ``PROMPTSHIP_BENCH_FLOW_DATABASES`` (``sqlite,postgresql``) the
databases, ``PROMPTSHIP_BENCH_SUSPEND_RUNS`` (10; 0 skips) the suspend runs, ``PROMPTSHIP_BENCH_FLOW_ONLY`` (all:
``processes,threads,burst,suspend``) which parts run — ``PROMPTSHIP_BENCH_FLOW_ONLY=burst`` runs the burst alone.
The load average (1 min) is printed beside each figure: the machine is shared, so compare ratios taken in one run.
"""

from __future__ import annotations

import contextvars
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS = int(os.environ.get("PROMPTSHIP_BENCH_FLOW_RUNS", "10"))
BURST = int(os.environ.get("PROMPTSHIP_BENCH_FLOW_BURST", "50"))
DATABASES = [d.strip() for d in os.environ.get("PROMPTSHIP_BENCH_FLOW_DATABASES", "sqlite,postgresql").split(",")]
SUSPEND_RUNS = int(os.environ.get("PROMPTSHIP_BENCH_SUSPEND_RUNS", "10"))
PARTS = ("processes", "threads", "burst", "suspend")


def _parts(value: str | None) -> frozenset[str]:
    """The parts ``PROMPTSHIP_BENCH_FLOW_ONLY`` names (all when unset or empty); an unknown name is an error."""
    chosen = frozenset(p.strip() for p in (value or "").split(",") if p.strip()) or frozenset(PARTS)
    unknown = sorted(chosen - set(PARTS))
    if unknown:
        raise ValueError(f"PROMPTSHIP_BENCH_FLOW_ONLY: unknown part(s) {unknown} (choose from {', '.join(PARTS)})")
    return chosen


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


@dataclass(frozen=True)
class Databases:
    """Where one database's measurements keep Prefect's server and promptship's store."""

    name: str
    prefect_url: str | None  # None: SQLite under the server's home
    store_url: str | None  # None: SQLite under the fakes' directory
    store_key: str | None


def run() -> None:
    only = _parts(os.environ.get("PROMPTSHIP_BENCH_FLOW_ONLY"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # 100+ runs: their INFO lines drown the figures
    for name in DATABASES:
        with tempfile.TemporaryDirectory(prefix=f"promptship-bench-flow-{name}-") as tmp, ExitStack() as stack:
            databases = stack.enter_context(_databases(name, Path(tmp)))
            if databases is None:
                continue
            _on(databases, Path(tmp), only)


@contextmanager
def _databases(name: str, tmp: Path) -> Iterator[Databases | None]:
    if name == "sqlite":
        yield Databases("sqlite", None, None, None)
        return
    if name != "postgresql":
        raise ValueError(f"PROMPTSHIP_BENCH_FLOW_DATABASES: unknown database {name!r} (sqlite, postgresql)")
    from cryptography.fernet import Fernet

    from promptship_sandbox.postgres import postgres_installed, running_postgres

    ok, why = postgres_installed()
    if not ok:
        print(f"   postgresql: skipped ({why})")
        yield None
        return
    with running_postgres(tmp / "postgres") as pg:
        store_url = pg.create_database("store")
        prefect_url = pg.create_database("prefect").replace("postgresql+psycopg://", "postgresql+asyncpg://")
        print(f"   postgresql: PostgreSQL {pg.version} on 127.0.0.1:{pg.port} (Prefect's database and the store)")
        yield Databases("postgresql", prefect_url, store_url, Fernet.generate_key().decode())


def _on(db: Databases, tmp: Path, only: frozenset[str]) -> None:
    from promptship.bench import suspend
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

    t0 = time.perf_counter()
    with (
        running_prefect_server(tmp / "prefect", database_url=db.prefect_url, timeout_s=300) as server,
        using_prefect(server),
    ):
        print(f"   {db.name}: Prefect server healthy after {time.perf_counter() - t0:.1f} s ({_load()})")
        if only & {"processes", "burst"}:
            _processes(db, tmp / "processes", server.env(), only)
        if "threads" in only:
            _threads(db, tmp / "threads")
        if SUSPEND_RUNS > 0 and "suspend" in only:
            suspend._measure(tmp / "suspend", server.env(), database_url=db.store_url, store_key=db.store_key)


def _requests(n: int) -> list[dict[str, Any]]:
    from promptship.domain.request import DevRequest

    requests = [DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex})", auto_merge=True) for _ in range(n)]
    return [{"request": r.model_dump(mode="json")} for r in requests]


def _processes(db: Databases, tmp: Path, server_env: dict[str, str], only: frozenset[str]) -> None:
    from promptship.bench.processes import BARE_CHAIN, DEV_CYCLE, process_platform

    with process_platform(tmp, server_env, database_url=db.store_url, store_key=db.store_key) as platform:
        # one run of each first: the first flow-run process compiles and caches what the others then read
        for warm in (platform.run_batch(DEV_CYCLE, _requests(1), mode="sequential"),
                     platform.run_batch(BARE_CHAIN, [{}], mode="sequential")):  # fmt: skip
            if warm.errors:
                raise RuntimeError(f"warm-up run failed: {warm.errors[0]}")
        if "processes" in only:
            _ratios(db, platform)
        if "burst" in only:
            _burst(db, platform)


def _ratios(db: Databases, platform: Any) -> None:
    from promptship.bench.processes import BARE_CHAIN, DEV_CYCLE

    ratios: dict[str, float] = {}
    for label, deployment, params in (
        ("dev_cycle", DEV_CYCLE, _requests),
        ("bare chain", BARE_CHAIN, lambda n: [{} for _ in range(n)]),
    ):
        seq = platform.run_batch(deployment, params(RUNS), mode="sequential")
        load_seq = _load()
        con = platform.run_batch(deployment, params(RUNS), mode="concurrent")
        ratios[label] = con.wall_s / seq.wall_s
        print(
            f"   {db.name}: {label} x{RUNS}: sequential wall {seq.wall_s:.1f} s, concurrent wall "
            f"{con.wall_s:.1f} s  (R = {ratios[label]:.2f}; flow-run processes through a process worker; "
            f"{load_seq} / {_load()}; errors {len(seq.errors) + len(con.errors)})"
        )
        for batch in (seq, con):
            print(f"      {batch.mode:>10} median phases: {_phases(batch)}")
            for e in sorted(set(batch.errors))[:5]:
                print(f"      error: {e}")
    print(
        f"   {db.name}: R dev_cycle / R bare chain = {ratios['dev_cycle'] / ratios['bare chain']:.2f} "
        f"(goal: R dev_cycle <= 0.5, or <= 1.1x bare Prefect's R)"
    )


def _burst(db: Databases, platform: Any) -> None:
    from promptship.bench.processes import DEV_CYCLE, Batch
    from promptship_sandbox.durable_fakes import JsonState

    before = JsonState(platform.fakes).read().get("pr_creations", 0)
    burst: Batch = platform.run_batch(DEV_CYCLE, _requests(BURST), mode="concurrent", timeout_s=1800)
    prs = JsonState(platform.fakes).read().get("pr_creations", 0) - before
    completed = sum(r.state == "Completed" for r in burst.runs)
    print(
        f"   {db.name}: {BURST} concurrent: errors {len(burst.errors)}  (wall {burst.wall_s:.1f} s, "
        f"{completed} completed, {prs} PRs opened; {_load()}; phases {_phases(burst)})"
    )
    for e in sorted(set(burst.errors))[:5]:
        print(f"      error: {e}")


def _phases(batch: Any) -> str:
    m = batch.phase_medians()
    return f"claim {m['claim']:.2f} s, process start {m['start']:.2f} s, flow {m['body']:.2f} s"


def _threads(db: Databases, tmp: Path) -> None:
    from pydantic import SecretStr

    from flows.dev_cycle import dev_cycle
    from promptship.bench.chain import bare_chain
    from promptship.domain.request import DevRequest
    from promptship.settings import Settings
    from promptship.wiring import installed
    from promptship_sandbox.fakes import fake_services

    settings = Settings(
        home=tmp / "home",
        database_url=db.store_url,
        store_key=SecretStr(db.store_key) if db.store_key else None,
    )
    settings.health.url = "http://127.0.0.1:9/health"

    def one_dev_cycle() -> str:
        return dev_cycle(DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex})", auto_merge=True)).outcome

    def one_chain() -> str:
        bare_chain()
        return "completed"

    with installed(fake_services(settings)):
        one_dev_cycle()  # warm-up
        one_chain()
        for label, one in (("dev_cycle", one_dev_cycle), ("bare chain", one_chain)):
            t = time.perf_counter()
            seq_errors = sum(_guarded(one) is not None for _ in range(RUNS))
            seq = time.perf_counter() - t
            load_seq = _load()
            con, con_errors = _concurrent(RUNS, one)
            print(
                f"   {db.name}: threads of one process, {label} x{RUNS}: sequential {seq:.1f} s, "
                f"concurrent {con:.1f} s  (R = {con / seq:.2f}; {load_seq} / {_load()}; "
                f"errors {seq_errors + len(con_errors)})"
            )
            for e in sorted(set(con_errors))[:5]:
                print(f"      error: {e}")


def _guarded(one: Callable[[], str]) -> str | None:
    """None, or the error ``one`` raised (reported, not raised: the figure is how many runs hit errors)."""
    try:
        one()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def _concurrent(n: int, one: Callable[[], str]) -> tuple[float, list[str]]:
    """``n`` runs at once in threads: the wall time and every error hit."""
    errors: list[str] = []
    lock = threading.Lock()

    def guarded() -> None:
        error = _guarded(one)
        if error is not None:
            with lock:
                errors.append(error)

    # each thread runs in a copy of this context: Prefect's settings (the API URL) live in context variables
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(guarded,)) for _ in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, errors
