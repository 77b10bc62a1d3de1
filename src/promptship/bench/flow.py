"""The dev-cycle flow's own overhead, on one temporary Prefect server (``prefect server start``, SQLite).

- sequential: a full ``dev_cycle`` run with instant in-process fakes (a fresh request each time, the real
  SQLite store) beside a bare Prefect flow chaining the same number of no-op tasks, and the same chain with
  persisted, key-cached results (what durability costs), interleaved in the same process;
- concurrent: 5 and 10 dev-cycle runs at once (threads of one process against the one server), with every
  error they hit.
"""

from __future__ import annotations

import contextvars
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from promptship.bench.stats import percentile

RUNS = int(os.environ.get("PROMPTSHIP_BENCH_FLOW_RUNS", "20"))
WARMUP = 2
CONCURRENCY = (5, 10)
# tasks of a happy run: route, generate_code, compile_check, open_pull_request, wait_for_ci, merge,
# wait_for_image, roll_out, check_health, report
CHAIN = 10


def _fmt(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:7.1f} ms  p95 {percentile(values, 95) * 1000:7.1f} ms  "
        f"(n={len(values)})"
    )


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # 40+ runs: their INFO lines drown the figures
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

    with tempfile.TemporaryDirectory(prefix="promptship-bench-flow-") as tmp:
        t0 = time.perf_counter()
        with running_prefect_server(Path(tmp) / "prefect") as server, using_prefect(server):
            print(f"   Prefect server on {server.url} (healthy after {time.perf_counter() - t0:.1f} s)")
            _measure(Path(tmp))


def _measure(tmp: Path) -> None:
    from prefect import flow, task
    from prefect.context import TaskRunContext

    from flows.dev_cycle import dev_cycle
    from promptship.domain.request import DevRequest
    from promptship.settings import Settings
    from promptship.wiring import installed
    from promptship_sandbox.fakes import fake_services

    settings = Settings(home=tmp / "home")
    settings.health.url = "http://127.0.0.1:9/health"
    services = fake_services(settings)

    @task
    def noop(i: int) -> int:
        return i + 1

    def _key(_ctx: TaskRunContext, params: dict) -> str:
        return f"{params['run']}:{params['i']}"

    @task(persist_result=True, cache_key_fn=_key)
    def noop_persisted(run: str, i: int) -> int:
        return i + 1

    @flow(name="bare-chain")
    def bare_chain() -> int:
        value = 0
        for _ in range(CHAIN):
            value = noop(value)
        return value

    @flow(name="bare-chain-persisted")
    def bare_chain_persisted(run: str) -> int:
        value = 0
        for _ in range(CHAIN):
            value = noop_persisted(run, value)
        return value

    def request() -> DevRequest:
        return DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex})", auto_merge=True)

    timings: dict[str, list[float]] = {"bare": [], "persisted": [], "dev_cycle": []}
    outcomes: Counter[str] = Counter()
    with installed(services):
        for i in range(WARMUP + RUNS):
            t = time.perf_counter()
            bare_chain()
            bare = time.perf_counter() - t
            t = time.perf_counter()
            bare_chain_persisted(uuid.uuid4().hex)
            persisted = time.perf_counter() - t
            t = time.perf_counter()
            report = dev_cycle(request())
            full = time.perf_counter() - t
            if i >= WARMUP:
                timings["bare"].append(bare)
                timings["persisted"].append(persisted)
                timings["dev_cycle"].append(full)
                outcomes[report.outcome] += 1

        base = statistics.median(timings["bare"])
        print(f"   bare Prefect flow, {CHAIN} no-op tasks          {_fmt(timings['bare'])}")
        print(f"   same chain, results persisted + key-cached  {_fmt(timings['persisted'])}")
        print(f"   dev_cycle with instant fakes ({CHAIN} tasks)     {_fmt(timings['dev_cycle'])}")
        print(
            f"   ratio dev_cycle / bare chain: median {statistics.median(timings['dev_cycle']) / base:.2f}x, "
            f"persisted chain / bare: {statistics.median(timings['persisted']) / base:.2f}x; "
            f"outcomes {dict(outcomes)}"
        )

        for n in CONCURRENCY:
            _concurrent(n, lambda: dev_cycle(request()).outcome, statistics.median(timings["dev_cycle"]))


def _concurrent(n: int, run_one: Callable[[], str], sequential_median_s: float) -> None:
    """``n`` runs at once in threads; prints wall time, per-run median, outcomes and every error hit."""
    latencies: list[float] = []
    errors: list[str] = []
    results: Counter[str] = Counter()
    lock = threading.Lock()

    def one() -> None:
        t = time.perf_counter()
        try:
            outcome = run_one()
        except Exception as exc:  # reported, not raised: the figure is how many runs hit errors
            with lock:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            return
        with lock:
            latencies.append(time.perf_counter() - t)
            results[outcome] += 1

    # each thread runs in a copy of this context: Prefect's settings (the API URL) live in context variables
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(one,)) for _ in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    seq = sequential_median_s * n
    per_run = statistics.median(latencies) if latencies else float("nan")
    print(
        f"   {n:>2} concurrent runs: wall {wall:.2f} s (sequential estimate {seq:.2f} s, {seq / wall:.2f}x), "
        f"per-run median {per_run:.2f} s, outcomes {dict(results)}, errors {len(errors)}"
    )
    for e in sorted(set(errors)):
        print(f"      error: {e}")
