"""`promptship reliability --quick` as `make test` runs it: a real Prefect server, the dev-cycle deployment, a
process worker; five kill points (recovered by resume --force, by the sweeper and by Prefect's retry, one during a
rollback), every side effect equal to the uninterrupted run's; then eight fault cases on three boundaries
(faults.QUICK), one whole run under a fault (wholeruns.QUICK), and the leak scan of everything the campaign
left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.reliability]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_campaign_kills_five_points_and_finds_no_duplicate_or_lost_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *sys.path])
    done = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "reliability", "--quick", "--work", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,  # the fault part (3) adds ~30–60 s to the kill points' time
    )
    out = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, out[-6000:]
    assert lines[-1] == "kill points 5, fault kinds 7, boundaries 3, duplicates 0, leaks 0, lost runs 0", out[-4000:]
    table = [line for line in lines if line.split(" ")[0] in ("after:open_pull_request", "agent_working")]
    assert len(table) == 2 and all(" yes " in line for line in table)
    recoveries = {line.split()[1] for line in lines if line.startswith(("after:", "agent_", "between_", "during_"))}
    assert recoveries == {"resume", "sweep", "retry"}
    # part 3: eight fault cases on three boundaries, each fired, each ending as the unfaulted request did (the git
    # outage: failed naming the code host, then resumed to it), no side effect counted twice
    part3 = lines[: next(i for i, line in enumerate(lines) if line.startswith("Part 3b:"))]
    faults = [line for line in part3 if line.split(" ")[0] in ("forge-rest", "forge-git", "health")]
    assert len(faults) == 8, out[-4000:]
    assert all(line.endswith(" yes") and " 0 " in line for line in faults), "\n".join(faults)
    assert any("refuse outage" in line and "failed: codehost (retryable) → same" in line for line in faults)
    # a real ECONNREFUSED and an unresolvable name: the code host's retryable failure after the step's 4 attempts
    for kind in ("connect_refused", "dns_failure"):
        line = next(line for line in faults if line.split()[:2] == ["forge-rest", kind])
        assert "failed: codehost (retryable) → same" in line and " 4/4 " in line, line
    # the push cut off mid-transfer is retried by the step layer (it failed the run before: a defect)
    assert any(line.split()[:2] == ["forge-git", "reset"] and "  same  " in line for line in faults), faults
    # part 3b: one whole dev-cycle run through the deployment and the worker with the real forge behind the proxy,
    # a 502 burst on its REST API absorbed by the step retries: deployed as the unfaulted whole run, nothing twice
    part3b = lines[len(part3) : next(i for i, line in enumerate(lines) if line.startswith("Part 4:"))]
    whole = [line for line in part3b if line.startswith("forge-rest ")]
    assert len(whole) == 1, "\n".join(part3b)
    assert whole[0].split()[:3] == ["forge-rest", "http_502", "x2"] and whole[0].endswith(" yes"), whole[0]
    assert " yes   deployed " in whole[0] and " deployed    0 " in whole[0], whole[0]
