"""The kill campaign: a real Prefect server, the ``dev-cycle`` deployment of ``prefect.yaml``, a real process
worker; the durable fakes (``promptship_sandbox.durable_fakes``) as every outside boundary.

For each kill point: the same request (its prompt tagged per point, so runs never share a request key) runs
once uninterrupted per scenario (the baseline), then once with ``PROMPTSHIP_KILL_AT`` naming the point (in
the flow run's environment, through the deployment's ``env`` job variable). The hook writes its marker and
SIGKILLs the flow-run process (or its worker, for ``@worker`` points; the campaign restarts the worker). The
run is then recovered without touching the fakes: ``promptship resume --force``, the sweeper
(``promptship sweep --every 1``, which has to find the dead run by itself), or Prefect's own retry of the
deployment run (its state set to AwaitingRetry, as the UI's Retry button does, and the worker runs it again).
Every side effect is then compared with the baseline.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from promptship.domain.request import DevRequest, request_key_for
from promptship.errors import ConfigError
from promptship.faults import (
    AFTER_RESUME,
    AGENT_WORKING,
    BEFORE_SUSPEND,
    BETWEEN_APPLY_AND_VERDICT,
    BETWEEN_MERGE_AND_ROLLOUT,
    BETWEEN_PUSH_AND_PR,
    DURING_REPORT,
    DURING_ROLLBACK,
    KILL_AT_ENV,
    KILL_MARKERS_ENV,
    WAITING_FOR_CI,
    WHILE_SUSPENDED,
    after_step,
    before_step,
    fire,
    marker_path,
    read_marker,
)
from promptship.store import Store
from promptship_sandbox.prefect_server import (
    PrefectServer,
    live_descendants,
    running_prefect_server,
    stop_process_group,
    using_prefect,
)
from promptship_sandbox.reliability.faults import FULL as FAULTS_FULL
from promptship_sandbox.reliability.faults import QUICK as FAULTS_QUICK
from promptship_sandbox.reliability.faults import FaultCase, print_fault_part
from promptship_sandbox.reliability.leaks import ALLOWLIST, Allowed, LeakReport

if TYPE_CHECKING:
    from promptship_sandbox.reliability.wholeruns import WholeCase

Recovery = Literal["resume", "sweep", "retry", "wait"]
Scenario = Literal["deploy", "rollback", "suspend"]

FACTORY = "promptship_sandbox.durable_fakes:services_from_env"
LEASE_TTL_S = 4.0  # the request lease in the campaign: a dead run's lease expires in seconds, not 2 minutes
RUN_TIMEOUT_S = 150.0
SOAK_SEQUENTIAL, SOAK_CONCURRENT = 50, 10  # the soak's requests (Part 6, --soak)
PARALLEL_POINTS = 3  # kill points in flight at once (2 cores: more only queues)
SUSPEND_AFTER_S = "1"  # the suspend scenario's runs suspend after 1 s of waiting for CI (production: 30 s)

# planted secrets: every process of the campaign (worker, flow runs, resume, sweepers) has these credentials in
# its settings (the durable fakes need none, so they travel nowhere on purpose); one request carries a secret in
# its prompt, sealed before it is submitted as `promptship run` does. The scan at the end must find none of them
# outside the allowlist.
CANARY_SETTINGS = {
    "github_token": "PROMPTSHIP_GITHUB__TOKEN",
    "openrouter_key": "PROMPTSHIP_LLM__OPENROUTER_API_KEY",
    "webhook_secret": "PROMPTSHIP_GITHUB__WEBHOOK_SECRET",
    "session_key": "PROMPTSHIP_OPENHANDS__SESSION_API_KEY",
}
CANARY_TAG = "leak-canary"
# where the campaign's own stand-ins keep a prompt by design (on top of leaks.ALLOWLIST)
CAMPAIGN_ALLOWLIST: tuple[Allowed, ...] = (
    Allowed(
        ("prompt_secret",),
        f"work/{CANARY_TAG}/state.json",
        "the durable fake agent's conversation: the instruction the agent was given, as the agent-server keeps "
        "its conversations (the gate sends a secret-bearing prompt to the local model, never to the cloud)",
    ),
)


def plant_canaries() -> dict[str, str]:
    """Credential-shaped values made up for this campaign (the real services' formats)."""
    from promptship_sandbox import credentials

    return {
        "github_token": credentials.github_token("ghp_"),
        "openrouter_key": credentials.openrouter_key(),
        "webhook_secret": credentials.webhook_secret(),
        "session_key": credentials.session_key(),
        "prompt_secret": credentials.github_token("ghp_"),
    }


@dataclass(frozen=True)
class KillPoint:
    point: str
    recovery: Recovery
    scenario: Scenario = "deploy"
    victim: Literal["run", "worker"] = "run"

    @property
    def name(self) -> str:
        return self.point + ("@worker" if self.victim == "worker" else "")


D, R, S = "deploy", "rollback", "suspend"
FULL: tuple[KillPoint, ...] = (
    KillPoint(before_step("route"), "resume"),
    KillPoint(AGENT_WORKING, "sweep"),
    KillPoint(after_step("generate_code"), "resume"),
    KillPoint(BETWEEN_PUSH_AND_PR, "sweep"),
    KillPoint(after_step("compile_check"), "retry"),
    KillPoint(before_step("open_pull_request"), "sweep"),
    KillPoint(after_step("open_pull_request"), "resume"),
    KillPoint(after_step("open_pull_request"), "sweep", victim="worker"),
    KillPoint(WAITING_FOR_CI, "resume"),
    KillPoint(after_step("wait_for_ci#1"), "sweep"),
    KillPoint(before_step("merge"), "resume"),
    KillPoint(after_step("merge"), "retry"),
    KillPoint(BETWEEN_MERGE_AND_ROLLOUT, "sweep"),
    KillPoint(BETWEEN_MERGE_AND_ROLLOUT, "resume", victim="worker"),
    KillPoint(after_step("wait_for_image"), "sweep"),
    KillPoint(BETWEEN_APPLY_AND_VERDICT, "resume"),
    KillPoint(after_step("roll_out"), "sweep"),
    KillPoint(before_step("check_health"), "resume"),
    KillPoint(after_step("check_health"), "sweep"),
    KillPoint(DURING_REPORT, "resume"),
    KillPoint(DURING_ROLLBACK, "resume", R),
    KillPoint(after_step("rollback"), "sweep", R),
    KillPoint(after_step("check_health:after_rollback"), "resume", R),
    KillPoint(before_step("write_back"), "sweep", R),
    KillPoint(after_step("write_back"), "retry", R),
    KillPoint(DURING_REPORT, "sweep", R),
    # the suspend scenario: CI runs until the run suspended (or the kill fired), then a person's `promptship
    # sweep` resumes the suspended run; `wait`: nothing but that sweep and a new worker recovers it
    KillPoint(BEFORE_SUSPEND, "resume", S),
    KillPoint(WHILE_SUSPENDED, "wait", S, victim="worker"),
    KillPoint(AFTER_RESUME, "sweep", S),
)
# one point per way of recovering, Prefect's retry included (docs/RELIABILITY.md, finding 3: it was lost about one
# time in three under the deployment's concurrency limit before the campaign's worker became `promptship worker`)
QUICK: tuple[KillPoint, ...] = (
    KillPoint(after_step("open_pull_request"), "resume"),
    KillPoint(BETWEEN_MERGE_AND_ROLLOUT, "sweep"),
    KillPoint(AGENT_WORKING, "sweep"),
    KillPoint(DURING_ROLLBACK, "resume", R),
    KillPoint(after_step("merge"), "retry"),
)

COLUMNS = (
    "prs",
    "branches",
    "conversations",
    "agent_runs",
    "merges",
    "rollouts",
    "rollbacks",
    "reverts",
    "charges",
    "attempts",
    "steps",
    "artifacts",
    "outcome",
)


@dataclass
class Counts:
    """Every side effect of one request, read from the fakes, the store and Prefect."""

    values: dict[str, object]

    def diff(self, baseline: Counts) -> list[str]:
        return [
            f"{c}: {self.values[c]} vs {baseline.values[c]}" for c in COLUMNS if self.values[c] != baseline.values[c]
        ]


@dataclass
class PointResult:
    kill: KillPoint
    fired: bool
    victim_pid: int | None = None
    recovered: bool = False
    recover_s: float | None = None
    differences: list[str] = field(default_factory=list)
    outcome: str | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.fired and self.recovered and not self.differences


def repo_root() -> Path:
    import flows

    root = Path(flows.__file__).resolve().parents[1]
    if not (root / "prefect.yaml").exists():
        raise ConfigError(f"promptship reliability runs from a checkout: no prefect.yaml in {root}")
    return root


class Harness:
    """The Prefect server, the deployment and one process worker (restarted when a kill takes it down)."""

    def __init__(
        self,
        server: PrefectServer,
        work: Path,
        echo: Callable[[str], None],
        canaries: dict[str, str] | None = None,
    ):
        self.server = server
        self.work = work
        self.echo = echo
        self.canaries = canaries or {}
        self.root = repo_root()
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_starts = 0
        self.worker_env: dict[str, str] = {}  # the worker's own extra environment (the soak's fakes directory)
        self.helpers: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        path = [str(self.root), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env = {
            **os.environ,
            **self.server.env(),
            "PYTHONPATH": os.pathsep.join(path),
            "PROMPTSHIP_SERVICES_FACTORY": FACTORY,
            "PROMPTSHIP_TEST_LEASE_TTL_S": str(LEASE_TTL_S),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            **{env: self.canaries[name] for name, env in CANARY_SETTINGS.items() if name in self.canaries},
            **extra,
        }
        for name in (KILL_AT_ENV, KILL_MARKERS_ENV, "PROMPTSHIP_TEST_FAKES_DIR"):
            if name not in extra:
                env.pop(name, None)
        return env

    def prefect(self, *args: str) -> None:
        prefect_bin = Path(sys.executable).with_name("prefect")
        done = subprocess.run(
            [str(prefect_bin), *args], cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise ConfigError(f"prefect {' '.join(args)} failed: {(done.stdout + done.stderr)[-2000:]}")

    def deploy(self) -> None:
        self.prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite")
        self.prefect("--no-prompt", "deploy", "--name", "dev-cycle")

    def start_worker(self) -> None:
        self.worker_starts += 1
        log = (self.work / f"worker-{self.worker_starts}.log").open("wb")
        # promptship's process worker: Prefect's own reports a killed run Crashed a second time, late, onto the
        # retry a person made in between (docs/RELIABILITY.md, finding 3)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "promptship.cli", "worker", "--pool", "local-process"],
            cwd=self.root,
            env=self.env(**self.worker_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ensure_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            self.start_worker()

    def spawn(self, args: list[str], log_name: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.work / log_name).open("wb")
        proc = subprocess.Popen(
            args, cwd=self.root, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.helpers.append(proc)
        return proc

    def sweep_waits(self, s: Submitted) -> None:
        """``promptship sweep`` once (the suspend sweep: resumes suspended runs whose condition is met)."""
        subprocess.run(
            [sys.executable, "-m", "promptship.cli", "sweep"],
            cwd=self.root,
            env=self.env(PROMPTSHIP_TEST_FAKES_DIR=str(s.fakes)),
            capture_output=True,
            timeout=120,
        )

    def worker_children(self) -> list[int]:
        """Live processes the worker started (a suspended run has none)."""
        return live_descendants(self.worker.pid) if self.worker is not None else []

    def stop(self) -> None:
        for proc in [*self.helpers, *([self.worker] if self.worker else [])]:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End a process this campaign started (its session, by its PID)."""
    stop_process_group(proc, grace_s=15)


def request_for(tag: str, scenario: Scenario, repository: str | None = None) -> DevRequest:
    what = "that breaks the health check" if scenario == "rollback" else "returning the commit SHA"
    prompt = f"Add GET /version {what} [{tag}]"
    if repository:
        return DevRequest(prompt=prompt, auto_merge=True, repository=repository)
    return DevRequest(prompt=prompt, auto_merge=True)


@dataclass
class Submitted:
    tag: str
    fakes: Path
    request: DevRequest
    flow_run_id: str

    @property
    def key(self) -> str:
        return request_key_for(self.request, None)


def submit(
    harness: Harness,
    tag: str,
    scenario: Scenario,
    kill: str | None = None,
    *,
    secret: str | None = None,
    repository: str | None = None,
) -> Submitted:
    """Start the request of ``tag`` through the deployment (with ``secret`` in its prompt: sealed first, as
    `promptship run` and the webhook receiver do; ``repository``: another than the request's default)."""
    from prefect.deployments import run_deployment

    fakes = harness.work / tag
    fakes.mkdir(parents=True, exist_ok=True)
    if scenario == "rollback":
        (fakes / "unhealthy").write_text("")
    request = request_for(tag, scenario, repository)
    if secret is not None:
        request = request.model_copy(update={"prompt": f"{request.prompt} and log in with {secret} from now on"})
    env = {"PROMPTSHIP_TEST_FAKES_DIR": str(fakes)}
    if scenario == "suspend":
        (fakes / "ci-pending").write_text("")  # CI runs until the person of `play_user` says it finished
        env["PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S"] = SUSPEND_AFTER_S
    if kill:
        env |= {KILL_AT_ENV: kill, KILL_MARKERS_ENV: str(fakes / "markers")}
        (fakes / "markers").mkdir(exist_ok=True)
    given = _store(fakes).seal(request) if secret is not None else request
    run = run_deployment(
        "dev-cycle/dev-cycle",
        parameters={"request": given.model_dump(mode="json")},
        job_variables={"env": env},
        timeout=0,
    )
    return Submitted(tag, fakes, request, str(run.id))  # type: ignore[union-attr]


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def _store(fakes: Path) -> Store:
    """The store of one request's fakes, built once (alembic's migration context is not thread-safe)."""
    from promptship_sandbox.durable_fakes import durable_services

    with _stores_lock:
        if fakes not in _stores:
            sink = durable_services(fakes).sink
            assert isinstance(sink, Store)
            _stores[fakes] = sink
        return _stores[fakes]


def attempt_ended(s: Submitted) -> bool:
    attempt = _store(s.fakes).latest_attempt(s.key)
    return attempt is not None and attempt.status == "ended"


def flow_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    return state.type.value if state is not None else "NONE"


def tagged_states(s: Submitted) -> dict[str, tuple[str, str]]:
    """(state type, state name) of every flow run of ``s``'s tagged prompt, by flow run id (the run itself and
    the runs that resumed it; run names are cut short, so they do not tell points apart)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        old = client.read_flow_run(uuid.UUID(s.flow_run_id))
        since = FlowRunFilterStartTime(after_=old.start_time) if old.start_time else None
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=since), limit=200)
    tag = f"[{s.tag}]"
    found = {
        str(r.id): (r.state.type.value, r.state.name or "")
        for r in [*runs, old]
        if r.state is not None and tag in str(r.parameters.get("request", {}).get("prompt"))
    }
    if old.state is not None:
        found[s.flow_run_id] = (old.state.type.value, old.state.name or "")
    return found


def resumed_state(s: Submitted) -> str:
    """The state of the flow run that resumed ``s`` (another run of the same tagged prompt)."""
    states = [t for run_id, (t, _) in tagged_states(s).items() if run_id != s.flow_run_id]
    return "COMPLETED" if "COMPLETED" in states else (states[0] if states else "NONE")


def any_suspended(s: Submitted) -> bool:
    return any(name == "Suspended" for _, name in tagged_states(s).values())


def play_user(harness: Harness, s: Submitted, stop: threading.Event, after_kill: Path | None = None) -> None:
    """The person and the CI of the suspend scenario: CI finishes once a run of the request was seen Suspended
    (or, for a kill before any suspension, once the kill fired); from then on ``promptship sweep`` (the suspend
    sweep a person or a timer runs) is run whenever a run of the request is Suspended. With ``after_kill``
    (the marker of a point fired from outside) nothing happens before that marker exists."""
    pending = s.fakes / "ci-pending"
    deadline = time.monotonic() + RUN_TIMEOUT_S * 2
    markers = s.fakes / "markers"
    while not stop.is_set() and time.monotonic() < deadline and not attempt_ended(s):
        if after_kill is None or after_kill.exists():
            suspended = any_suspended(s)
            fired = markers.exists() and any(markers.iterdir())
            if pending.exists() and (suspended or (fired and after_kill is None)):
                pending.unlink()  # CI finished
            if suspended and not pending.exists():
                harness.sweep_waits(s)
        stop.wait(1.0)


@contextmanager
def user_of(harness: Harness, s: Submitted, kill: KillPoint | None = None) -> Iterator[None]:
    """``play_user`` in a thread for a suspend-scenario request (nothing for the others)."""
    if (kill.scenario if kill else s.tag.removeprefix("baseline-")) != "suspend":
        yield
        return
    stop = threading.Event()
    after_kill = marker_path(s.fakes / "markers", kill.point) if kill and kill.point == WHILE_SUSPENDED else None
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(play_user, harness, s, stop, after_kill), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def counts(s: Submitted) -> Counts:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from promptship_sandbox.durable_fakes import JsonState

    state = JsonState(s.fakes).read()
    store = _store(s.fakes)
    attempts = store.attempts(s.key)
    steps: Counter[str] = Counter()
    for attempt in attempts:
        steps.update(r.step for r in store.attempt_steps(attempt.id))
    report = store.run(s.key)
    keys = [f"run-{s.key}", f"steps-{s.key}"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    conversations = state.get("conversations", {})
    return Counts(
        {
            "prs": state.get("pr_creations", 0),
            "branches": len(state.get("pushed", [])),
            "conversations": len(conversations),
            "agent_runs": sum(c.get("runs", 0) for c in conversations.values()),
            "merges": state.get("merges", 0),
            "rollouts": len(state.get("images", [])),
            "rollbacks": state.get("rollbacks", 0),
            "reverts": state.get("revert_creations", 0),
            "charges": len(state.get("charges", [])),
            "attempts": len(attempts),
            "steps": json.dumps(dict(sorted(steps.items()))),
            "artifacts": len(artifacts),
            "outcome": report.outcome if report else None,
        }
    )


def run_baselines(harness: Harness, scenarios: list[Scenario]) -> tuple[dict[str, Counts], str]:
    """The uninterrupted run of each scenario's request (submitted together)."""
    submitted = [(scenario, submit(harness, f"baseline-{scenario}", scenario)) for scenario in scenarios]
    found: dict[str, Counts] = {}
    with ExitStack() as users:
        for _, s in submitted:
            users.enter_context(user_of(harness, s))
        for scenario, s in submitted:
            if not wait_for(lambda s=s: attempt_ended(s) and flow_state(s.flow_run_id) == "COMPLETED", RUN_TIMEOUT_S):
                return found, f"baseline {scenario} did not complete (flow run {flow_state(s.flow_run_id)})"
            found[scenario] = counts(s)
    return found, ""


def run_point(harness: Harness, kill: KillPoint, baseline: Counts) -> PointResult:
    """Kill, recover and compare one point; a progress line as it ends (the table comes at the end)."""
    result = _kill_and_recover(harness, kill, baseline)
    verdict = "equal" if result.passed else ("; ".join(result.differences) or result.note or "not recovered")
    harness.echo(f"[done] {kill.name} ({kill.recovery}): {verdict}")
    return result


def _kill_and_recover(harness: Harness, kill: KillPoint, baseline: Counts) -> PointResult:
    tag = "kill-" + "".join(ch if ch.isalnum() else "-" for ch in kill.name) + f"-{kill.recovery}"
    harness.ensure_worker()
    s = submit(harness, tag, kill.scenario, kill.name)
    with user_of(harness, s, kill):
        return _run_point(harness, kill, baseline, s, tag)


def _run_point(harness: Harness, kill: KillPoint, baseline: Counts, s: Submitted, tag: str) -> PointResult:
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    markers = s.fakes / "markers"
    if kill.point == WHILE_SUSPENDED:  # no code of the run is running: the campaign kills its worker
        suspended = wait_for(lambda: any_suspended(s) and not harness.worker_children(), RUN_TIMEOUT_S)
        if suspended and harness.worker is not None:
            fire(markers, WHILE_SUSPENDED, harness.worker.pid)
    fired = wait_for(
        lambda: read_marker(markers, kill.point) is not None or flow_state(s.flow_run_id) in ("COMPLETED", "FAILED"),
        RUN_TIMEOUT_S,
    )
    marker = read_marker(markers, kill.point)
    if not fired or marker is None:
        return PointResult(kill, fired=False, note=f"never fired (flow run {flow_state(s.flow_run_id)})")
    killed_at = float(marker["time"])  # type: ignore[arg-type]
    pid = int(marker["pid"])  # type: ignore[call-overload]
    wait_for(lambda: not _alive(pid), 30)
    if kill.victim == "worker":
        assert harness.worker is not None
        wait_for(lambda: harness.worker is not None and harness.worker.poll() is not None, 30)
        harness.start_worker()  # a new worker, as a supervisor would start; it must not rerun the dead run
    recovery_proc: subprocess.Popen[bytes] | None = None
    env = {"PROMPTSHIP_TEST_FAKES_DIR": str(s.fakes)}
    python = sys.executable
    if kill.recovery == "resume":
        recovery_proc = harness.spawn(
            [python, "-m", "promptship.cli", "resume", "--force", s.flow_run_id], f"{tag}-resume.log", **env
        )
    elif kill.recovery == "sweep":
        recovery_proc = harness.spawn(
            [python, "-m", "promptship.cli", "sweep", "--every", "1"], f"{tag}-sweep.log", **env
        )
    elif kill.recovery == "wait":
        pass  # the suspended run is resumed by the person's `promptship sweep` (play_user) on the new worker
    else:
        # Prefect's own retry, as the UI's Retry button does it: the worker runs the same flow run again
        wait_for(lambda: flow_state(s.flow_run_id) != "RUNNING" or kill.victim == "worker", 10)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(uuid.UUID(s.flow_run_id), AwaitingRetry(), force=True)
    recovered = wait_for(lambda: attempt_ended(s), RUN_TIMEOUT_S)
    recover_s = time.time() - killed_at if recovered else None
    same_run = kill.recovery in ("retry", "wait")  # the killed flow run itself runs again
    if recovered and not same_run:  # the attempt ends inside the report step: let that run finish
        recovered = wait_for(lambda: resumed_state(s) == "COMPLETED", RUN_TIMEOUT_S)
    if recovery_proc is not None:
        if kill.recovery == "resume":
            recovery_proc.wait(timeout=RUN_TIMEOUT_S)
        stop_process(recovery_proc)
    note = ""
    old = flow_state(s.flow_run_id)
    if same_run:
        recovered = recovered and wait_for(lambda: flow_state(s.flow_run_id) == "COMPLETED", RUN_TIMEOUT_S)
    elif old in ("RUNNING", "PENDING"):  # a zombie left in the UI
        recovered, note = False, f"killed flow run left {old}"
    found = counts(s)
    return PointResult(
        kill,
        fired=True,
        victim_pid=pid,
        recovered=recovered,
        recover_s=recover_s,
        differences=found.diff(baseline),
        outcome=str(found.values["outcome"]),
        note=note,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- soak --------------------------------------------------------------------------------------------------
def process_usage(pid: int) -> tuple[int, int]:
    """(resident memory in KiB, open file descriptors) of a process, summed over its session's processes."""
    rss = fds = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != os.getsid(pid):
                continue
            status = (entry / "status").read_text()
            rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            fds += len(os.listdir(entry / "fd"))
        except (OSError, ValueError):
            continue
    return rss, fds


# -- the command -------------------------------------------------------------------------------------------
def run_campaign(
    *,
    quick: bool = False,
    soak: bool = False,
    points: list[str] | None = None,
    echo: Callable[[str], None] = print,
    work: Path | None = None,
    faults: bool = True,
) -> int:
    """Run the campaign; print the tables and the summary line; return the exit status (0: all equal)."""
    from promptship_sandbox.reliability.wholeruns import FULL as WHOLE_FULL
    from promptship_sandbox.reliability.wholeruns import QUICK as WHOLE_QUICK

    chosen = QUICK if quick else FULL
    if points:
        known = {k.name: k for k in FULL + QUICK}
        unknown = [p for p in points if p not in known]
        if unknown:
            echo(f"--points: unknown kill points {unknown}; known: {sorted(known)}")
            return 2
        chosen = tuple(known[p] for p in points)
    with _workdir(work) as root:
        with running_prefect_server(root / "prefect") as server, using_prefect(server):
            harness = Harness(server, root, echo, plant_canaries())
            try:
                cases = (FAULTS_QUICK if quick else FAULTS_FULL) if faults else ()
                whole = (WHOLE_QUICK if quick else WHOLE_FULL) if faults else ()
                return _campaign(harness, chosen, soak, echo, cases, whole)
            finally:
                harness.stop()


@contextmanager
def _workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    # kept afterwards: the logs of every process and the fakes' state are what explains a failed point
    yield Path(tempfile.mkdtemp(prefix="promptship-reliability-"))


def _campaign(
    harness: Harness,
    chosen: tuple[KillPoint, ...],
    soak: bool,
    echo: Callable[[str], None],
    cases: tuple[FaultCase, ...] = (),
    whole: tuple[WholeCase, ...] = (),
) -> int:
    started = time.monotonic()
    harness.deploy()
    harness.start_worker()
    canary = submit(harness, CANARY_TAG, "deploy", secret=harness.canaries["prompt_secret"])
    baselines, why = run_baselines(harness, sorted({k.scenario for k in chosen}))  # type: ignore[arg-type]
    if why:
        echo(f"reliability: {why}; see {harness.work}")
        echo("kill points 0, fault kinds 0, boundaries 0, duplicates 0, leaks 0, lost runs 1")
        return 1
    for scenario, found in baselines.items():
        echo(f"baseline {scenario}: " + ", ".join(f"{c} {found.values[c]}" for c in COLUMNS if c != "steps"))
    # points that kill only their flow run run side by side (each request has its own fakes and store); a
    # point that kills the worker runs alone, afterwards
    alone = [k for k in chosen if k.victim == "worker"]
    side_by_side = [k for k in chosen if k.victim == "run"]
    # each thread runs in a copy of this context: Prefect's settings (the server's API URL) live in a contextvar
    contexts = [contextvars.copy_context() for _ in side_by_side]
    with ThreadPoolExecutor(max_workers=PARALLEL_POINTS) as pool:
        futures = [
            pool.submit(c.run, run_point, harness, k, baselines[k.scenario])
            for c, k in zip(contexts, side_by_side, strict=True)
        ]
        done = {k: f.result() for k, f in zip(side_by_side, futures, strict=True)}
    done |= {k: run_point(harness, k, baselines[k.scenario]) for k in alone}
    results = [done[k] for k in chosen]

    echo("")
    echo("Part 1-2: kill points (each run killed there, recovered, compared with the uninterrupted run)")
    header = (
        f"{'kill point':<44} {'recovery':<8} {'fired':<5} {'recovered':<9} {'to recover':>10}  {'outcome':<12} equal"
    )
    echo(header)
    echo("-" * len(header))
    for r in results:
        took = f"{r.recover_s:.1f} s" if r.recover_s is not None else "-"
        equal = "yes" if not r.differences else "NO: " + "; ".join(r.differences)
        if not r.fired:
            equal = r.note
        elif r.note:
            equal += f" ({r.note})"
        echo(
            f"{r.kill.name:<44} {r.kill.recovery:<8} {'yes' if r.fired else 'NO':<5} "
            f"{'yes' if r.recovered else 'NO':<9} {took:>10}  {str(r.outcome or '-'):<12} {equal}"
        )
    fired = sum(1 for r in results if r.fired)
    duplicates = sum(1 for r in results if r.differences)
    lost = sum(1 for r in results if r.fired and not r.recovered)
    by_recovery: dict[str, list[float]] = {}
    for r in results:
        if r.recover_s is not None:
            by_recovery.setdefault(r.kill.recovery, []).append(r.recover_s)
    for how, took in sorted(by_recovery.items()):
        echo(f"time to recover ({how}): median {sorted(took)[len(took) // 2]:.1f} s, max {max(took):.1f} s")

    in_memory: dict[str, str] = {}  # what the soak's and part 3b's real parts kept only in memory (leak scan)
    if soak:
        from promptship_sandbox.reliability.soak import run_soak, table_lines

        echo("")
        echo(
            "Part 6: soak (signed deliveries from the forge to the receiver, runs of the deployment on the worker; "
            "the forge, the receiver, the gateway service and the agent-server as processes started once)"
        )
        soaked = run_soak(harness, SOAK_SEQUENTIAL, SOAK_CONCURRENT, echo)
        in_memory |= soaked.objects
        for line in table_lines(soaked):
            echo(line)
        lost += soaked.lost
        duplicates += soaked.duplicates

    # part 3b: whole dev-cycle runs through the deployment, one boundary real behind the proxy (wholeruns.py),
    # beside part 3: faults at the boundaries (reliability/faults.py), both on this campaign's Prefect server
    from promptship_sandbox.reliability.wholeruns import print_whole_part, run_whole_cases

    with ThreadPoolExecutor(max_workers=1) as beside:
        whole_future = (
            beside.submit(contextvars.copy_context().run, run_whole_cases, harness, whole, harness.work / "whole-parts")
            if whole
            else None
        )
        fault_run = print_fault_part(cases, harness.work / "faults", echo)
        whole_run = print_whole_part(whole_future.result() if whole_future else None, echo)
    duplicates += fault_run.duplicates + whole_run.duplicates
    lost += fault_run.lost + whole_run.lost

    echo("")
    echo("Part 4: planted secrets (the settings' credentials of every process, a secret in one request's prompt)")
    canary_done = wait_for(lambda: attempt_ended(canary) and flow_state(canary.flow_run_id) == "COMPLETED", 60)
    if not canary_done:
        echo(f"the planted request did not complete (flow run {flow_state(canary.flow_run_id)})")
        lost += 1
    scan = scan_campaign(harness, in_memory | whole_run.objects)
    for line in scan.lines():
        echo(line)
    echo(f"campaign took {time.monotonic() - started:.0f} s; logs under {harness.work}")
    never = len(results) - fired
    leaks = len(scan.leaks)
    kinds = len(fault_run.kind_names | whole_run.kinds)
    boundaries = len(fault_run.boundary_names | whole_run.boundaries)
    echo(
        f"kill points {fired}, fault kinds {kinds}, boundaries {boundaries}, duplicates {duplicates}, "
        f"leaks {leaks}, lost runs {lost}"
    )
    return 1 if duplicates or lost or never or leaks or fault_run.failed or whole_run.failed else 0


def scan_campaign(harness: Harness, parts: dict[str, str] | None = None) -> LeakReport:
    """``scan_leaks`` over everything the campaign left: its whole work directory (the Prefect server's home and
    database, every process's log, each request's fakes and store), Prefect's API objects and ``parts``: what a
    part's real services kept only in memory (the LLM stand-in logs and forges of part 3b and the soak,
    ``wholeruns.Parts.objects``, ``soak.SoakParts.objects``)."""
    from promptship_sandbox.reliability.leaks import prefect_api_objects, scan_leaks

    objects = prefect_api_objects(harness.server.api_url, expect=("flow_run", "task_run", "log")) | (parts or {})
    return scan_leaks({"work": harness.work}, harness.canaries, ALLOWLIST + CAMPAIGN_ALLOWLIST, objects=objects)
