"""Waiting without holding: N dev-cycle runs of a deployment on a real process worker wait for CI and suspend;
the figures are the processes they hold while waiting (goal: none beyond the Prefect server and the one worker)
and, once CI ends, the latency from each CI webhook (through the real receiver) to its run continuing.

Runs against a temporary Prefect server (SQLite) with the cross-process durable fakes of the test suite
(``promptship_sandbox.durable_fakes``), so it needs a checkout (like the rest of ``python -m promptship.bench``).
``PROMPTSHIP_BENCH_SUSPEND_RUNS`` (default 10) sets N.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from promptship.bench.processes import DEV_CYCLE, ProcessPlatform
from promptship.bench.stats import percentile

RUNS = int(os.environ.get("PROMPTSHIP_BENCH_SUSPEND_RUNS", "10"))
SECRET = "bench-suspend"
REPO_ROOT = Path(__file__).resolve().parents[3]


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

    with tempfile.TemporaryDirectory(prefix="promptship-bench-suspend-") as tmp:
        with running_prefect_server(Path(tmp) / "prefect") as server, using_prefect(server):
            _measure(Path(tmp), server.env())


def _states(ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    return {r.id: ((r.state.name or "") if r.state else "") for r in runs}


def _until(predicate: Any, what: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            kept = Path(tempfile.gettempdir()) / "promptship-bench-suspend-worker.log"
            kept.write_bytes(log.read_bytes())
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s (worker log kept in {kept})")
        time.sleep(0.1)


def _measure(
    tmp: Path, server_env: dict[str, str], *, database_url: str | None = None, store_key: str | None = None
) -> None:
    """The suspend figures on the current Prefect server; the store at ``database_url`` (SQLite under ``tmp``
    when empty; ``store_key`` its prompt key), as the flow benchmark runs it once per database."""
    from promptship.bench.processes import process_platform

    # promptship's worker, as users run it (Prefect's stock worker ends a run Crashed when its label write meets
    # SQLite's "database is locked" on every attempt, which ten runs starting at once on SQLite can reach)
    with process_platform(
        tmp,
        server_env,
        database_url=database_url,
        store_key=store_key,
        worker_env={"PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "1"},
    ) as platform:
        (platform.fakes / "ci-pending").write_text("")
        _suspend_and_resume(platform, server_env, store_key=store_key)


def _suspend_and_resume(platform: ProcessPlatform, server_env: dict[str, str], *, store_key: str | None) -> None:
    import httpx
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from pydantic import SecretStr

    from promptship.domain.request import DevRequest, branch_for
    from promptship.domain.webhooks import sign
    from promptship.servers.resumer import PrefectRunResumer
    from promptship.servers.webhook import create_app, running_asgi
    from promptship.settings import Settings
    from promptship.store import Store
    from promptship.store.webhooks import WebhookDeliveries
    from promptship_sandbox.durable_fakes import JsonState, durable_services
    from promptship_sandbox.prefect_server import live_descendants

    fakes, worker, log, database_url = platform.fakes, platform.worker, platform.log, platform.database_url
    state = JsonState(fakes)
    store_settings = Settings(store_key=SecretStr(store_key) if store_key else None)
    store = durable_services(fakes, store_settings, database_url=database_url).sink
    assert isinstance(store, Store)
    requests = [DevRequest(prompt=f"Add GET /version ({uuid.uuid4().hex[:8]})", auto_merge=True) for _ in range(RUNS)]
    t0 = time.perf_counter()
    ids = []
    for request in requests:
        run = run_deployment(
            platform.deployment_ids[DEV_CYCLE], parameters={"request": request.model_dump(mode="json")}, timeout=0
        )
        ids.append(run.id)  # type: ignore[union-attr]
    peak = 0

    def all_suspended() -> bool:
        nonlocal peak
        peak = max(peak, len(live_descendants(worker.pid)))
        states = _states(ids)
        bad = [s for s in states.values() if s in ("Crashed", "Failed", "Completed", "Cancelled")]
        if bad:
            raise RuntimeError(f"a run ended before its CI wait: {bad}\n{log.read_text()[-3000:]}")
        return list(states.values()).count("Suspended") == RUNS and not live_descendants(worker.pid)

    _until(all_suspended, f"{RUNS} runs to suspend", 120 + 20 * RUNS, log)
    held = live_descendants(worker.pid)
    print(
        f"   suspend x{RUNS}: {len(held)} flow-run processes held while all {RUNS} wait for CI "
        f"(peak {peak} while they started), beside the Prefect server and 1 worker; "
        f"all suspended {time.perf_counter() - t0:.1f} s after submission"
    )

    settings = Settings(store_key=store_settings.store_key)  # the receiver opens the same store
    settings.github.webhook_secret = SecretStr(SECRET)
    settings.github.allowed_repositories = [requests[0].repository]

    class NoStarts:
        def start(self, trigger: Any) -> str:
            raise RuntimeError("the bench starts no run through the receiver")

    class OnThisServer:
        """The receiver resumes from its own threads, which do not see this process's temporary Prefect
        settings (a context variable): point each resume at the bench's server."""

        def __init__(self) -> None:
            self.inner = PrefectRunResumer(store.waits())

        def resume_waiting(self, repository: str, *, sha: str | None = None, pr_number: int | None = None):
            with temporary_settings(updates={PREFECT_API_URL: server_env["PREFECT_API_URL"]}):
                return self.inner.resume_waiting(repository, sha=sha, pr_number=pr_number)

    app = create_app(settings, NoStarts(), deliveries=WebhookDeliveries(store.engine), resumer=OnThisServer())
    (fakes / "ci-pending").unlink()
    branches = state.read()["branches"]
    sent: dict[str, float] = {}
    continued: dict[str, float] = {}
    running: dict[str, float] = {}
    with running_asgi(app) as url, httpx.Client(base_url=url) as http:
        for request in requests:
            sha = branches[branch_for(request.run_key)]
            body = json.dumps(
                {
                    "action": "completed",
                    "repository": {"full_name": request.repository},
                    "check_suite": {"head_sha": sha},
                }
            ).encode()
            sent[request.run_key] = time.perf_counter()
            answer = http.post(
                "/github/webhook",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "check_suite",
                    "X-GitHub-Delivery": uuid.uuid4().hex,
                    "X-Hub-Signature-256": sign(SECRET.encode(), body),
                },
            )
            answer.raise_for_status()
            time.sleep(1.0)  # one event a second: latency of one resume, not of ten process starts at once

        def all_continued() -> bool:
            states = _states(ids)
            for run_id, request in zip(ids, requests, strict=True):
                if request.run_key not in running and states.get(run_id) == "Running":
                    running[request.run_key] = time.perf_counter()
            for request in requests:
                key = request.run_key
                if key not in continued and any(s.step == "wait_for_ci#1" for s in store.steps(key)):
                    continued[key] = time.perf_counter()
            return len(continued) == RUNS

        _until(all_continued, "every resumed run to pass its CI wait", 120 + 20 * RUNS, log)
        app.state.receiver.wait_idle(30)
    _until(lambda: list(_states(ids).values()).count("Completed") == RUNS, "the runs to complete", 300, log)
    latencies = [continued[k] - sent[k] for k in sent]
    started = [running[k] - sent[k] for k in running]
    outcomes = [r.outcome for r in (store.run(q.run_key) for q in requests) if r is not None]
    shared = state.read()
    print(
        f"   suspend x{RUNS}: CI event -> run continuing (its wait_for_ci recorded) "
        f"p50 {statistics.median(latencies):.2f} s  p99 {percentile(latencies, 99):.2f} s  "
        f"max {max(latencies):.2f} s"
    )
    if started:
        print(
            f"   suspend x{RUNS}: of which CI event -> flow run Running again (resume, worker poll, process "
            f"start) p50 {statistics.median(started):.2f} s  p99 {percentile(started, 99):.2f} s "
            f"(n={len(started)}; a run seen only after it passed Running is not counted)"
        )
    print(
        f"   suspend x{RUNS}: outcomes {dict((o, outcomes.count(o)) for o in set(outcomes))}, "
        f"PRs opened {shared['pr_creations']}, merges {shared['merges']}, rollouts {len(shared['images'])}"
    )
