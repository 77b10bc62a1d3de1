"""Does what the agent produced build? (the seed's "code that compiles > 80 %" KPI) — and how a checkout is
built and tested (``inspect_repository``, handed to the agent's instructions).

``WorkspaceCompileChecker.check(workspace, changed_files)``:
- the repository declares a build (a ``build:`` target in its Makefile) → ``make build``;
- otherwise byte-compile every Python file of the checkout (nothing written to disk) and import each changed,
  non-test Python module from its import root.
Everything runs in subprocesses in the workspace with a scrubbed environment (no credentials of ours) and a
timeout. A third-party module missing from promptship's interpreter is reported, not counted as a failure
(the repository's own CI installs its dependencies); a missing module of the repository itself is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from promptship.domain.instructions import RepoConventions
from promptship.domain.results import CompileResult

_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", "dist", "build", ".tox", ".mypy_cache"}
_MANIFEST_DIRS = ("k8s", "deploy", "manifests", "kubernetes", "kustomize", "helm", "charts")
_OUTPUT_CHARS = 4_000

# Runs in the child: byte-compile all files, then import the given modules; prints one JSON line.
_CHILD = r"""
import importlib, json, os, sys, traceback
root, files, modules = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
local_tops = set(json.loads(sys.argv[4]))
errors, warnings = [], []
for f in files:
    try:
        with open(os.path.join(root, f), "rb") as fh:
            compile(fh.read(), f, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        errors.append(f"{f}: {type(exc).__name__}: {exc}")
if not errors:
    for import_root, name in modules:
        path = os.path.join(root, import_root)
        sys.path.insert(0, path)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in local_tops:
                errors.append(f"import {name}: {exc}")
            else:
                warnings.append(f"import {name}: third-party module {missing!r} not installed here (not counted)")
        except BaseException as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            errors.append(f"import {name}: " + "".join(tb[-3:]).strip())
        finally:
            sys.path.remove(path)
print(json.dumps({"errors": errors, "warnings": warnings}))
"""


def makefile_targets(workspace: Path) -> set[str]:
    """Targets declared in the workspace's top-level Makefile."""
    makefile = workspace / "Makefile"
    if not makefile.is_file():
        return set()
    targets = set()
    for line in makefile.read_text(errors="replace").splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line)
        if m:
            targets.add(m.group(1))
    return targets


def inspect_repository(workspace: str | Path) -> RepoConventions:
    """How the checkout at ``workspace`` is tested, built and deployed (read from its files, nothing run)."""
    root = Path(workspace)
    targets = makefile_targets(root)
    test_command = build_command = None
    if "test" in targets:
        test_command = "make test"
    if "build" in targets:
        build_command = "make build"
    package = _package_json(root)
    if test_command is None:
        pyproject = root / "pyproject.toml"
        if pyproject.is_file() and "pytest" in pyproject.read_text(errors="replace"):
            test_command = "python -m pytest"
        elif (root / "pytest.ini").is_file() or (root / "tox.ini").is_file():
            test_command = "python -m pytest"
        elif "test" in package.get("scripts", {}):
            test_command = "npm test"
    if build_command is None and "build" in package.get("scripts", {}):
        build_command = "npm run build"
    languages: list[str] = []
    files = list(_walk(root, max_depth=3))
    if any(f.suffix == ".py" for f in files):
        languages.append("python")
    if package or any(f.suffix in (".js", ".jsx") for f in files):
        languages.append("javascript")
    if any(f.suffix in (".ts", ".tsx") for f in files):
        languages.append("typescript")
    if any(f.suffix == ".go" for f in files):
        languages.append("go")
    manifests_dir = next((d for d in _MANIFEST_DIRS if _holds_manifests(root / d)), None)
    test_dirs = sorted(
        {
            str(f.parent.relative_to(root))
            for f in files
            if f.parent != root and f.parent.name in ("tests", "test", "__tests__")
        }
    )
    return RepoConventions(
        test_command=test_command,
        build_command=build_command,
        manifests_dir=manifests_dir,
        languages=tuple(languages),
        test_dirs=tuple(test_dirs),
    )


class WorkspaceCompileChecker:
    """``CompileChecker`` port: builds or byte-compiles + imports a workspace in subprocesses."""

    def __init__(self, *, python: str = sys.executable, timeout_s: float = 120.0):
        self._python = python
        self._timeout_s = timeout_s

    def check(self, workspace: str, changed_files: tuple[str, ...]) -> CompileResult:
        """Build or byte-compile what changed in ``workspace``; ``compiled`` is the verdict."""
        root = Path(workspace).resolve()
        if not root.is_dir():
            return CompileResult(compiled=False, command="(none)", output=f"workspace {workspace} does not exist")
        if "build" in makefile_targets(root):
            code, out = self._run(["make", "build"], root)
            return CompileResult(compiled=code == 0, command="make build", output=_tail(out))
        py_files = sorted(str(f.relative_to(root)) for f in _walk(root) if f.suffix == ".py")
        if not py_files:
            return CompileResult(compiled=True, command="(nothing to compile)", output="no Python files, no build")
        modules = _modules_to_import(root, changed_files)
        local_tops = sorted(_local_top_names(root, py_files))
        argv = [self._python, "-I", "-c", _CHILD, str(root), json.dumps(py_files), json.dumps(modules)]
        argv.append(json.dumps(local_tops))
        command = f"byte-compile {len(py_files)} Python files; import " + (
            ", ".join(m for _, m in modules) if modules else "(no changed modules)"
        )
        code, out = self._run(argv, root)
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return CompileResult(compiled=False, command=command, output=_tail(out or f"exit code {code}"))
        lines = [*report["errors"], *report["warnings"]]
        return CompileResult(compiled=not report["errors"], command=command, output=_tail("\n".join(lines)))

    def _run(self, argv: list[str], cwd: Path) -> tuple[int, str]:
        with tempfile.TemporaryDirectory(prefix="promptship-compile-") as home:
            env = {
                "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOME": home,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
            }
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # so a timeout stops the whole process group
            )
            try:
                out, _ = proc.communicate(timeout=self._timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                return 124, f"{shlex.join(argv[:2])}…: timed out after {self._timeout_s:g} s\n{out or ''}"
            return proc.returncode, out or ""


def _walk(root: Path, max_depth: int = 12):
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".") and depth < max_depth]
        for name in filenames:
            yield Path(dirpath) / name


def _import_root_and_name(root: Path, rel: str) -> tuple[str, str] | None:
    path = root / rel
    if path.suffix != ".py" or not path.is_file():
        return None
    parts = [path.stem] if path.stem != "__init__" else []
    parent = path.parent
    while parent != root and (parent / "__init__.py").is_file():
        parts.insert(0, parent.name)
        parent = parent.parent
    if not parts:
        return None
    return str(parent.relative_to(root)) if parent != root else ".", ".".join(parts)


def _is_test(rel: str) -> bool:
    p = Path(rel)
    return (
        p.name.startswith("test_")
        or p.name.endswith("_test.py")
        or p.name == "conftest.py"
        or any(part in ("tests", "test") for part in p.parts[:-1])
    )


def _modules_to_import(root: Path, changed_files: tuple[str, ...]) -> list[tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    for rel in changed_files:
        if _is_test(rel) or rel.endswith("__main__.py") or Path(rel).name in ("setup.py", "manage.py"):
            continue
        found = _import_root_and_name(root, rel)
        if found:
            seen.setdefault(f"{found[0]}:{found[1]}", found)
    return sorted(seen.values())


def _local_top_names(root: Path, py_files: list[str]) -> set[str]:
    tops = set()
    for rel in py_files:
        found = _import_root_and_name(root, rel)
        if found:
            tops.add(found[1].split(".")[0])
    return tops


def _package_json(root: Path) -> dict:
    path = root / "package.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _holds_manifests(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    for f in directory.rglob("*"):
        if f.suffix in (".yaml", ".yml") and f.is_file():
            text = f.read_text(errors="replace")
            if re.search(r"^kind:\s*\w+", text, re.M) and "apiVersion" in text:
                return True
    return False


def _tail(text: str) -> str:
    return text[-_OUTPUT_CHARS:]
