"""Without the sandbox (``promptship_sandbox``, the extra ``promptship[sandbox]``), the commands that need it
say so and name the fix; the rest of promptship does not import it. Each case runs in a fresh interpreter
where ``sys.modules['promptship_sandbox'] = None`` makes the package unimportable, as in the product image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from promptship.bench.__main__ import AREAS as BENCH_AREAS

BLOCK = "import sys; sys.modules['promptship_sandbox'] = None; "
CLI = BLOCK + "from promptship.cli import app; app(prog_name='promptship')"
BENCH = (
    BLOCK + "import runpy; sys.argv = ['promptship.bench']; runpy.run_module('promptship.bench', run_name='__main__')"
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["demo"], "promptship demo"),
        (["cluster", "status"], "promptship cluster status"),
        (["cluster", "up"], "promptship cluster up"),
        (["forge", "serve", "--port", "0"], "promptship forge serve"),
        (["chatapp", "serve"], "promptship chatapp serve"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_sandbox_command_without_the_sandbox_names_the_extra(args: list[str], command: str) -> None:
    done = _python(CLI, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{command} needs the sandbox" in done.stderr
    assert "pip install 'promptship[sandbox]'" in done.stderr and "make install" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_benchmarks_without_the_sandbox_name_the_extra() -> None:
    done = _python(BENCH)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "python -m promptship.bench needs the sandbox" in done.stderr
    assert "promptship[sandbox]" in done.stderr and "Traceback" not in done.stderr


def test_the_rest_of_promptship_runs_without_the_sandbox() -> None:
    modules = ["flows.dev_cycle", "flows.kpi_report", "promptship.wiring", "promptship.servers.gateway"]
    modules += ["promptship.servers.webhook", "promptship.servers.metrics", "promptship.bench.__main__"]
    modules += [f"promptship.bench.{area}" for area in BENCH_AREAS]
    code = BLOCK + f"import importlib; [importlib.import_module(m) for m in {modules!r}]; " + CLI.removeprefix(BLOCK)
    done = _python(code, "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_with_the_sandbox_installed_the_command_runs(tmp_path: Path) -> None:
    done = _python(
        "from promptship.cli import app; app(prog_name='promptship')", "cluster", "status", "--state-dir", str(tmp_path)
    )
    assert "needs the sandbox" not in done.stderr
    assert (done.returncode, done.stdout.strip()) == (1, "not running"), done.stderr
