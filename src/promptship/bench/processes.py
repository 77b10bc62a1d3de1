"""Flow runs as users run them: flow-run processes started by a process worker from a deployment.

``process_platform`` creates a process work pool on the current Prefect server, the ``dev-cycle`` deployment (this
checkout's ``flows/dev_cycle.py``, cross-process durable fakes) and the ``bare-chain`` deployment
(``promptship/bench/chain.py``) on it, and starts one ``promptship worker`` (the process worker users run);
``ProcessPlatform.run_batch`` submits runs one after another (each once the previous one ended) or all at once
(each with an idempotency key) and times them, with each run's phases read back from its state history:
submitted → Pending (the worker claimed it), Pending → Running (the flow-run process started), Running → final
(the flow itself).

Used by ``python -m promptship.bench flow`` and ``tests/flows/test_concurrency.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[3]
DEV_CYCLE = "dev-cycle"
BARE_CHAIN = "bare-chain"
FINAL = ("Completed", "Failed", "Crashed", "Cancelled", "Cancelling", "TimedOut")

# The worker's own settings (measured in docs/BENCH.md "Flow runs as processes"):
# - it asks the server for scheduled runs every PREFECT_WORKER_QUERY_SECONDS (Prefect's default 10 s: a run waits
#   up to 10 s before its process even starts); 1 s here;
# - its heartbeat is kept off the hot path;
# - every Prefect client (the submitter here, the worker, the flow-run processes) retries a 503 more often than
#   Prefect's default 5 times (2, 4, … 32 s: about a minute): SQLite Prefect refuses a read-then-write transaction
#   at once while other runs write (docs/BENCH.md "50 at once"), and under a 50-run burst one submission in 50 was
#   still refused after its 6th attempt. 8 retries wait up to ~8.5 min in all. A retried create carries an
#   idempotency key, so it never makes a second run.
CLIENT_MAX_RETRIES = 8
WORKER_ENV: dict[str, str] = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "30",
    "PREFECT_CLIENT_MAX_RETRIES": str(CLIENT_MAX_RETRIES),
}


@dataclass(frozen=True)
class RunTiming:
    """One flow run of a batch: its final state and the phases of its life (seconds; ``nan`` when not seen)."""

    flow_run_id: uuid.UUID
    state: str
    message: str
    claim_s: float  # submitted -> Pending (the worker's poll and claim)
    start_s: float  # Pending -> Running (the flow-run process's start-up)
    body_s: float  # Running -> final state (the flow itself)


@dataclass
class Batch:
    """Runs of one deployment submitted together (or one after another) and the wall time they took."""

    mode: Literal["sequential", "concurrent"]
    wall_s: float
    runs: list[RunTiming] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # submissions the server refused (no run was created)

    @property
    def errors(self) -> list[str]:
        ended = [f"{r.state}: {r.message[:160]}" for r in self.runs if r.state != "Completed"]
        return [f"submission refused: {e}" for e in self.refused] + ended

    def phase_medians(self) -> dict[str, float]:
        def med(values: list[float]) -> float:
            seen = [v for v in values if v == v]
            return statistics.median(seen) if seen else float("nan")

        return {
            "claim": med([r.claim_s for r in self.runs]),
            "start": med([r.start_s for r in self.runs]),
            "body": med([r.body_s for r in self.runs]),
        }


@dataclass
class ProcessPlatform:
    """A process work pool with the two deployments and one worker on the current Prefect server."""

    pool: str
    fakes: Path
    worker: subprocess.Popen[bytes]
    log: Path
    deployment_ids: dict[str, uuid.UUID]
    database_url: str | None = None

    def run_batch(
        self,
        deployment: str,
        parameters: list[dict[str, Any]],
        *,
        mode: Literal["sequential", "concurrent"],
        timeout_s: float = 600,
    ) -> Batch:
        """Run ``deployment`` once per parameter set: in ``sequential`` mode each run is submitted when the
        previous one ended, in ``concurrent`` mode all at once. The wall runs from the first submission to the
        moment the last run was seen final. A run still not final after ``timeout_s`` raises TimeoutError."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import PrefectHTTPStatusError
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        deployment_id = self.deployment_ids[deployment]
        submitted: dict[uuid.UUID, float] = {}
        refused: list[str] = []
        with (
            temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: CLIENT_MAX_RETRIES}),
            get_client(sync_client=True) as client,
        ):

            def submit(params: dict[str, Any]) -> list[uuid.UUID]:
                # the client retries a 503 or a lost answer: the key makes a retried create return the same run
                key = f"bench-{uuid.uuid4().hex}"
                try:
                    run = client.create_flow_run_from_deployment(deployment_id, parameters=params, idempotency_key=key)
                except PrefectHTTPStatusError as exc:  # an overloaded server (503): counted, not fatal
                    refused.append(f"HTTP {exc.response.status_code}")
                    return []
                submitted[run.id] = time.time()
                return [run.id]

            t0 = time.perf_counter()
            ids: list[uuid.UUID] = []
            if mode == "concurrent":
                for p in parameters:
                    ids += submit(p)
                self._until_final(client, ids, timeout_s)
            else:
                for p in parameters:
                    one = submit(p)
                    ids += one
                    self._until_final(client, one, timeout_s)
            wall = time.perf_counter() - t0
            runs = [_timing(client, run_id, submitted[run_id]) for run_id in ids]
        return Batch(mode=mode, wall_s=wall, runs=runs, refused=refused)

    def _until_final(self, client: Any, ids: list[uuid.UUID], timeout_s: float) -> None:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        if not ids:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
            if len(runs) == len(ids) and all(r.state and r.state.name in FINAL for r in runs):
                return
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.worker.returncode}): {self._log_tail()}")
            if time.monotonic() > deadline:
                states = sorted(r.state.name if r.state else "?" for r in runs)
                raise TimeoutError(f"{len(ids)} runs not final within {timeout_s:.0f} s: {states}\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _timing(client: Any, run_id: uuid.UUID, submitted: float) -> RunTiming:
    states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)

    def first(*types: str) -> datetime | None:
        return next((s.timestamp for s in states if s.type.value in types), None)

    pending, running = first("PENDING"), first("RUNNING")
    final = next((s for s in reversed(states) if s.is_final()), states[-1] if states else None)

    def span(a: float | None, b: datetime | None) -> float:
        return b.timestamp() - a if a is not None and b is not None else float("nan")

    return RunTiming(
        flow_run_id=run_id,
        state=(final.name or "") if final else "",
        message=(final.message or "") if final else "",
        claim_s=span(submitted, pending),
        start_s=span(pending.timestamp() if pending else None, running),
        body_s=span(running.timestamp() if running else None, final.timestamp if final else None),
    )


@contextmanager
def process_platform(
    tmp: Path,
    server_env: Mapping[str, str],
    *,
    database_url: str | None = None,
    store_key: str | None = None,
    worker_env: Mapping[str, str] | None = None,
    worker_limit: int | None = None,
) -> Iterator[ProcessPlatform]:
    """A new process work pool, the two deployments on it and one worker (its log under ``tmp``) against the
    Prefect server the current settings point at (``server_env`` is that server's environment for the worker).
    The dev-cycle runs use the durable fakes under ``tmp/fakes`` and the store at ``database_url`` (SQLite under
    the fakes when empty; ``store_key`` is its prompt key, required off SQLite). Stopped by the worker's PID."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import get_current_settings

    fakes = tmp / "fakes"
    fakes.mkdir(parents=True, exist_ok=True)
    pool = f"bench-{uuid.uuid4().hex[:6]}"
    here = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        ids = {
            DEV_CYCLE: client.create_deployment(
                flow_id=client.create_flow_from_name("dev-cycle"),
                name=f"{pool}-dev-cycle",
                work_pool_name=pool,
                entrypoint="flows/dev_cycle.py:dev_cycle",
                pull_steps=here,
            ),
            BARE_CHAIN: client.create_deployment(
                flow_id=client.create_flow_from_name("bare-chain"),
                name=f"{pool}-bare-chain",
                work_pool_name=pool,
                entrypoint="src/promptship/bench/chain.py:bare_chain",
                pull_steps=here,
            ),
        }
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT / "sandbox" / "src"), str(REPO_ROOT)]
    env = {
        **os.environ,
        **server_env,
        "PREFECT_LOCAL_STORAGE_PATH": str(get_current_settings().results.local_storage_path),
        "PROMPTSHIP_SERVICES_FACTORY": "promptship_sandbox.durable_fakes:services_from_env",
        "PROMPTSHIP_TEST_FAKES_DIR": str(fakes),
        "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",  # CI is instant here: nothing to suspend for
        "PYTHONPATH": os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])),
        **WORKER_ENV,
        **(worker_env or {}),
    }
    if database_url:
        env["PROMPTSHIP_TEST_DATABASE_URL"] = database_url
    if store_key:
        env["PROMPTSHIP_STORE_KEY"] = store_key
    from promptship_sandbox.prefect_server import process_group

    log = tmp / "worker.log"
    # promptship's worker, as users run it (prefect.yaml): Prefect's process worker with promptship's fixes
    argv = [sys.executable, "-m", "promptship.cli", "worker", "--pool", pool]
    if worker_limit is not None:
        argv += ["--limit", str(worker_limit)]
    with process_group(argv, cwd=REPO_ROOT, env=env, log_path=log) as worker:
        yield ProcessPlatform(pool, fakes, worker, log, ids, database_url)
