"""`promptship demo` end to end, as `make demo` runs it: one dev cycle on the sandbox, report printed, exit 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.flow

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_deploys_the_version_endpoint_and_says_what_was_real(tmp_path: Path) -> None:
    env = {**os.environ, "PROMPTSHIP_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("promptship")), "demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert "Outcome: deployed — every step reached a verdict" in out
    assert "| report | deployed |" in out
    boundaries = re.findall(r"^  (\w+)\s+(real|protocol stand-in|in-process fake)\s", out, re.M)
    assert {port for port, _ in boundaries} >= {"llm", "agent", "code_host", "cluster", "health", "compiler", "sink"}
    fakes = sorted({port for port, kind in boundaries if kind == "in-process fake"})
    if IN_CI:  # `make prereqs` installed every stand-in: nothing may fall back to a fake there
        assert not fakes, f"ports left on in-process fakes: {fakes}\n{out[-3000:]}"
        assert ("local_model", "real") in boundaries, out[-3000:]  # llama.cpp + SmolLM2 (make local-model-install)
    if ("local_model", "real") in boundaries:
        assert re.search(r"^  local_model\s+real\s+llama\.cpp .*SmolLM2-135M-Instruct", out, re.M)
    if not fakes:
        image = re.search(r"\*\*Image deployed\*\*: \S+:([0-9a-f]{40})", out)
        version = re.search(r'GET \S+/version -> 200 \{"sha":"([0-9a-f]{40})"', out)
        assert image and version and image.group(1) == version.group(1)  # the service runs the merged commit
    # the run is in the project's store: `promptship kpis --json` reports it; the KPI artifact was published
    assert "KPIs (artifact 'promptship-kpis', 2 charts): runs 1" in out
    kpis = subprocess.run(
        [str(Path(sys.executable).with_name("promptship")), "kpis", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(kpis.stdout)
    assert data["runs"] == 1 and data["compile_rate"] == 1.0
    if not fakes:
        assert data["deploy_success_rate"] == 1.0 and data["lead_time_median_s"] > 0
    # it stopped what it started: the Prefect server (and the service proxy, when real) no longer answer
    started = re.findall(r"Prefect server \(SQLite\) on (http://127\.0\.0\.1:\d+)", out)
    started += re.findall(r"HttpHealthProbe -> (http://127\.0\.0\.1:\d+)/health", out)[:1]
    started += re.findall(r"SmolLM2-135M-Instruct \(.*?\) at (http://127\.0\.0\.1:\d+)/v1", out)[:1]
    assert started
    for url in started:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)
