"""The canary: the demo's scenarios as a daily synthetic check of the whole pipeline, an alert when one misses.

The ``canary`` deployment (prefect.yaml, every day) runs this flow on a process worker of a checkout where the
sandbox is installed (``make install``: the product image has no sandbox, so never on the Kubernetes pool). Each
run is self-contained: ``promptship demo`` in a subprocess with a fresh ``PROMPTSHIP_HOME`` of its own — its own
Prefect server, forge, gateway, agent-server, control plane and store — so every day's requests are new
requests (new branches, PRs, deploys), never a replay of an earlier day's, and the calling Prefect server only
receives the outcome: an artifact with each scenario's expected and reached outcome and the day's KPIs, and a
flow run that fails when any scenario missed (what a platform team alerts on, e.g. with an automation on
``prefect.flow-run.Failed`` of this deployment).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from promptship.errors import PromptshipError
from promptship.settings import Settings

ARTIFACT_KEY = "promptship-canary"
MACHINE_LINE = re.compile(r"^scenario=(\w+) expected=(\w+) outcome=(\w+)$", re.M)
SUMMARY_ROW = re.compile(r"^\| (deploy|repair|rollback|private|webhook) \|.*\|$", re.M)


class CanaryMissed(PromptshipError):
    """At least one scenario did not reach its expected outcome (or the demo could not run)."""


def canary_markdown(day: str, returncode: int, out: str, kpis: dict[str, object] | None) -> tuple[str, bool]:
    """The artifact of one canary run from the demo's output; and whether every scenario reached its outcome."""
    lines = MACHINE_LINE.findall(out)
    ok = returncode == 0 and bool(lines) and all(expected == outcome for _, expected, outcome in lines)
    rows = [f"| {name} | {expected} | {outcome} | {'ok' if expected == outcome else '**MISSED**'} |"
            for name, expected, outcome in lines]  # fmt: skip
    parts = [
        f"# promptship canary — {day}: {'every scenario reached its outcome' if ok else 'MISSED'}",
        "",
        "| scenario | expected | outcome | |",
        "|---|---|---|---|",
        *(rows or ["| — | — | — | the demo printed no scenario line |"]),
        "",
    ]
    summary = SUMMARY_ROW.findall(out)
    if summary:
        table = [line for line in out.splitlines() if SUMMARY_ROW.match(line)]
        parts += [
            "| scenario | expected | outcome | PR | repair rounds | time to restore | calls local/cloud | cost |",
            "|---|---|---|---|---|---|---|---|",
            *table,
            "",
        ]
    if kpis:
        shown = ("runs", "compile_rate", "ci_first_pass_rate", "deploy_success_rate", "rollback_rate",
                 "cloud_cost_today", "lead_time_median_s")  # fmt: skip
        parts += ["| KPI of this run | value |", "|---|---|"]
        parts += [f"| {name} | {kpis[name]} |" for name in shown if name in kpis]
        parts.append("")
    if returncode != 0:
        parts.append(f"`promptship demo` exited {returncode}; the end of its output:\n\n```\n{out[-2500:]}\n```")
    return "\n".join(parts), ok


@flow(name="canary", log_prints=False)
def canary(scenarios: list[str] | None = None, timeout_s: float = 2400.0) -> dict[str, str]:
    """Run the demo's scenarios (default: all five) in a fresh sandbox; publish the outcome; fail on a miss."""
    from prefect.artifacts import create_markdown_artifact

    log = get_run_logger()
    now = datetime.now(UTC)
    home = (Settings().home / "canary" / now.strftime("%Y%m%dT%H%M%S")).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PROMPTSHIP_HOME"] = str(home)
    promptship = Path(sys.executable).with_name("promptship")
    args = [str(promptship), "demo", *(a for s in scenarios or [] for a in ("--scenario", s))]
    log.info("canary: %s under %s", " ".join(args[1:]), home)
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
        out, rc = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:  # the demo stops what it started when its process group ends
        partial = exc.stdout
        out, rc = (partial.decode(errors="replace") if isinstance(partial, bytes) else partial or ""), -1
    kpis = _kpis(promptship, env)
    markdown, ok = canary_markdown(now.strftime("%Y-%m-%d %H:%M UTC"), rc, out, kpis)
    create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY, description="The pipeline's daily synthetic check")
    outcomes = {name: outcome for name, _, outcome in MACHINE_LINE.findall(out)}
    if not ok:
        raise CanaryMissed(f"canary: not every scenario reached its expected outcome: {outcomes or 'none ran'}")
    return outcomes


def _kpis(promptship: Path, env: dict[str, str]) -> dict[str, object] | None:
    try:
        done = subprocess.run([str(promptship), "kpis", "--json"], env=env, capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.SubprocessError, ValueError):
        return None
