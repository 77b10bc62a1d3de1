"""The named kill points: off unless named, fire once, SIGKILL the process (or its parent) after the marker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promptship.faults import (
    INNER_POINTS,
    KILL_AT_ENV,
    KILL_MARKERS_ENV,
    SUSPEND_POINTS,
    after_step,
    before_step,
    kill_point,
    read_marker,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "import sys\nfrom promptship.faults import kill_point\nkill_point(sys.argv[1])\nprint('survived')\n"


def _run(point: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, point],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_named_point_kills_its_process_once_and_leaves_a_marker(tmp_path: Path) -> None:
    env = {KILL_AT_ENV: "during_report", KILL_MARKERS_ENV: str(tmp_path)}
    first = _run("during_report", env)
    assert first.returncode == -signal.SIGKILL and "survived" not in first.stdout
    marker = read_marker(tmp_path, "during_report")
    assert marker is not None and marker["point"] == "during_report" and marker["victim"] == "run"
    second = _run("during_report", env)  # the recovered run passes the same point and goes on
    assert second.returncode == 0 and "survived" in second.stdout


def test_the_worker_variant_kills_the_parent_too(tmp_path: Path) -> None:
    parent_script = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {SCRIPT!r}, 'before:merge'])\n"
        "print('parent survived')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        KILL_AT_ENV: "before:merge@worker",
        KILL_MARKERS_ENV: str(tmp_path),
    }
    done = subprocess.run([sys.executable, "-c", parent_script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout
    marker = read_marker(tmp_path, "before:merge")
    assert marker is not None and marker["victim"] == "worker"


@pytest.mark.parametrize(
    "env",
    [
        {},  # production: nothing set
        {KILL_AT_ENV: "during_report"},  # a point named but no marker directory: off
        {KILL_MARKERS_ENV: "MARKERS"},  # a marker directory but no point: off
        {KILL_AT_ENV: "before:merge", KILL_MARKERS_ENV: "MARKERS"},  # another point
    ],
)
def test_points_not_named_do_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    env = {k: v.replace("MARKERS", str(tmp_path)) for k, v in env.items()}
    for point in (*INNER_POINTS, *SUSPEND_POINTS, before_step("route"), after_step("wait_for_ci#1")):
        if env.get(KILL_AT_ENV) == point:
            continue
        done = _run(point, env)
        assert done.returncode == 0 and "survived" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_kill_point_in_this_process_is_a_no_op_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KILL_AT_ENV, raising=False)
    for point in (*INNER_POINTS, *SUSPEND_POINTS):
        kill_point(point)  # returns: this test process is still here


def test_a_point_fired_from_outside_kills_the_worker_once_and_leaves_its_marker(tmp_path: Path) -> None:
    from promptship.faults import WHILE_SUSPENDED, fire

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert fire(tmp_path, WHILE_SUSPENDED, worker.pid)
        assert worker.wait(timeout=30) == -signal.SIGKILL
        marker = read_marker(tmp_path, WHILE_SUSPENDED)
        assert marker is not None and marker["victim"] == "worker" and marker["pid"] == worker.pid
        assert not fire(tmp_path, WHILE_SUSPENDED, worker.pid)  # once per marker directory
    finally:
        if worker.poll() is None:
            worker.kill()
