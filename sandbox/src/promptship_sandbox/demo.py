"""The embedded default: one whole dev cycle on 127.0.0.1, with nothing to configure.

``promptship demo`` starts a Prefect server (SQLite, its own PREFECT_HOME), builds the sandbox's services,
runs the ``dev-cycle`` flow once in this process on the demo repository, prints the report and the kind of
every boundary (``real``, ``protocol stand-in``, ``in-process fake``), and stops what it started, by PID.
The Prefect server comes from ``promptship_sandbox.prefect_server``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from promptship.domain.report import RunReport
from promptship.domain.request import DeployTarget, DevRequest
from promptship.errors import ConfigError
from promptship.settings import Settings
from promptship.wiring import Ports
from promptship_sandbox.prefect_server import running_prefect_server, using_prefect

DEMO_PROMPT = "Add a GET /version endpoint that returns the deployed commit SHA"
DEMO_REPOSITORY = "demo/chat-app"
# Outcomes that are verdicts the pipeline reached on purpose; "failed" and "cancelled" are not.
VERDICT_OUTCOMES = ("deployed", "rolled_back", "stopped", "waiting", "already_done")

Echo = Callable[[str], None]


def demo_request(health_url: str | None = None) -> DevRequest:
    return DevRequest(
        prompt=DEMO_PROMPT,
        repository=DEMO_REPOSITORY,
        requester="promptship-demo",
        auto_merge=True,
        labels=("promptship",),
        deploy=DeployTarget(namespace="demo", deployment="backend", container="backend", health_url=health_url),
    )


def build_demo_services(
    settings: Settings, stack: ExitStack, echo: Echo, request: DevRequest
) -> tuple[Ports, str | None, dict[str, str]]:
    """The sandbox's services, the best available per port; returns them, the health URL to use, and a note
    per port saying what is behind it.

    Each port gets its real adapter against a local stand-in that speaks the real protocol when that stand-in
    can start here; otherwise the in-process fake, and the boundary list says so.
    """
    from promptship.store import Store
    from promptship_sandbox.fakes import fake_services

    services = fake_services(settings)
    store = services.sink
    assert isinstance(store, Store)
    health_url: str | None = "http://127.0.0.1:9/health"  # only the fake probe ever sees this one
    notes: dict[str, str] = {}
    home = settings.home

    def attempt(port: str, what: str, fn: Callable[[], None]) -> bool:
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:  # a stand-in that cannot start here leaves the fake in place, said aloud
            echo(f"  {port}: {what} unavailable ({type(exc).__name__}: {str(exc)[:200]}) -> in-process fake")
            return False
        echo(f"  {port}: {what} ready in {time.monotonic() - t0:.1f} s")
        return True

    sandbox: Any = None
    llm_settings = settings

    def local_model() -> None:
        nonlocal llm_settings
        from promptship_sandbox.local_model import (
            local_model_installed,
            local_model_settings,
            running_local_model,
            warm_up,
        )

        ok, why = local_model_installed()
        if not ok:
            raise ConfigError(why)
        server = stack.enter_context(running_local_model(home / "local-model"))
        warm_up(server)
        llm_settings = local_model_settings(settings, server)
        notes["local_model"] = (
            f"{server.describe}; takes the local calls of open_pull_request (PR text of sensitive requests)"
        )

    def llm() -> None:
        nonlocal sandbox
        from promptship_sandbox.llm_gateway import running_sandbox_gateway

        sandbox = stack.enter_context(running_sandbox_gateway(llm_settings, engine=store.engine))
        services.llm = sandbox.gateway
        services.boundaries["llm"] = "protocol stand-in"
        local = " + llama.cpp (real, local callers)" if "local_model" in notes else ""
        notes["llm"] = f"real LiteLLMGateway + gateway service -> LLM stand-in (OpenAI/Ollama protocols){local}"

    forge: Any = None

    def code_host() -> None:
        nonlocal forge
        from promptship_sandbox.forge import demo_code_host, running_forge

        forge = stack.enter_context(running_forge(home / "forge"))
        services.code_host = demo_code_host(forge, repository=request.repository)
        services.boundaries["code_host"] = "protocol stand-in"
        notes["code_host"] = "GitHubHost (PyGithub, git) -> local forge (GitHub REST + smart-HTTP git + CI)"

    def compiler() -> None:
        from promptship.wiring import build_compile_checker

        services.compiler = build_compile_checker(settings)
        services.boundaries["compiler"] = "real"

    def agent() -> None:
        import httpx
        from pydantic import SecretStr

        from promptship.adapters.openhands import OpenHandsAgent
        from promptship_sandbox.agent_server import agent_server_installed, demo_developer_replies, running_agent_server

        ok, why = agent_server_installed()
        if not ok:
            raise ConfigError(why)
        if sandbox is None or forge is None:
            raise ConfigError("the agent needs the LLM stand-in and the forge's checkout")
        server = stack.enter_context(running_agent_server(home / "openhands"))
        http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
        services.agent = OpenHandsAgent(http, session_api_key=SecretStr(server.session_key))
        sandbox.llm.script("*", demo_developer_replies(str(settings.workspace_root() / request.run_key)))
        services.boundaries["agent"] = "real"  # the agent-server itself; its LLM is the scripted stand-in
        notes["agent"] = (
            "OpenHands agent-server 1.57 (its LLM: scripted stand-in via the gateway — the 135M local model "
            "cannot drive tool calls)"
        )

    def cluster() -> None:
        nonlocal health_url
        from promptship_sandbox import cluster as control_plane

        if forge is None:
            raise ConfigError("the sandbox kubelet runs the images the local forge's CI publishes")
        if control_plane.find_binaries() is None:
            raise ConfigError("no control-plane binaries: run `make cluster-build`")
        state = home / "cluster"
        registry = Path(forge.root) / "registry"
        cp = control_plane.start(state, registries=[registry], reuse=False)
        stack.callback(control_plane.stop, state)
        kube_settings = settings.kube.model_copy(update={"kubeconfig": cp.kubeconfig, "context": None})
        live = settings.model_copy(update={"kube": kube_settings})
        from promptship.wiring import build_cluster, build_health_probe

        kube = build_cluster(live)
        target = _deploy_seed_app(kube, cp.kubeconfig, registry, request, sandbox_llm_url=_llm_url(sandbox))
        health_url = control_plane.service_url(cp.kubeconfig, target.namespace, "backend-service", path="/health")
        services.settings = live
        services.cluster = kube
        services.health = build_health_probe(live)
        services.boundaries["cluster"] = "real"
        services.boundaries["health"] = "real"
        notes["cluster"] = "KubeCluster -> kube-apiserver/controller-manager/scheduler v1.20 (sandbox kubelet)"
        notes["health"] = f"HttpHealthProbe -> {health_url} (the backend process via the Service proxy)"

    echo("Starting the sandbox:")
    attempt("local_model", "llama.cpp server + SmolLM2-135M-Instruct", local_model)
    attempt("llm", "LLM stand-in + LiteLLMGateway + gateway service", llm)
    attempt("code_host", "local forge (REST + git + CI) + GitHubHost (PyGithub)", code_host)
    attempt("compiler", "WorkspaceCompileChecker", compiler)
    attempt("agent", "OpenHands agent-server + OpenHandsAgent", agent)
    attempt("cluster", "Kubernetes control plane (v1.20) + sandbox kubelet + KubeCluster/HttpHealthProbe", cluster)
    return services, health_url, notes


def _llm_url(sandbox: Any) -> str:
    return (sandbox.llm.base_url + "/v1") if sandbox is not None else "http://127.0.0.1:9/v1"


def _deploy_seed_app(kube: Any, kubeconfig: Path, registry: Path, request: DevRequest, *, sandbox_llm_url: str) -> Any:
    """The chat app's backend as it is before the run: its Deployment and Service from examples/chat-app/k8s,
    running the image the forge's CI built from the seed commit."""
    import json

    import yaml
    from kubernetes import client, config

    target = request.deploy
    owner, repo = request.repository.split("/", 1)
    builds = sorted((registry / owner / repo / target.container).glob("*.json"))
    if not builds:
        raise ConfigError(f"the forge published no {target.container} image of {request.repository}")
    seed_image = json.loads(builds[0].read_text())["image"]
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target.namespace}})  # type: ignore[arg-type]
    core.create_namespaced_secret(
        target.namespace,
        {  # type: ignore[arg-type]
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "litellm-secrets"},
            "stringData": {"LLM_API_BASE": sandbox_llm_url, "LLM_API_KEY": "sandbox-key"},
        },
    )
    k8s = Path(__file__).resolve().parents[3] / "examples" / "chat-app" / "k8s"
    manifests = [
        doc
        for name in ("backend-deployment.yaml", "backend-service.yaml")
        for doc in yaml.safe_load_all((k8s / name).read_text())
        if isinstance(doc, dict)
    ]
    kube.apply_manifests(target, manifests)
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


def boundary_lines(services: Ports, notes: dict[str, str] | None = None) -> list[str]:
    lines = ["Boundaries of this run:"]
    notes = notes or {}
    for port in ("llm", "local_model", "agent", "code_host", "cluster", "health", "compiler", "sink"):
        if port == "local_model":  # not a port: what serves the llm port's llama.cpp model group
            kind = "real" if port in notes else "not started"
        else:
            kind = services.boundaries.get(port, "in-process fake")
        lines.append(f"  {port:<10} {kind:<17} {notes.get(port, _BOUNDARY_WHAT[port])}")
    return lines


def reached_verdicts(report: RunReport) -> bool:
    """True when the run ended on a verdict and every step it took recorded one."""
    return report.outcome in VERDICT_OUTCOMES and all(s.verdict for s in report.steps)


def run_demo(*, serve: bool = False, echo: Echo = print, wait: Callable[[], None] | None = None) -> int:
    """Run the demo; return the process exit code (0 only when every step reached a verdict)."""
    base = Settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    home = (base.home / "demo" / stamp).resolve()
    # servers, checkouts and the cluster live under a fresh directory per demo; the store is the project's one
    # store (``$PROMPTSHIP_HOME/promptship.db``), so `promptship kpis` sees every demo run afterwards
    settings = base.model_copy(update={"home": home, "database_url": base.store_url()})
    echo(f"promptship demo: state under {home}, store {base.store_url()}")
    with ExitStack() as stack:
        t0 = time.monotonic()
        server = stack.enter_context(running_prefect_server(home / "prefect", ui=serve))
        took = time.monotonic() - t0
        echo(f"Prefect server (SQLite) on {server.url}, healthy after {took:.1f} s, pid {server.process.pid}")
        stack.enter_context(using_prefect(server))
        request = demo_request()
        services, health_url, notes = build_demo_services(settings, stack, echo, request)
        request = request.model_copy(update={"deploy": request.deploy.model_copy(update={"health_url": health_url})})
        for line in boundary_lines(services, notes):
            echo(line)

        from flows.dev_cycle import dev_cycle
        from promptship.domain.report import render_markdown
        from promptship.wiring import installed

        echo(f"Request: {request.prompt!r} on {request.repository} (run key {request.run_key})")
        with installed(services):
            state = dev_cycle(request, return_state=True)
        report = state.result() if state.is_completed() else _stored_report(services, request.run_key)
        echo("")
        if report is None:
            echo(f"The run ended {state.name} without a report: {state.message}")
            return 1
        echo(render_markdown(report))
        if services.boundaries.get("health") == "real" and health_url and report.outcome == "deployed":
            version_url = health_url.rsplit("/health", 1)[0] + "/version"
            try:
                answer = httpx.get(version_url, timeout=5)
                echo(f"GET {version_url} -> {answer.status_code} {answer.text.strip()[:300]}")
            except httpx.HTTPError as exc:
                echo(f"GET {version_url} failed: {type(exc).__name__}")
        for line in boundary_lines(services, notes):
            echo(line)
        _publish_kpis(echo)
        ok = reached_verdicts(report)
        echo(f"Outcome: {report.outcome} — {'every' if ok else 'NOT every'} step reached a verdict")
        if serve:
            echo(f"Prefect UI: {server.url}  (flow run {report.flow_run_id}); Ctrl-C stops the server.")
            (wait or _wait_forever)()
        return 0 if ok else 1


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


def _stored_report(services: Ports, run_key: str) -> RunReport | None:
    from promptship.store import Store

    return services.sink.run(run_key) if isinstance(services.sink, Store) else None


def _wait_forever() -> None:
    """Until SIGINT or SIGTERM. Handlers are set explicitly: a shell's background job inherits SIGINT ignored,
    and Python's default SIGTERM would exit without stopping what the demo started."""
    import threading

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
