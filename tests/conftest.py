"""Shared test setup.

- The environment is cleaned for every test: no real credentials or endpoints leak in.
- ``require(name, ok, why)``: a missing prerequisite skips locally, but fails when CI=true.
- One session-wide Prefect test harness (``prefect_harness``), started only by the tests that need it; one
  real local model (``local_model``) likewise.
- The servers a session shares in the background (``SHARED_SERVERS``: the control plane, PostgreSQL, the local
  model) run from their first user to their last: the modules that use one run together, behind the others
  (each module whole, in its order), and the server is stopped by its PID as soon as its last user ends — so
  the tests that start servers of their own (the demo, the kill campaign) do not share the two cores with them.
- At the end, pass/fail/skip counts per marker.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_SCRUB_PREFIXES = ("PROMPTSHIP_", "OPENROUTER_", "OPENAI_", "ANTHROPIC_", "GITHUB_", "GH_", "OLLAMA_", "KUBECONFIG")


def require(name: str, ok: bool, why: str = "") -> None:
    """Skip (locally) or fail (CI=true) when a prerequisite is missing."""
    if ok:
        return
    message = f"prerequisite {name} missing{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(message + " (CI=true: missing prerequisites fail the run)", pytrace=False)
    pytest.skip(message)


# Session fixtures that keep a server running in the background, in the order their users are grouped (the
# control plane's idle loops cost the most CPU — ~9 % of a core measured — so its users run last).
SHARED_SERVERS = ("local_model", "postgres", "control_plane")
# Stopped after their last user too; their users are one directory's modules, together already.
_STOPPED_EARLY = (*SHARED_SERVERS, "platform_kubeconfig", "agent_server")
_stops: dict[str, ExitStack] = {}  # what stops each running shared server
_last_user: dict[str, str] = {}  # shared server -> node id of the last selected test that needs it


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(str(item.path), []).append(item)

    def needs(module: list[pytest.Item]) -> tuple[bool, ...]:
        return tuple(any(name in item.fixturenames for item in module) for name in reversed(SHARED_SERVERS))

    items[:] = [item for module in sorted(modules.values(), key=needs) for item in module]  # stable: in order
    _last_user.clear()
    for item in items:
        for name in _STOPPED_EARLY:
            if name in item.fixturenames:
                _last_user[name] = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    for name, last in _last_user.items():
        if last == item.nodeid and name in _stops:
            _stops.pop(name).close()  # its last user is done: stop it now, not at the session's end


def shared_server(name: str) -> ExitStack:
    """The stack the session fixture ``name`` enters its server on (``with shared_server(name) as stack:``),
    closed after the last test that needs it, or at the session's end."""
    stack = _stops[name] = ExitStack()
    return stack


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real credential or endpoint from the developer's shell reaches a test."""
    for key in list(os.environ):
        if key.startswith(_SCRUB_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PROMPTSHIP_HOME", str(tmp_path / "promptship-home"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a real temporary server with SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One throw-away PostgreSQL server (Debian's binaries, 127.0.0.1) for the session; stopped by its PID."""
    from promptship_sandbox.postgres import postgres_installed, running_postgres

    ok, why = postgres_installed()
    require("PostgreSQL", ok, why)
    with shared_server("postgres") as stack:
        yield stack.enter_context(running_postgres(tmp_path_factory.mktemp("postgres")))


@pytest.fixture
def postgres_url(postgres: Any) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real local model (llama.cpp + SmolLM2-135M, ``promptship_sandbox.local_model``), started once per
    session for every ``localmodel`` test and stopped by its PID at the end."""
    from promptship_sandbox.local_model import local_model_installed, running_local_model, warm_up

    ok, why = local_model_installed()
    require("local model", ok, why)
    with shared_server("local_model") as stack:
        server = stack.enter_context(running_local_model(tmp_path_factory.mktemp("local-model")))
        warm_up(server)
        yield server


@pytest.fixture(scope="session")
def app_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Sample apps published into a registry the sandbox kubelet reads (``promptship_sandbox.sample_app``)."""
    from promptship_sandbox.sample_app import SampleApps

    return SampleApps(tmp_path_factory.mktemp("apps"))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, app_registry: Any) -> Iterator[Any]:
    """One local control plane (etcd, apiserver, controller-manager, scheduler, sandbox kubelet) per session."""
    from promptship_sandbox import cluster

    bin_dir = cluster.find_binaries()
    require("control plane", bin_dir is not None, "no kube binaries or etcd: run `make cluster-build`")
    state = tmp_path_factory.mktemp("cluster")
    with shared_server("control_plane") as stack:
        stack.callback(cluster.stop, state)
        yield cluster.start(state, bin_dir=bin_dir, registries=[app_registry.registry], reuse=False)


@pytest.fixture
def api_client(control_plane: Any) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards)."""
    import uuid

    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})  # type: ignore[arg-type]
    yield name
    core.delete_namespace(name)


_outcomes: dict[str, Counter[str]] = defaultdict(Counter)
_BUILTIN_MARKERS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings", "asyncio", "timeout"}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed"
        markers = getattr(report, "_promptship_markers", None) or ("(none)",)
        for m in markers:
            _outcomes[m][outcome] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    known = set(item.config.getini("markers"))
    names = {m.split(":")[0].split("(")[0].strip() for m in known} - _BUILTIN_MARKERS
    report._promptship_markers = tuple(sorted({m.name for m in item.iter_markers() if m.name in names}))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.section("per-marker outcomes")
    for marker in sorted(_outcomes):
        c = _outcomes[marker]
        terminalreporter.write_line(
            f"[marker {marker}] passed={c['passed']} failed={c['failed']} skipped={c['skipped']}"
            + (f" xfailed={c['xfailed']}" if c["xfailed"] else "")
        )
