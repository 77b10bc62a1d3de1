"""`promptship demo` end to end: each scenario a request through the `dev-cycle` deployment (or the webhook) run by a
real process worker on the sandbox; reports printed, one machine line per scenario, exit 0.

Three demo runs: `--scenario deploy` (the original demo's assertions), `--scenario rollback` alone, and the full
run (`make demo`) whose five machine lines must each say outcome == expected. After the deploy run and after the
full run, `promptship replay` reads that demo's own store (issue 16, "Done when"): no further demo run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import IN_CI, require

# the demo starts every stand-in: forge, cluster, agent-server, webhook receiver (and Prefect with a worker)
pytestmark = [
    pytest.mark.flow,
    pytest.mark.forge,
    pytest.mark.cluster,
    pytest.mark.openhands,
    pytest.mark.webhook,
    pytest.mark.timeout(1500),  # one demo run: ~4 min on 2 idle cores, far more on a shared machine
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _require_sandbox(done: subprocess.CompletedProcess[str]) -> None:
    """Exit 2 with "unavailable" lines: a piece of the sandbox cannot start here (skips locally, fails in CI)."""
    missing = re.findall(r"^  (.+): unavailable — (.*)$", done.stdout, re.M)
    require("the demo's sandbox", not (done.returncode == 2 and missing), "; ".join(f"{a}: {b}" for a, b in missing))


def _demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMPTSHIP_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(Path(sys.executable).with_name("promptship")), "demo", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        stdin=subprocess.DEVNULL,
    )


MACHINE_LINE = re.compile(r"^scenario=(\w+) expected=(\w+) outcome=(\w+)$", re.M)


def _promptship(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A `promptship` command on a demo's home, with the environment the demo ran with."""
    env = {**os.environ, "PROMPTSHIP_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(Path(sys.executable).with_name("promptship")), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _assert_replay_of_the_demo(home: Path, work: Path) -> None:
    """`replay --json` under the recording policies is exact and moves nothing; then the exported policy with one
    class's model changed (to another model of the same mode) replays to the per-class table."""
    done = _promptship(home, "replay", "--json", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout[-3000:]  # one JSON object on stdout, nothing else
    replayed = json.loads(lines[0])
    assert isinstance(replayed, dict)
    assert replayed["calls"] > 0
    assert replayed["self_check"] == "ok", replayed["self_check_detail"]
    assert replayed["cost_recorded_usd"] == replayed["cost_replayed_usd"]
    assert (replayed["moved_to_cloud"], replayed["moved_to_local"]) == (0, 0)

    exported = work / "p.yaml"
    done = _promptship(home, "policy", "export", str(exported), cwd=work)
    assert done.returncode == 0 and exported.is_file(), done.stdout + done.stderr
    policy = yaml.safe_load(exported.read_text(encoding="utf-8"))
    # a class the demo's calls took under its own model: "complex_code × gpt-4o → gpt-4o" → complex_code, gpt-4o
    cells = [(k.split(" × ")[0], k.split(" × ")[1].split(" → ")[0]) for k in replayed["per_class_model"]]
    klass, then = next((c, m) for c, m in cells if policy["classes"].get(c) == m)
    mode = policy["models"][then]["mode"]
    other = next(n for n, spec in policy["models"].items() if spec["mode"] == mode and n != then)
    policy["classes"][klass] = other
    exported.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    done = _promptship(home, "replay", "--policy", str(exported), cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| class × model then → now | calls | cost then (USD) | cost under policy (USD) |" in done.stdout
    assert re.search(rf"^\| {klass} × {re.escape(then)} → {re.escape(other)} \| [1-9]\d* \|", done.stdout, re.M), (
        done.stdout[-3000:]
    )


@pytest.fixture(scope="module")
def full_demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-all") / "home"


@pytest.fixture(scope="module")
def full_demo(full_demo_home: Path) -> subprocess.CompletedProcess[str]:
    """One `promptship demo` (all five scenarios, concurrently), shared by the assertions on it."""
    return _demo(full_demo_home)


def test_demo_deploys_the_version_endpoint_and_says_what_was_real(tmp_path: Path) -> None:
    env = {**os.environ, "PROMPTSHIP_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("promptship")), "demo", "--scenario", "deploy"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout
    _require_sandbox(done)
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
    assert MACHINE_LINE.findall(out) == [("deploy", "deployed", "deployed")]
    _assert_replay_of_the_demo(tmp_path / "home", tmp_path)


def test_the_rollback_scenario_alone_rolls_back_and_opens_the_revert_pr(tmp_path: Path) -> None:
    done = _demo(tmp_path / "home", "--scenario", "rollback")
    out = done.stdout
    _require_sandbox(done)
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert MACHINE_LINE.findall(out) == [("rollback", "rolled_back", "rolled_back")]
    assert "| report | rolled_back |" in out
    assert "| rollback | restored |" in out  # the previous revision serves again, checked healthy
    revert = re.search(r"^Revert PR: (http://127\.0\.0\.1:\d+/demo/chat-app-rollback/pull/\d+) \((\w+)\)$", out, re.M)
    assert revert, out[-3000:]
    # the seed version answers again: GET /version is the seed app's 404 (it has no /version), not a crash
    assert re.search(r"^GET http://127\.0\.0\.1:\d+/(\S+/)?version -> 404 ", out, re.M), out[-3000:]


def test_the_full_demo_prints_five_machine_lines_each_reaching_its_expected_outcome(
    full_demo: subprocess.CompletedProcess[str],
) -> None:
    out = full_demo.stdout
    _require_sandbox(full_demo)
    lines = MACHINE_LINE.findall(out)
    assert [name for name, _, _ in lines] == ["deploy", "repair", "rollback", "private", "webhook"], out[-4000:]
    assert all(expected == outcome for _, expected, outcome in lines), lines
    assert full_demo.returncode == 0, out[-4000:] + full_demo.stderr[-4000:]
    assert "| scenario | expected | outcome | PR | repair rounds | time to restore | calls local/cloud | cost |" in out
    repair_row = re.search(r"^\| repair \| deployed \| deployed \| \S+ \| (\d+) \|", out, re.M)
    assert repair_row and int(repair_row.group(1)) >= 1
    private = re.search(
        r"^LLM stand-in log: (\d+) local request\(s\) of this run, (\d+) to the cloud endpoint", out, re.M
    )
    assert private and int(private.group(1)) > 0 and private.group(2) == "0"
    assert not re.search(r"ghp_[A-Za-z0-9]{36}", out)  # the private prompt's credential is never printed


def test_replay_after_the_full_demo_is_exact_and_a_changed_policy_prints_the_per_class_table(
    full_demo: subprocess.CompletedProcess[str], full_demo_home: Path, tmp_path: Path
) -> None:
    """Issue 16's "Done when": after `make demo` (this module's one full run), on that demo's own store."""
    _require_sandbox(full_demo)
    assert full_demo.returncode == 0, full_demo.stdout[-4000:] + full_demo.stderr[-4000:]
    _assert_replay_of_the_demo(full_demo_home, tmp_path)


def test_the_canary_reads_the_demos_outcomes_and_says_when_one_missed(
    full_demo: subprocess.CompletedProcess[str],
) -> None:
    """The daily canary runs this same command; its artifact and verdict come from the demo's own output."""
    from promptship_sandbox.canary import canary_markdown

    _require_sandbox(full_demo)
    markdown, ok = canary_markdown("today", full_demo.returncode, full_demo.stdout, {"runs": 5})
    assert ok and "every scenario reached its outcome" in markdown
    assert markdown.count(" | ok |") == 5 and "| runs | 5 |" in markdown
    missed = full_demo.stdout.replace("expected=rolled_back outcome=rolled_back", "expected=rolled_back outcome=failed")
    markdown, ok = canary_markdown("today", 1, missed, None)
    assert not ok and "| rollback | rolled_back | failed | **MISSED** |" in markdown
