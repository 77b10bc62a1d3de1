"""The product wheel carries promptship, flows and tasks, and none of the sandbox; the sandbox's own wheel
carries only ``promptship_sandbox``. Built with ``uv build --offline`` from this checkout (hatchling comes from
uv's cache, which ``make install`` fills)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT, require


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def _wheel_names(source: Path, out: Path) -> set[str]:
    uv = _uv()
    require("uv", uv is not None, "make install puts it on the PATH")
    assert uv is not None
    done = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--quiet", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    require("hatchling in uv's cache", done.returncode == 0, f"run `make install` first; uv said: {done.stderr[-500:]}")
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_the_product_wheel_has_no_sandbox(tmp_path: Path) -> None:
    names = _wheel_names(REPO_ROOT, tmp_path)
    tops = {name.split("/", 1)[0] for name in names}
    assert {"promptship", "flows", "tasks"} <= tops
    assert "promptship/cli.py" in names and "flows/dev_cycle.py" in names
    assert not [n for n in names if n.startswith(("promptship/sandbox/", "promptship_sandbox/"))]
    assert "promptship/demo.py" not in names


def test_the_sandbox_wheel_is_the_sandbox_only(tmp_path: Path) -> None:
    names = _wheel_names(REPO_ROOT / "sandbox", tmp_path)
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"promptship_sandbox"}
    assert {"promptship_sandbox/demo.py", "promptship_sandbox/prefect_server.py"} <= names
    assert "promptship_sandbox/forge/server.py" in names
