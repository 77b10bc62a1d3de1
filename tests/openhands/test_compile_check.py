"""The compile check: real subprocesses on real files (fast, no prerequisite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptship.adapters.compile_check import WorkspaceCompileChecker, inspect_repository
from tests.conftest import REPO_ROOT


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


GOOD = {
    "service/app/__init__.py": "",
    "service/app/version.py": "from app.util import twice\n\nVERSION = twice('1')\n",
    "service/app/util.py": "def twice(s: str) -> str:\n    return s * 2\n",
    "service/tests/test_version.py": "from app.version import VERSION\n\ndef test_v():\n    assert VERSION == '11'\n",
}


def test_a_good_generation_compiles(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    result = WorkspaceCompileChecker().check(str(tmp_path), ("service/app/version.py", "service/tests/test_version.py"))
    assert result.compiled, result.output
    assert "import app.version" in result.command


@pytest.mark.parametrize(
    ("broken", "changed", "expected"),
    [
        ({"service/app/version.py": "def f(:\n    pass\n"}, "service/app/version.py", "SyntaxError"),
        ({"service/app/version.py": "from app.nothere import x\n"}, "service/app/version.py", "app.nothere"),
        ({"service/app/version.py": "raise RuntimeError('boom at import')\n"}, "service/app/version.py", "boom"),
        # a syntax error in a file the agent did not list still fails: every Python file is byte-compiled
        ({"service/app/util.py": "def twice(s):\nreturn s\n"}, "service/app/version.py", "IndentationError"),
    ],
)
def test_a_broken_generation_does_not_compile(
    tmp_path: Path, broken: dict[str, str], changed: str, expected: str
) -> None:
    _write(tmp_path, {**GOOD, **broken})
    result = WorkspaceCompileChecker().check(str(tmp_path), (changed,))
    assert not result.compiled
    assert expected in result.output


def test_a_missing_third_party_module_is_reported_not_counted(tmp_path: Path) -> None:
    _write(tmp_path, {**GOOD, "service/app/version.py": "import surely_not_installed_pkg\n"})
    result = WorkspaceCompileChecker().check(str(tmp_path), ("service/app/version.py",))
    assert result.compiled
    assert "surely_not_installed_pkg" in result.output


def test_the_repositorys_build_command_wins(tmp_path: Path) -> None:
    _write(tmp_path, {**GOOD, "Makefile": "build:\n\t@echo building && exit 3\n"})
    result = WorkspaceCompileChecker().check(str(tmp_path), ("service/app/version.py",))
    assert (result.compiled, result.command) == (False, "make build")
    assert "building" in result.output
    _write(tmp_path, {"Makefile": "build:\n\t@echo built\n"})
    assert WorkspaceCompileChecker().check(str(tmp_path), ()).compiled


def test_an_import_that_hangs_is_stopped(tmp_path: Path) -> None:
    _write(tmp_path, {**GOOD, "service/app/version.py": "import time\ntime.sleep(60)\n"})
    result = WorkspaceCompileChecker(timeout_s=1).check(str(tmp_path), ("service/app/version.py",))
    assert not result.compiled
    assert "timed out" in result.output


def test_imports_run_without_our_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_GITHUB__TOKEN", "ghp_not_for_generated_code")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-not-for-generated-code")
    probe = (
        "import os\nleaked = [k for k in os.environ if 'PROMPTSHIP' in k or 'OPENROUTER' in k]\n"
        "assert not leaked, leaked\n"
    )
    _write(tmp_path, {**GOOD, "service/app/version.py": probe})
    result = WorkspaceCompileChecker().check(str(tmp_path), ("service/app/version.py",))
    assert result.compiled, result.output


def test_the_chat_app_compiles_and_its_conventions_are_read() -> None:
    app = REPO_ROOT / "examples" / "chat-app"
    conventions = inspect_repository(app)
    assert conventions.test_command == "make test"
    assert conventions.manifests_dir == "k8s"
    assert "backend/tests" in conventions.test_dirs
    assert "python" in conventions.languages
    assert WorkspaceCompileChecker().check(str(app), ("backend/app/main.py",)).compiled


@pytest.mark.parametrize(
    ("files", "test_command", "build_command"),
    [
        ({"Makefile": "test:\n\tpytest\nbuild: deps\n\ttrue\nX := 1\n"}, "make test", "make build"),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, "python -m pytest", None),
        ({"package.json": '{"scripts": {"test": "vitest", "build": "vite build"}}'}, "npm test", "npm run build"),
        ({"README.md": "nothing"}, None, None),
    ],
)
def test_test_and_build_commands_are_discovered(
    tmp_path: Path, files: dict[str, str], test_command: str | None, build_command: str | None
) -> None:
    _write(tmp_path, files)
    conventions = inspect_repository(tmp_path)
    assert (conventions.test_command, conventions.build_command) == (test_command, build_command)
