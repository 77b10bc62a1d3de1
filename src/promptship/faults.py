"""Named kill points: where the reliability campaign SIGKILLs a run, off unless the environment names one.

``kill_point(NAME)`` is one line at each point (step boundaries in ``tasks/_step.py``, the points inside the
long steps in ``tasks/steps.py``, ``tasks/report.py`` and ``flows/dev_cycle.py``). It does nothing unless both

- ``PROMPTSHIP_KILL_AT`` names this point (``<point>`` kills the flow-run process itself,
  ``<point>@worker`` kills its parent — the worker that started it — and then itself), and
- ``PROMPTSHIP_KILL_MARKERS`` names a directory for the "fired" markers.

A point fires once per marker directory: it first creates ``<dir>/<point>.fired`` (exclusively) holding the
point, the pid killed and the time, then sends SIGKILL. A recovered run that passes the same point again finds
the marker and goes on, so the campaign can keep the same environment for the recovery. Production never sets
these variables; unset, a kill point is a dictionary lookup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Literal

KILL_AT_ENV = "PROMPTSHIP_KILL_AT"
KILL_MARKERS_ENV = "PROMPTSHIP_KILL_MARKERS"

# points inside the long steps (the step boundaries are ``before_step``/``after_step`` of each step label)
AGENT_WORKING = "agent_working"  # the agent's conversation started, its result not yet in
BETWEEN_PUSH_AND_PR = "between_push_and_pr"  # the branch is pushed, the PR not yet looked for or opened
WAITING_FOR_CI = "waiting_for_ci"  # CI answered, its verdict not yet recorded
BETWEEN_MERGE_AND_ROLLOUT = "between_merge_and_rollout"  # merged, the image not yet waited for
BETWEEN_APPLY_AND_VERDICT = "between_apply_and_verdict"  # manifests applied, the rollout's verdict not yet known
DURING_ROLLBACK = "during_rollback"  # the previous revision restored, the rollback not yet recorded
DURING_REPORT = "during_report"  # the report built, the attempt not yet ended nor its artifacts written

INNER_POINTS = (
    AGENT_WORKING,
    BETWEEN_PUSH_AND_PR,
    WAITING_FOR_CI,
    BETWEEN_MERGE_AND_ROLLOUT,
    BETWEEN_APPLY_AND_VERDICT,
    DURING_ROLLBACK,
    DURING_REPORT,
)

# points of a run that suspends while it waits (``tasks/waiting.py``)
BEFORE_SUSPEND = "before_suspend"  # the wait recorded and the lease held for the suspension, not yet suspended
WHILE_SUSPENDED = "while_suspended"  # Suspended, no process of its own: the campaign SIGKILLs the worker (`fire`)
AFTER_RESUME = "after_resume"  # resumed: the run found the wait it suspended in, before it looks again

SUSPEND_POINTS = (BEFORE_SUSPEND, WHILE_SUSPENDED, AFTER_RESUME)

Victim = Literal["run", "worker"]


def before_step(label: str) -> str:
    """The kill point just before a step's body runs (``before:<label>``)."""
    return f"before:{label}"


def after_step(label: str) -> str:
    """The kill point just after a step's record is written, before Prefect stores its result."""
    return f"after:{label}"


def marker_path(directory: Path, point: str) -> Path:
    """Where the marker of ``point`` goes (its name made safe for a file name)."""
    return directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', point)}.fired"


def read_marker(directory: Path, point: str) -> dict[str, object] | None:
    """The fired marker of ``point`` (point, victim, pid, time), or None when it never fired."""
    path = marker_path(directory, point)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def kill_point(point: str) -> None:
    """SIGKILL this process (or its worker) here when the environment names ``point``; see the module docstring."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    name, _, variant = wanted.partition("@")
    if name != point:
        return
    markers = os.environ.get(KILL_MARKERS_ENV)
    if not markers:
        return
    victim: Victim = "worker" if variant == "worker" else "run"
    if not write_marker(Path(markers), point, victim, os.getpid(), os.getppid()):
        return  # fired already: a recovered run goes on
    if victim == "worker":
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def write_marker(directory: Path, point: str, victim: Victim, pid: int, ppid: int) -> bool:
    """Create the marker of ``point`` exclusively (point, victim, pid, ppid, time); False when it exists already."""
    try:
        fd = os.open(marker_path(directory, point), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump({"point": point, "victim": victim, "pid": pid, "ppid": ppid, "time": time.time()}, out)
        out.flush()
        os.fsync(out.fileno())
    return True


def fire(directory: Path, point: str, worker_pid: int) -> bool:
    """A point the run's own code cannot reach (``WHILE_SUSPENDED``: the run has no process): write its marker
    and SIGKILL the worker ``worker_pid``, from outside. False when it fired already."""
    if not write_marker(directory, point, "worker", worker_pid, os.getpid()):
        return False
    os.kill(worker_pid, signal.SIGKILL)
    return True
