"""One way for a step to be a step: the boilerplate lives in tasks/_step.py only, and no task reads settings."""

from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _calls_and_imports(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imports = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return attrs, imports


def test_only_the_step_mechanism_and_the_report_write_step_records() -> None:
    writers = {p.name for p in TASKS.glob("*.py") if "record_step" in _calls_and_imports(p)[0]}
    assert writers == {"_step.py", "report.py"}  # report.py writes the final "report" record of an attempt


def test_every_step_of_tasks_steps_goes_through_the_step_decorator() -> None:
    tree = ast.parse((TASKS / "steps.py").read_text())
    public = [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert public, "no steps found"
    for fn in public:
        decorators = [d.func.id for d in fn.decorator_list if isinstance(d, ast.Call) and isinstance(d.func, ast.Name)]
        assert decorators == ["step"], f"{fn.name} is not a @step"


def test_no_task_reads_settings() -> None:
    for path in TASKS.glob("*.py"):
        attrs, imports = _calls_and_imports(path)
        assert "promptship.settings" not in imports, path.name
        assert "settings" not in attrs, f"{path.name} reads .settings"
