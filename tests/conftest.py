"""Shared test setup.

- The environment is cleaned for every test: no real credentials or endpoints leak in.
- ``require(name, ok, why)``: a missing prerequisite skips locally, but fails when CI=true.
- One session-wide Prefect test harness (``prefect_harness``), started only by the tests that need it.
- At the end, pass/fail/skip counts per marker.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

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
