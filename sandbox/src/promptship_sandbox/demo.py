"""The embedded default: five requests through the real path, on 127.0.0.1, with nothing to configure.

``promptship demo [--scenario NAME ...]`` starts — in parallel threads — a Prefect server (SQLite, its own
PREFECT_HOME), the local forge (each scenario its own repository, CI builds its seed image), the LLM stand-in
behind the real gateway (and llama.cpp when installed), the OpenHands agent-server and the Kubernetes control
plane (each scenario its own namespace running its seed app). It then registers the project's deployments
(``prefect --no-prompt deploy --all`` from prefect.yaml, pool ``local-process``), starts ONE process worker
whose environment points every port at those servers (``PROMPTSHIP_*`` settings: the flow-run processes build
the real adapters with ``build_ports``, never an in-process fake), and submits the scenarios concurrently:

    deploy    run_deployment(dev-cycle)   the clean change                         -> deployed
    repair    run_deployment(dev-cycle)   first attempt red in CI, repaired        -> deployed, repair rounds >= 1
    rollback  run_deployment(dev-cycle)   green CI, the new pods exit at start     -> rolled_back + revert PR
    private   run_deployment(dev-cycle)   a credential in the prompt               -> deployed, local calls only
    webhook   signed issues.labeled -> receiver -> event -> github-event trigger   -> waiting (no auto-merge)

The scripted agent of each run is found by the LLM stand-in through the run's work branch, which its first
instruction names (``LLMStandIn.script_conversation``), so the runs share one stand-in without taking each
other's replies. Reports are read back from the store. At the end: one summary table and one machine line per
scenario, ``scenario=NAME expected=OUTCOME outcome=OUTCOME``; the exit code is 0 only when every scenario
reached its expected outcome and every boundary was the real adapter against a running server.
"""

from __future__ import annotations

import contextvars
import os
import secrets
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from promptship.domain.report import RunOutcome, RunReport
from promptship.domain.request import DeployTarget, DevRequest, branch_for
from promptship.errors import ConfigError
from promptship.settings import Settings
from promptship_sandbox.prefect_server import PrefectServer, running_prefect_server, running_worker, using_prefect
from promptship_sandbox.stopping import wait_until_stopped

DEMO_PROMPT = "Add a GET /version endpoint that returns the deployed commit SHA"
DEMO_REPOSITORY = "demo/chat-app"
REPO_ROOT = Path(__file__).resolve().parents[3]
# Outcomes that are verdicts the pipeline reached on purpose; "failed" and "cancelled" are not.
VERDICT_OUTCOMES = ("deployed", "rolled_back", "stopped", "waiting", "already_done")
WEBHOOK_LABEL = "promptship"
RUN_TIMEOUT_S = 1200.0  # the longest a scenario's run may take before the demo calls it failed

Echo = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    """One demo request: where it runs, how it is started, what it must end as, and what it proves."""

    name: str
    expected: RunOutcome
    repository: str
    namespace: str
    via: Literal["deployment", "webhook"]
    proves: str
    prompt: str = DEMO_PROMPT


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("deploy", "deployed", DEMO_REPOSITORY, "demo", "deployment", "the clean change reaches production"),
        Scenario(
            "repair",
            "deployed",
            "demo/chat-app-repair",
            "repair",
            "deployment",
            "red CI goes back to the agent; the repaired commit ships",
            prompt="Add a GET /version endpoint that answers the deployed commit SHA under the key sha",
        ),
        Scenario(
            "rollback",
            "rolled_back",
            "demo/chat-app-rollback",
            "rollback",
            "deployment",
            "green CI but the new pods never start: rolled back, revert PR opened",
            prompt="Serve the backend with several uvicorn worker processes, set by WEB_CONCURRENCY (default 2)",
        ),
        Scenario(
            "private",
            "deployed",
            "demo/chat-app-private",
            "private",
            "deployment",
            "a credential in the prompt: local models only, redacted everywhere promptship writes",
        ),
        Scenario(
            "webhook",
            "waiting",
            "demo/chat-app-webhook",
            "webhook",
            "webhook",
            "a signed GitHub delivery starts the run; without auto-merge it waits for a person",
        ),
    )
}


def demo_request(health_url: str | None = None) -> DevRequest:
    """The ``deploy`` scenario's request (also the ``demo`` deployment's parameters in prefect.yaml)."""
    return DevRequest(
        prompt=DEMO_PROMPT,
        repository=DEMO_REPOSITORY,
        requester="promptship-demo",
        auto_merge=True,
        labels=("promptship",),
        deploy=DeployTarget(namespace="demo", deployment="backend", container="backend", health_url=health_url),
    )


def credential_shaped_token() -> str:
    """A GitHub personal access token in its real shape (``ghp_`` + 36 base62 characters), made now: the
    private scenario's secret is never a literal in the repository."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def scenario_request(scenario: Scenario, health_url: str | None, *, secret: str = "") -> DevRequest:
    prompt = scenario.prompt
    if scenario.name == "private":
        prompt = f"{DEMO_PROMPT}. The image registry accepts the deploy token {secret} if the build needs one."
    return DevRequest(
        prompt=prompt,
        repository=scenario.repository,
        requester="promptship-demo",
        auto_merge=True,
        labels=("promptship", f"demo-{scenario.name}"),
        deploy=DeployTarget(namespace=scenario.namespace, health_url=health_url),
    )


def developer_replies(scenario: Scenario, workspace: str) -> list[Any]:
    from promptship_sandbox.agent_server import (
        demo_developer_replies,
        repair_developer_replies,
        rollback_developer_replies,
    )

    if scenario.name == "repair":
        return repair_developer_replies(workspace)
    if scenario.name == "rollback":
        return rollback_developer_replies(workspace)
    return demo_developer_replies(workspace)


def deploy_seed_app(kube: Any, kubeconfig: Path, registry: Path, request: DevRequest, *, llm: dict[str, str]) -> Any:
    """The chat app's backend as it is before the run: its Deployment and Service from examples/chat-app/k8s,
    running the image the forge's CI built from the seed commit."""
    import json

    import yaml
    from kubernetes import client, config

    from promptship.domain.rollout import with_image

    target = request.deploy
    owner, repo = request.repository.split("/", 1)
    builds = sorted((registry / owner / repo / target.container).glob("*.json"))
    if not builds:
        raise ConfigError(f"the forge published no {target.container} image of {request.repository}")
    seed_image = json.loads(builds[0].read_text())["image"]
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target.namespace}})  # type: ignore[arg-type]
    except client.ApiException as exc:
        if exc.status != 409:  # the platform's overlay makes the deployer's namespace (`demo`) itself
            raise
    core.create_namespaced_secret(
        target.namespace,
        {  # type: ignore[arg-type]
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "litellm-secrets"},
            "stringData": llm,
        },
    )
    k8s = REPO_ROOT / "examples" / "chat-app" / "k8s"
    manifests = [
        doc
        for name in ("backend-deployment.yaml", "backend-service.yaml")
        for doc in yaml.safe_load_all((k8s / name).read_text())
        if isinstance(doc, dict)
    ]
    kube.apply_manifests(target, with_image(manifests, target.deployment, target.container, seed_image))
    result = kube.roll_out(target, seed_image, run_key="seed", timeout_s=180)
    if result.verdict != "complete":
        raise ConfigError(f"the seed version of the chat app did not roll out: {result.verdict} {result.reason}")
    return target


_BOUNDARY_WHAT = {
    "llm": "LLM gateway (routing, gate, ledger)",
    "local_model": "local model for non-agent local calls (llama.cpp; not started: the stand-in answers)",
    "agent": "code agent (OpenHands agent-server)",
    "code_host": "code host (GitHub)",
    "cluster": "cluster (Kubernetes)",
    "health": "health probe (HTTP)",
    "sink": "store (SQLAlchemy/SQLite)",
    "compiler": "compile check",
}


def boundary_lines(boundaries: dict[str, str], notes: dict[str, str] | None = None) -> list[str]:
    lines = ["Boundaries of this run (the worker's flow-run processes build each adapter from PROMPTSHIP_*):"]
    notes = notes or {}
    for port in ("llm", "local_model", "agent", "code_host", "cluster", "health", "compiler", "sink"):
        if port == "local_model":  # not a port: what serves the llm port's llama.cpp model group
            kind = "real" if port in notes else "not started"
        else:
            kind = boundaries.get(port, "in-process fake")
        lines.append(f"  {port:<10} {kind:<17} {notes.get(port, _BOUNDARY_WHAT[port])}")
    return lines


def reached_verdicts(report: RunReport) -> bool:
    """True when the run ended on a verdict and every step it took recorded one."""
    return report.outcome in VERDICT_OUTCOMES and all(s.verdict for s in report.steps)


# ---------------------------------------------------------------------------------------------- start-up


@dataclass
class Sandbox:
    """What the demo started, and how long each piece took."""

    settings: Settings
    home: Path
    stack: ExitStack
    echo: Echo
    timings: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)  # seconds after ``began``: the critical path
    began: float = field(default_factory=time.monotonic)
    notes: dict[str, str] = field(default_factory=dict)
    boundaries: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, cm: AbstractContextManager[T]) -> T:
        """Enter ``cm`` now; it is exited (in reverse order) when the demo ends. Thread-safe."""
        value = cm.__enter__()
        with self._lock:
            self.stack.push(cm.__exit__)
        return value

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.took(name, t0)

    def took(self, name: str, since: float) -> None:
        """Record that ``name`` took from ``since`` until now (and when, after the start-up began, it was ready)."""
        now = time.monotonic()
        with self._lock:
            self.timings[name] = now - since
            self.ready_at[name] = now - self.began

    def timing_lines(self) -> list[str]:
        """Each start-up piece: how long it took, and when it was ready (the last one is the critical path)."""
        return [
            f"  start-up: {name:<32} {took:6.1f} s  (ready at {self.ready_at.get(name, took):6.1f} s)"
            for name, took in sorted(self.timings.items(), key=lambda kv: self.ready_at.get(kv[0], kv[1]))
        ]


def _in_thread(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> Future[T]:
    """``fn`` in a worker thread with this thread's context (Prefect's settings live in a contextvar)."""
    ctx = contextvars.copy_context()
    return pool.submit(ctx.run, fn)


def _scenario_list(names: Sequence[str] | None) -> list[Scenario]:
    chosen = list(names or SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise ConfigError(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in dict.fromkeys(chosen)]


@dataclass
class Started:
    server: PrefectServer
    store: Any
    sandbox: Any  # SandboxGateway
    forge: Any
    agent: Any  # AgentServerProcess
    kubeconfig: Path
    health_urls: dict[str, str]
    local_model_url: str | None
    llm_settings: Settings


def start_sandbox(sb: Sandbox, scenarios: list[Scenario], *, serve: bool) -> Started:
    """Start every piece in parallel threads; raise ConfigError naming the piece that cannot start here."""
    from promptship.wiring import build_store

    settings, home = sb.settings, sb.home
    store = build_store(settings)  # with the store's prompt key: the demo seals what it submits

    def prefect() -> PrefectServer:
        t0 = time.monotonic()
        server = sb.enter(running_prefect_server(home / "prefect", ui=serve))
        sb.took("Prefect server (to healthy)", t0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | server.env()
        t0 = time.monotonic()
        register_deployments(server, env, home / "deploy.log")
        sb.took("prefect deploy --all", t0)
        return server

    def llm() -> tuple[Any, Settings, str | None]:
        llm_settings, local_url = settings, None
        from promptship_sandbox.local_model import (
            describe_local_callers,
            local_model_installed,
            local_model_settings,
            running_local_model,
            warm_up,
        )

        ok, why = local_model_installed()
        if ok:
            t0 = time.monotonic()
            server = sb.enter(running_local_model(home / "local-model"))
            warm_up(server)
            sb.took("local model (llama.cpp)", t0)
            llm_settings = local_model_settings(settings, server)
            local_url = server.base_url
            sb.notes["local_model"] = f"{server.describe}; {describe_local_callers()}"
        else:
            sb.echo(f"  local_model: not started ({why}); the stand-in answers the local calls")
        from promptship_sandbox.llm_gateway import running_sandbox_gateway

        gateway = sb.enter(running_sandbox_gateway(llm_settings, engine=store.engine))
        return gateway, llm_settings, local_url

    def forge() -> Any:
        from promptship_sandbox.forge import running_forge

        # the five repositories get one seed commit (one import, the same SHA in each, like forks); reuse_builds:
        # the same files pass once (the seed: tested once, each repository's CI publishing the seed images under
        # its own name; a merge of a tested PR: its tree passed already). Five `make test` of the same files on
        # 2 cores were the start-up's critical path (145-214 s); red results are never reused.
        f = sb.enter(running_forge(home / "forge", ci_workers=3, reuse_builds=True))
        f.seed_repositories([s.repository for s in scenarios], REPO_ROOT / "examples" / "chat-app")
        if not f.wait_idle(600):
            raise ConfigError("the forge's first CI builds took longer than 600 s")
        return f

    def agent() -> Any:
        from promptship_sandbox.agent_server import agent_server_installed, running_agent_server

        ok, why = agent_server_installed()
        if not ok:
            raise ConfigError(why)
        return sb.enter(running_agent_server(home / "openhands"))

    def control_plane() -> Path:
        from promptship_sandbox import cluster as cp_module

        if cp_module.find_binaries() is None:
            raise ConfigError("no control-plane binaries: run `make cluster-build`")
        state = home / "cluster"
        cp = cp_module.start(state, registries=[home / "forge" / "registry"], reuse=False)
        sb.stack.callback(cp_module.stop, state)
        return cp.kubeconfig

    def seed_apps(forge_done: Future[Any], cluster_done: Future[Path], llm_done: Future[Any]) -> dict[str, str]:
        """Each scenario's namespace running the seed backend: as soon as the forge published the seed images,
        the control plane is up and the gateway serves (not after the Prefect server and the agent-server)."""
        from promptship.wiring import build_cluster
        from promptship_sandbox import cluster as cp_module
        from promptship_sandbox.llm_gateway import chat_app_secret

        f, kubeconfig, (gateway, _, _) = forge_done.result(), cluster_done.result(), llm_done.result()
        t0 = time.monotonic()
        live = settings.model_copy(
            update={"kube": settings.kube.model_copy(update={"kubeconfig": kubeconfig, "context": None})}
        )
        kube = build_cluster(live)
        urls: dict[str, str] = {}
        deployed = [s for s in scenarios if s.via == "deployment"]

        def one(s: Scenario) -> None:
            request = scenario_request(s, None)
            deploy_seed_app(kube, kubeconfig, f.registry_dir, request, llm=chat_app_secret(gateway))
            urls[s.name] = cp_module.service_url(kubeconfig, s.namespace, "backend-service", path="/health")

        with ThreadPoolExecutor(max_workers=max(1, len(deployed)), thread_name_prefix="demo-seed") as pool:
            for fut in [pool.submit(one, s) for s in deployed]:
                fut.result()
        sb.took("seed apps on the cluster", t0)
        return urls

    pieces: dict[str, Callable[[], Any]] = {
        "Prefect server + deploy": prefect,
        "LLM stand-in + gateway": llm,
        "forge + seed CI": forge,
        "OpenHands agent-server": agent,
        "Kubernetes control plane": control_plane,
    }
    results: dict[str, Any] = {}
    health_urls: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(pieces) + 1, thread_name_prefix="demo-start") as pool:
        futures: dict[str, Future[Any]] = {
            name: _in_thread(pool, lambda name=name, fn=fn: sb.timed(name, fn)) for name, fn in pieces.items()
        }
        seeded = _in_thread(
            pool,
            lambda: seed_apps(
                futures["forge + seed CI"], futures["Kubernetes control plane"], futures["LLM stand-in + gateway"]
            ),
        )
        for name, fut in futures.items():
            try:
                results[name] = fut.result()
            except Exception as exc:  # a piece that cannot start here: named, and the demo stops
                sb.missing[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            health_urls = seeded.result()
        except Exception as exc:  # named only when the pieces it needs started (else theirs is the reason)
            if not sb.missing:
                sb.missing["seed apps on the cluster"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if sb.missing:
        raise ConfigError("; ".join(f"{k} unavailable ({v})" for k, v in sb.missing.items()))
    gateway, llm_settings, local_url = results["LLM stand-in + gateway"]
    f = results["forge + seed CI"]
    kubeconfig: Path = results["Kubernetes control plane"]
    return Started(
        server=results["Prefect server + deploy"],
        store=store,
        sandbox=gateway,
        forge=f,
        agent=results["OpenHands agent-server"],
        kubeconfig=kubeconfig,
        health_urls=health_urls,
        local_model_url=local_url,
        llm_settings=llm_settings,
    )


# ---------------------------------------------------------------------------------------- the worker side


def worker_environment(sb: Sandbox, st: Started, webhook_secret: str) -> dict[str, str]:
    """The process worker's environment: every port pointed at the sandbox's servers (credentials only here,
    never in a flow parameter), and Prefect pointed at the demo's server."""
    llm = st.llm_settings.llm
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTSHIP_", "PREFECT_API_URL", "PREFECT_HOME"))}
    env.update(st.server.env())
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PROMPTSHIP_HOME": str(sb.home),
            "PROMPTSHIP_DATABASE_URL": sb.settings.store_url(),
            "PROMPTSHIP_GITHUB__API_URL": st.forge.api_url,
            "PROMPTSHIP_GITHUB__TOKEN": st.forge.token,
            "PROMPTSHIP_GITHUB__WEBHOOK_SECRET": webhook_secret,  # CI waits wake on the receiver's events
            "PROMPTSHIP_GITHUB__CI_POLL_INITIAL_S": "0.5",
            "PROMPTSHIP_GITHUB__CI_POLL_MAX_S": "3",
            "PROMPTSHIP_OPENHANDS__URL": st.agent.url,
            "PROMPTSHIP_OPENHANDS__SESSION_API_KEY": st.agent.session_key,
            "PROMPTSHIP_KUBE__KUBECONFIG": str(st.kubeconfig),
            # both providers are the LLM stand-in (as running_sandbox_gateway wires the demo's own gateway)
            "PROMPTSHIP_LLM__OLLAMA_BASE_URL": st.sandbox.llm.base_url,
            "PROMPTSHIP_LLM__OPENROUTER_BASE_URL": st.sandbox.llm.base_url + "/v1",
            "PROMPTSHIP_LLM__OPENROUTER_API_KEY": st.sandbox.openrouter_key,  # made up per demo, OpenRouter's format
            "PROMPTSHIP_LLM__GATEWAY_URL": st.sandbox.url,
            # the demo's bounds: a stalled rollout is judged after 60 s (the manifest's own deadline is 120 s);
            # a request without auto-merge waits 20 s for a person
            "PROMPTSHIP_PIPELINE__ROLLOUT_TIMEOUT_S": "60",
            "PROMPTSHIP_PIPELINE__MERGE_TIMEOUT_S": "20",
            # the demo's runs wait in their processes: its receiver resumes no suspended run (suspending and
            # resuming is tests/flows/test_suspend.py's), and a run suspended for CI would wait for ever here
            "PROMPTSHIP_PIPELINE__SUSPEND_AFTER_S": "0",
        }
    )
    if llm.policy_file is not None:
        env["PROMPTSHIP_LLM__POLICY_FILE"] = str(llm.policy_file)
    if llm.llamacpp_base_url:
        env["PROMPTSHIP_LLM__LLAMACPP_BASE_URL"] = llm.llamacpp_base_url
    return env


def _prefect_cli(args: list[str], env: dict[str, str], log: Path) -> None:
    prefect_bin = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect_bin) if prefect_bin.exists() else "prefect", *args]
    done = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env={**env, "PWD": str(REPO_ROOT), "PREFECT_CLI_WRAP_LINES": "false"},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    with log.open("a") as f:
        f.write(f"$ prefect {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        raise ConfigError(f"`prefect {' '.join(args)}` failed ({done.returncode}); see {log}")


def register_deployments(server: PrefectServer, env: dict[str, str], log: Path) -> None:
    """What a user does once: the process pool, then ``prefect --no-prompt deploy --all`` from prefect.yaml."""
    deploy_from_prefect_yaml(env, log)


def deploy_from_prefect_yaml(env: dict[str, str], log: Path, *, names: Sequence[str] = ()) -> None:
    """The process pool ``local-process`` (made or replaced), then ``prefect --no-prompt deploy`` of prefect.yaml's
    deployments ``names`` (default ``--all``) from the checkout, against the server ``env`` names."""
    _prefect_cli(["work-pool", "create", "local-process", "--type", "process", "--overwrite"], env, log)
    chosen = [arg for name in names for arg in ("--name", name)] or ["--all"]
    _prefect_cli(["--no-prompt", "deploy", *chosen], env, log)


# ------------------------------------------------------------------------------------------ the scenarios


@dataclass
class ScenarioResult:
    scenario: Scenario
    run_key: str | None = None
    report: RunReport | None = None
    flow_run_id: str | None = None
    seconds: float = 0.0
    error: str | None = None
    calls_local: int = 0
    calls_cloud: int = 0
    standin_cloud: int = 0
    standin_local: int = 0
    submitted_at: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.report.outcome if self.report else "failed"

    @property
    def ok(self) -> bool:
        return self.report is not None and self.outcome == self.scenario.expected and reached_verdicts(self.report)


def _wait_report(
    store: Any, run_key: str, timeout_s: float, since: datetime, flow_run_id: Callable[[], str | None]
) -> RunReport | None:
    """The run's report once it is in the store (the flow writes it when it ends); None after ``timeout_s``, or
    30 s after its flow run reached a final state without writing one (crashed)."""
    deadline = time.monotonic() + timeout_s
    ended_without_report: float | None = None
    while time.monotonic() < deadline:
        try:
            report = store.run(run_key)
        except Exception:  # SQLite busy under load: ask again
            report = None
        if report is not None and report.ended_at >= since:
            return report
        if ended_without_report is None and _flow_run_final(flow_run_id()):
            ended_without_report = time.monotonic()
        if ended_without_report is not None and time.monotonic() - ended_without_report > 30:
            return None
        time.sleep(2.0)
    return None


def _flow_run_final(flow_run_id: str | None) -> bool:
    if flow_run_id is None:
        return False
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # the API busy: not known to be final
        return False
    return state is not None and state.is_final()


def submit_by_deployment(store: Any, request: DevRequest) -> str:
    """``run_deployment`` of ``dev-cycle/dev-cycle`` with the request sealed (its prompt kept encrypted in the
    store, Prefect given the redacted form); returns the flow run id at once — the run's end is read from the
    store, where its report lands."""
    from prefect.deployments import run_deployment

    sealed = store.seal(request)
    flow_run = run_deployment("dev-cycle/dev-cycle", parameters={"request": sealed.model_dump(mode="json")}, timeout=0)
    return str(flow_run.id)  # type: ignore[union-attr]


def submit_by_webhook(st: Started, scenario: Scenario, script: Callable[[DevRequest], None]) -> DevRequest:
    """An issue on the forge, then the label: the forge sends the signed ``issues.labeled`` delivery to the
    receiver, which emits the Prefect event the ``github-event`` trigger turns into a run."""
    from promptship_sandbox.forge import forge_github

    gh = forge_github(st.forge)
    repo = gh.get_repo(scenario.repository)
    title = "Add a GET /version endpoint"
    body = "It should return the deployed commit SHA, so that we can tell which build answers."
    issue = repo.create_issue(title=title, body=body)
    # what the receiver will build from this delivery (domain.webhooks.decide): its request key names the branch
    request = DevRequest(
        prompt=f"{title}\n\n{body}", repository=scenario.repository, issue_number=issue.number, requester="demo"
    )
    script(request)
    # as a maintainer does in the UI: POST .../labels {"labels": [...]} (the object form of the REST body)
    labeled = httpx.post(
        f"{st.forge.api_url}/repos/{scenario.repository}/issues/{issue.number}/labels",
        json={"labels": [WEBHOOK_LABEL]},
        headers={"Authorization": f"token {st.forge.token}", "Accept": "application/vnd.github+json"},
        timeout=30,
    )
    labeled.raise_for_status()
    return request


def run_scenarios(sb: Sandbox, st: Started, scenarios: list[Scenario], echo: Echo, secret: str) -> list[ScenarioResult]:
    results = {s.name: ScenarioResult(s) for s in scenarios}
    workspace_root = sb.settings.workspace_root()

    def script(s: Scenario, request: DevRequest) -> None:
        key = request.run_key
        st.sandbox.llm.script_conversation(branch_for(key), developer_replies(s, str(workspace_root / key)))

    def one(s: Scenario) -> None:
        r = results[s.name]
        t0 = time.monotonic()
        since = r.submitted_at = datetime.now(UTC)
        try:
            if s.via == "webhook":
                request = submit_by_webhook(st, s, lambda req: script(s, req))
            else:
                request = scenario_request(s, st.health_urls[s.name], secret=secret)
                script(s, request)
                r.flow_run_id = submit_by_deployment(st.store, request)
            r.run_key = request.run_key
            r.report = _wait_report(st.store, request.run_key, RUN_TIMEOUT_S, since, lambda: r.flow_run_id)
            if r.report is None:
                r.error = "no report in the store"
            elif r.report.flow_run_id:
                r.flow_run_id = r.report.flow_run_id
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        r.seconds = time.monotonic() - t0
        echo(f"  [{s.name}] {r.outcome} after {r.seconds:.0f} s" + (f" ({r.error})" if r.error else ""))

    echo(f"Submitting {len(scenarios)} scenario(s): " + ", ".join(f"{s.name} (via {s.via})" for s in scenarios))
    # daemon threads: on Ctrl-C the demo stops what it started without waiting for the runs' threads
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(one, s), name=f"demo-{s.name}", daemon=True)
        for s in scenarios
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    for r in results.values():
        _count_calls(st, r, secret)
        if r.scenario.name == "private" and r.run_key:
            r.notes.append(_forget_private_conversation(st, r.run_key, secret))
            r.notes.append(_private_names(st, r, secret))
    return list(results.values())


def _private_names(st: Started, r: ScenarioResult, secret: str) -> str:
    """What the outside sees of the private run: its PR title on the forge, its flow run's name and parameters in
    Prefect (the UI shows both; the demo submitted the sealed request, so the parameter holds the redacted prompt)."""
    import json
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from promptship_sandbox.forge import forge_github

    title = run_name = parameters = "?"
    try:
        if r.report is not None and r.report.pr_url:
            number = int(r.report.pr_url.rstrip("/").rsplit("/", 1)[-1])
            title = forge_github(st.forge).get_repo(r.scenario.repository).get_pull(number).title
        if r.flow_run_id:
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(UUID(r.flow_run_id))
            run_name, parameters = flow_run.name, json.dumps(flow_run.parameters)
    except Exception as exc:  # reported, not fatal: the other checks stand
        return f"PR title / run name not read: {type(exc).__name__}"
    leaked = [where for where, text in (("PR title", title), ("run name", run_name), ("parameters", parameters))
              if secret in text]  # fmt: skip
    if leaked:
        r.error = f"the credential is in the {', '.join(leaked)}"
    return (
        f"PR title: {title!r}; flow run name: {run_name!r}; the credential in the PR title, the run name or the "
        f"flow run's parameters: {bool(leaked)}"
    )


def _forget_private_conversation(st: Started, run_key: str, secret: str) -> str:
    """The agent-server saved the private run's conversation (it had to get the raw prompt to work): once the
    run is over, delete it through the agent-server's API, then look for the credential in its state."""
    from pydantic import SecretStr

    from promptship.adapters.openhands import OpenHandsAgent
    from promptship.domain.request import conversation_id_for
    from promptship.domain.results import AgentHandle

    with httpx.Client(base_url=st.agent.url, timeout=30) as http:
        agent = OpenHandsAgent(http, session_api_key=SecretStr(st.agent.session_key))
        agent.cancel(AgentHandle(conversation_id=conversation_id_for(run_key), created=False))
    needle = secret.encode()
    holding = []
    for path in Path(st.agent.state_dir).rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                holding.append(path)
        except OSError:
            continue
    for path in holding:  # what the deletion left behind (e.g. a log line)
        path.unlink(missing_ok=True)
    return (
        f"Agent-server state: the private run's conversation deleted; files still holding the credential "
        f"after that: {len(holding)}" + (" (removed)" if holding else "")
    )


def _count_calls(st: Started, r: ScenarioResult, secret: str) -> None:
    """Calls of this run: from the ledger (every LLM call promptship made, by mode) and from the LLM stand-in's
    request log (the agent's calls, found by the run's branch; the cloud endpoint is OpenAI-style with a
    ``vendor/model`` name)."""
    from sqlalchemy import func, select

    from promptship.store.ledger import LLMCallRow
    from promptship_sandbox.llm_server import is_cloud_model

    if r.report is not None and r.report.attempt_id:
        with st.store.engine.connect() as conn:
            rows = conn.execute(
                select(LLMCallRow.mode, func.count())
                .where(LLMCallRow.run_key == r.report.attempt_id)
                .group_by(LLMCallRow.mode)
            ).all()
        counts = {str(mode): int(n) for mode, n in rows}
        r.calls_local, r.calls_cloud = counts.get("local", 0), counts.get("cloud", 0)
    if r.run_key is None:
        return
    marker = branch_for(r.run_key)
    for req in st.sandbox.llm.completions():
        if not req.contains(marker) and not (r.scenario.name == "private" and req.contains(secret)):
            continue
        cloud = req.path != "/api/chat" and is_cloud_model(req.model or "")
        if cloud:
            r.standin_cloud += 1
        else:
            r.standin_local += 1
    if r.scenario.name == "private":
        leaked = [req for req in st.sandbox.llm.completions() if req.contains(secret) and req.path != "/api/chat"]
        leaked = [req for req in leaked if is_cloud_model(req.model or "")]
        r.notes.append(
            f"LLM stand-in log: {r.standin_local} local request(s) of this run, {r.standin_cloud} to the cloud "
            f"endpoint; requests holding the credential at the cloud endpoint: {len(leaked)}"
        )
        if r.standin_cloud or leaked or r.calls_cloud:
            r.error = "a call of the private run reached the cloud endpoint"
        if r.report is not None:
            shown = [r.report.prompt_redacted, *(s.detail.get("title") or "" for s in r.report.steps)]
            if any(secret in str(text) for text in shown):
                r.error = "the credential is in the report"


# ---------------------------------------------------------------------------------------------- reporting


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def scenario_time_lines(results: list[ScenarioResult], top: int = 6) -> list[str]:
    """Per scenario: from its submission to its flow's first step (worker pick-up, flow-run process start), then
    its longest steps (rounds added up), longest first."""
    lines = []
    for r in results:
        rep = r.report
        if rep is None or not rep.steps:
            lines.append(f"  {r.scenario.name} {r.seconds:.0f} s: no report")
            continue
        by_name: dict[str, list[float]] = {}
        for step in rep.steps:
            by_name.setdefault(step.name or step.step.split("#", 1)[0], []).append(step.seconds)
        first = min(step.started_at for step in rep.steps)
        first = first if first.tzinfo else first.replace(tzinfo=UTC)  # SQLite keeps no zone; the store writes UTC
        parts = []
        if r.submitted_at is not None:
            parts.append(f"to the first step {(first - r.submitted_at).total_seconds():.0f} s")
        longest = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]
        parts += [
            f"{name} {sum(times):.0f} s" + (f" ({len(times)}x)" if len(times) > 1 else "") for name, times in longest
        ]
        lines.append(f"  {r.scenario.name} {r.seconds:.0f} s: " + ", ".join(parts))
    return lines


def ci_time_line(ci_runs: Sequence[Any]) -> str:
    """The forge's CI over the whole demo: builds, how many ran `make test` and how long those took."""
    tested = [b.seconds for b in ci_runs if not b.reused_from]
    reused = len(ci_runs) - len(tested)
    spread = f", make test {min(tested):.0f}-{max(tested):.0f} s each, {sum(tested):.0f} s in all" if tested else ""
    return (
        f"  forge CI: {len(ci_runs)} builds, {len(tested)} ran make test, {reused} reused a pass of the same "
        f"files{spread}"
    )


def summary_lines(results: list[ScenarioResult]) -> list[str]:
    lines = [
        "| scenario | expected | outcome | PR | repair rounds | time to restore | calls local/cloud | cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rep = r.report
        repairs = sum(1 for s in rep.steps if s.name == "repair") if rep else 0
        restore = next((f"{s.seconds:.1f} s" for s in rep.steps if s.name == "rollback"), "—") if rep else "—"
        pr = (rep.pr_url or "—") if rep else "—"
        cost = f"${rep.total_cost_usd:.4f}" if rep else "—"
        lines.append(
            f"| {r.scenario.name} | {r.scenario.expected} | {r.outcome} | {pr} | {repairs} | {restore} | "
            f"{r.calls_local}/{r.calls_cloud} | {cost} |"
        )
    return lines


def machine_lines(results: list[ScenarioResult]) -> list[str]:
    return [f"scenario={r.scenario.name} expected={r.scenario.expected} outcome={r.outcome}" for r in results]


def _scenario_story(r: ScenarioResult, st: Started, echo: Echo) -> None:
    from promptship.domain.report import render_markdown

    echo(f"## Scenario {r.scenario.name}: {r.scenario.proves}")
    if r.report is None:
        echo(f"No report: {r.error}")
        return
    echo(render_markdown(r.report))
    health = st.health_urls.get(r.scenario.name)
    if health and r.report.outcome in ("deployed", "rolled_back"):
        version_url = health.rsplit("/health", 1)[0] + "/version"
        try:
            answer = httpx.get(version_url, timeout=5)
            echo(f"GET {version_url} -> {answer.status_code} {answer.text.strip()[:300]}")
        except httpx.HTTPError as exc:
            echo(f"GET {version_url} failed: {type(exc).__name__}")
    if r.scenario.name == "rollback":
        if r.report.revert_pr_url:
            echo(f"Revert PR: {r.report.revert_pr_url} ({r.report.revert_state})")
        else:
            r.error = r.error or "no revert PR was written back"
    for note in r.notes:
        echo(note)
    every = "every" if reached_verdicts(r.report) else "NOT every"
    echo(f"[{r.scenario.name}] Outcome: {r.outcome} — {every} step reached a verdict")


def run_demo(
    *,
    serve: bool = False,
    echo: Echo = print,
    wait: Callable[[], None] | None = None,
    scenarios: Sequence[str] | None = None,
) -> int:
    """Run the demo's scenarios (all five by default); return the process exit code: 0 only when each reached
    its expected outcome with every boundary real (or a protocol stand-in), 1 otherwise, 2 when the sandbox
    cannot start here."""
    chosen = _scenario_list(scenarios)
    base = Settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    home = (base.home / "demo" / stamp).resolve()
    # servers, checkouts and the cluster live under a fresh directory per demo; the store is the project's one
    # store (``$PROMPTSHIP_HOME/promptship.db``), so `promptship kpis` sees every demo run afterwards
    settings = base.model_copy(update={"home": home, "database_url": base.store_url()})
    echo(f"promptship demo: state under {home}, store {base.store_url()}")
    echo(f"Scenarios: {', '.join(s.name for s in chosen)}")
    t_start = time.monotonic()
    with ExitStack() as stack:
        sb = Sandbox(settings=settings, home=home, stack=stack, echo=echo)
        echo("Starting the sandbox (in parallel):")
        try:
            st = start_sandbox(sb, chosen, serve=serve)
        except ConfigError as exc:
            for name, why in sb.missing.items() or {"sandbox": str(exc)}.items():
                echo(f"  {name}: unavailable — {why}")
            echo(
                "The scenarios need every piece: a worker's flow runs use the real adapters only, so nothing "
                "falls back to an in-process fake. Install what is missing (`make prereqs`)."
            )
            return 2
        server = st.server
        healthy = sb.timings["Prefect server (to healthy)"]
        echo(f"Prefect server (SQLite) on {server.url}, healthy after {healthy:.1f} s, pid {server.process.pid}")
        for line in sb.timing_lines():
            echo(line)
        stack.enter_context(using_prefect(server))
        sb.boundaries.update(
            {
                "llm": "protocol stand-in",
                "code_host": "protocol stand-in",
                "agent": "real",
                "cluster": "real",
                "health": "real",
                "compiler": "real",
                "sink": "real",
            }
        )
        local = " + llama.cpp (real, local callers)" if "local_model" in sb.notes else ""
        sb.notes.update(
            {
                "llm": "real LiteLLMGateway + gateway service -> LLM stand-in (OpenAI/Ollama protocols)" + local,
                "code_host": f"GitHubHost (PyGithub, git) -> local forge {st.forge.web_url} (REST + git + CI)",
                "agent": f"OpenHandsAgent -> OpenHands agent-server 1.57 at {st.agent.url} (its LLM: scripted "
                "stand-in via the gateway — the 135M local model cannot drive tool calls)",
                "cluster": "KubeCluster -> kube-apiserver/controller-manager/scheduler v1.20 (sandbox kubelet)",
                "health": "HttpHealthProbe -> "
                + ", ".join(st.health_urls.values())
                + " (the backend via the Service proxy)",
            }
        )
        webhook_secret = secrets.token_urlsafe(24)
        env = worker_environment(sb, st, webhook_secret)
        echo(
            "Deployments (prefect --no-prompt deploy --all, prefect.yaml): dev-cycle, demo, github-event, "
            "kpi-report on work pool local-process"
        )
        worker = stack.enter_context(running_worker(st.server, REPO_ROOT, home / "worker.log", env=env, inherit=False))
        echo(f"Worker: `promptship worker --pool local-process`, pid {worker.pid}, log {home / 'worker.log'}")
        # always: the forge's CI events reach the flow runs' CI waits through it (PROMPTSHIP_GITHUB__WEBHOOK_SECRET
        # makes them wait on those wake-ups); the webhook scenario's delivery goes through it too
        url = _start_receiver(sb, st, webhook_secret, chosen)
        echo(f"Webhook receiver on {url}/github/webhook (starter: Prefect event -> github-event trigger)")
        for line in boundary_lines(sb.boundaries, sb.notes):
            echo(line)

        t_runs = time.monotonic()
        results = run_scenarios(sb, st, chosen, echo, secret=credential_shaped_token())
        runs_wall = time.monotonic() - t_runs
        echo("")
        for r in results:
            _scenario_story(r, st, echo)
            echo("")
        for line in boundary_lines(sb.boundaries, sb.notes):
            echo(line)
        _publish_kpis(echo)
        echo("")
        echo(f"Where the time went (load average {_load()}):")
        last = max(sb.ready_at, key=sb.ready_at.__getitem__, default="-")
        echo(f"  start-up {sb.ready_at.get(last, 0.0):.0f} s, the last piece ready: {last}")
        for line in sb.timing_lines():
            echo(line)
        for line in scenario_time_lines(results):
            echo(line)
        echo(ci_time_line(st.forge.ci_runs))
        echo(
            "  scenario wall: "
            + ", ".join(f"{r.scenario.name} {r.seconds:.0f} s" for r in results)
            + f"; all scenarios {runs_wall:.0f} s; demo total {time.monotonic() - t_start:.0f} s"
        )
        echo("")
        for line in summary_lines(results):
            echo(line)
        for r in results:
            if r.error:
                echo(f"{r.scenario.name}: {r.error}")
        for line in machine_lines(results):
            echo(line)
        ok = all(r.ok and not r.error for r in results)
        if len(results) == 1:
            r = results[0]
            echo(
                f"Outcome: {r.outcome} — {'every' if r.report and reached_verdicts(r.report) else 'NOT every'} "
                "step reached a verdict"
            )
        if serve:
            echo(f"Prefect UI: {server.url}")
            echo(
                f"  deployments: {server.url}/deployments   runs: {server.url}/runs   artifacts: {server.url}/artifacts"
            )
            for r in results:
                if r.flow_run_id:
                    echo(f"  {r.scenario.name}: {server.url}/runs/flow-run/{r.flow_run_id}")
            echo("Ctrl-C stops everything.")
            (wait or _wait_forever)()
        return 0 if ok else 1


class _InContext:
    """A ``Starter`` that starts in the context it was made in: the receiver's threads do not inherit the
    demo's Prefect settings (a contextvar), so the event would otherwise find no PREFECT_API_URL."""

    def __init__(self, starter: Any):
        self._starter = starter
        self._context = contextvars.copy_context()

    def start(self, trigger: Any) -> str:
        return self._context.copy().run(self._starter.start, trigger)


def _start_receiver(sb: Sandbox, st: Started, secret: str, scenarios: list[Scenario]) -> str:
    """The real webhook receiver on 127.0.0.1 with its Prefect event starter; the forge sends it every event."""
    from pydantic import SecretStr

    from promptship.servers.webhook import PrefectEventStarter, create_app, running_asgi
    from promptship.store.webhooks import StoreCIWakeups, WebhookDeliveries

    gh = sb.settings.github.model_copy(
        update={
            "webhook_secret": SecretStr(secret),
            "allowed_repositories": [s.repository for s in scenarios],
            "trigger_label": WEBHOOK_LABEL,
        }
    )
    settings = sb.settings.model_copy(update={"github": gh})
    app = create_app(
        settings,
        _InContext(PrefectEventStarter()),
        deliveries=WebhookDeliveries(st.store.engine),
        wakeups=StoreCIWakeups(st.store.engine),
    )
    url = sb.enter(running_asgi(app))
    st.forge.configure_webhook(f"{url}/github/webhook", secret)
    return url


def _publish_kpis(echo: Echo) -> None:
    """Run the ``kpi-report`` flow on the demo's server: the KPI artifact with its charts, and a summary."""
    from flows.kpi_report import kpi_report

    kpis = kpi_report(days=30)
    go = ", ".join(f"{name} {t['verdict']}" for name, t in kpis["go_no_go"].items())
    echo(
        f"KPIs (artifact 'promptship-kpis', 2 charts): runs {kpis['runs']}, compile rate {kpis['compile_rate']}, "
        f"deploy success {kpis['deploy_success_rate']}, cloud cost today ${kpis['cloud_cost_today']:.4f}; "
        f"go/no-go: {go}. `promptship kpis --json` prints them all."
    )


def _wait_forever() -> None:
    """Until SIGINT or SIGTERM (see ``wait_until_stopped``: a background job inherits SIGINT ignored)."""
    wait_until_stopped(interval_s=1.0)
