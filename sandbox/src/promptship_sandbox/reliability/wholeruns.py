"""Part 3b: faults met by whole dev-cycle runs — the ``dev-cycle`` deployment run by the campaign's worker, with
one boundary a real part behind the fault proxy and the others the durable fakes.

The real part is started from the step-level cases' own harness (``faults.ForgeParts`` with CI on, the LLM
stand-in that ``faults.LLMParts`` puts behind the gateway, the ``faults._Health`` app); each request gets its
own proxy in front of it, its own fakes and store, and names its real boundary in ``<fakes>/boundaries.json``
(``durable_fakes.with_real_boundaries``: the flow-run process builds ``GitHubHost``, ``LiteLLMGateway`` or
``HttpHealthProbe`` from it). Each case is compared with the unfaulted whole run of the same request shape on the
same boundary:

- the report's outcome is the unfaulted one; or the run ended ``failed`` naming the service (the report's error
  names the boundary's ``ServiceError``, Prefect shows the flow run Failed) and, once the fault is cleared,
  ``promptship resume --force`` ends it with the unfaulted outcome;
- every side effect is equal: the campaign's counts (fakes, store, Prefect: ``campaign.COLUMNS``) and those
  counted on the real part (PRs, merged PRs and branches on the forge; ledger charges against the completions the
  LLM stand-in answered for the request);
- the requests the proxy saw stay within docs/CONTRACTS.md's limits for the run (each step's requests at most
  4 times, ``tasks._step``; the gateway's own retries for an LLM call; the health gate's 10 probes per check);
- the fault fired: a burst's proxy counter, an outage the run met (it failed, or its health gate failed).

The health gate reads a URL that refuses connections as a failing app — what a crashed pod looks like — so a
health outage is not a ``failed`` to resume: it must roll back exactly as the unfaulted run of a failing app does
(the outage ends once the rollback is recorded, so the restored version's check meets a reachable URL).
"""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from promptship_sandbox.durable_fakes import BASE_IMAGE, JsonState, write_boundaries
from promptship_sandbox.faultproxy import OUTAGE_KINDS, FaultKind, FaultProxy, running_fault_proxy
from promptship_sandbox.reliability import campaign as kc
from promptship_sandbox.reliability.faults import (
    KIND_OF,
    OUTAGE,
    OWNER,
    SLOW_S,
    STEP_ATTEMPTS,
    ForgeParts,
    _Health,
)

WholeBoundary = Literal["forge-rest", "forge-git", "llm", "health"]
Expect = Literal["same", "failed", "rolled_back"]
Shape = Literal["deploy", "rollback"]
SERVICE_ERROR = {"forge-rest": "CodeHostError", "forge-git": "CodeHostError", "llm": "LLMError"}
SERVICE = {"forge-rest": "codehost", "forge-git": "codehost", "llm": "llm", "health": "health"}
LLM_ATTEMPTS_PER_CALL = 20  # docs/CONTRACTS.md: (1 + max_retries) per model group × the fallback chain's groups
HEALTH_PROBES_PER_CHECK = 10  # health.retries
PARALLEL = 4  # whole runs in flight at once (2 cores; each LLM run's process loads LiteLLM and the gate)
RUN_TIMEOUT_S = 2 * kc.RUN_TIMEOUT_S  # a whole run on a real part (and its resume) under a loaded machine


@dataclass(frozen=True)
class WholeCase:
    boundary: WholeBoundary
    kind: FaultKind
    count: int = 1
    match: str = ""
    method: str | None = None
    expect: Expect = "same"

    @property
    def shape(self) -> Shape:
        """The unfaulted run it is compared with: a health outage is the run of a failing app."""
        return "rollback" if self.expect == "rolled_back" else "deploy"

    @property
    def name(self) -> str:
        times = "outage" if self.count >= OUTAGE else f"x{self.count}"
        match = self.match.replace("<repository>", "…")
        where = f" {self.method or ''} {match}".rstrip() if self.match else ""
        return f"{self.kind} {times}{where}"

    @property
    def tag(self) -> str:
        return f"whole-{self.boundary}-{self.kind}-{self.count}".replace("_", "-")


RECEIVE = "<repository>/git-receive-pack"  # the push (the request's repository is filled in per run)
FULL: tuple[WholeCase, ...] = (
    WholeCase("forge-rest", "http_502", 2, "/api/v3/repos/"),
    WholeCase("forge-rest", "connect_refused", OUTAGE, expect="failed"),
    WholeCase("forge-git", "http_503", 1, RECEIVE, "POST"),
    WholeCase("forge-git", "connect_refused", OUTAGE, expect="failed"),
    WholeCase("llm", "http_503", 2),
    WholeCase("llm", "connect_refused", OUTAGE, expect="failed"),
    WholeCase("llm", "dns_failure", OUTAGE, expect="failed"),
    WholeCase("health", "http_503", 2),
    WholeCase("health", "connect_refused", OUTAGE, expect="rolled_back"),
)
QUICK: tuple[WholeCase, ...] = (WholeCase("forge-rest", "http_502", 2, "/api/v3/repos/"),)


@dataclass
class WholeResult:
    case: WholeCase
    fired: bool
    outcome: str | None  # the report's outcome when the run ended (before any resume)
    unfaulted: str | None
    resumed: str | None = None
    error: str = ""
    differences: list[str] = field(default_factory=list)
    requests: int = 0
    limit: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def clean_failure(self) -> bool:
        named = SERVICE_ERROR.get(self.case.boundary, "-")
        return self.outcome == "failed" and named in self.error

    @property
    def verdict_ok(self) -> bool:
        if self.case.expect == "failed":
            return self.clean_failure and self.resumed == self.unfaulted
        return self.outcome == self.unfaulted

    @property
    def lost(self) -> bool:
        final = self.resumed if self.resumed is not None else self.outcome
        return final != self.unfaulted

    @property
    def passed(self) -> bool:
        return self.fired and self.verdict_ok and not self.differences and self.requests <= self.limit and not self.note

    @property
    def duplicates(self) -> int:
        return sum(1 for d in self.differences if d.startswith("+"))


@dataclass
class WholeRun:
    results: list[WholeResult] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    # what the real parts kept only in memory, read before they stopped (``Parts.objects``): the leak scan's input
    objects: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> set[str]:
        return {KIND_OF[r.case.kind] for r in self.results if r.fired}

    @property
    def boundaries(self) -> set[str]:
        return {r.case.boundary for r in self.results if r.fired}

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    @property
    def lost(self) -> int:
        return sum(1 for r in self.results if r.lost)

    @property
    def failed(self) -> list[WholeResult]:
        return [r for r in self.results if not r.passed]


# -- the real parts -------------------------------------------------------------------------------------------
class _AppHealth(_Health):
    """``faults._Health`` with one more path: ``/app/<tag>`` answers as the app the request ``<tag>`` rolled out
    (its durable cluster's serving image): 503 while ``<tag>/unhealthy`` exists and a run's image serves."""

    apps: Path = Path("/nonexistent")

    def do_GET(self) -> None:  # noqa: N802
        if not self.path.startswith("/app/"):
            return super().do_GET()
        fakes = self.apps / self.path.removeprefix("/app/").strip("/")
        state = fakes / "state.json"
        serving = json.loads(state.read_text()).get("serving", BASE_IMAGE) if state.exists() else BASE_IMAGE
        self.path = "/down/" if (fakes / "unhealthy").exists() and serving != BASE_IMAGE else "/up/"
        return super().do_GET()


class Parts:
    """The real parts the cases need, each started once; a proxy (or two, REST and git) per request."""

    def __init__(self, stack: ExitStack, work: Path, apps: Path, boundaries: set[str]):
        self.stack = stack
        self.work = work
        self.forge: ForgeParts | None = None
        self.llm: Any = None
        self.health_url = ""
        self.repositories: list[str] = []  # the forge repositories the requests were wired to
        if boundaries & {"forge-rest", "forge-git"}:
            self.forge = ForgeParts(stack, work / "forge-parts", ci=True)
        if "llm" in boundaries:
            from promptship_sandbox.llm_server import running_llm_stand_in

            self.llm = stack.enter_context(running_llm_stand_in())
        if "health" in boundaries:
            handler = type("AppHealth", (_AppHealth,), {"apps": apps})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            self.health_url = f"127.0.0.1:{server.server_address[1]}"

    def objects(self) -> dict[str, str]:
        """What these parts keep only in memory, for the campaign's leak scan (everything they write to disk is
        under the campaign's work directory, which it scans as files): the LLM stand-in's request log, cloud and
        local, headers and bodies apart (``leaks.llm_stand_in_objects``), and the forge's API objects of every
        repository a request was wired to — PRs, issues, comments, branches, statuses, check runs, job logs
        (``leaks.forge_api_objects``). The fault proxies and the health app keep no bodies."""
        from promptship_sandbox.reliability.leaks import forge_api_objects, llm_stand_in_objects

        out: dict[str, str] = {}
        if self.llm is not None:
            out |= llm_stand_in_objects(self.llm.requests)
        if self.forge is not None and self.repositories:
            forge = self.forge.forge
            out |= forge_api_objects(forge.api_url, forge.token, self.repositories, git_root=forge.root / "git")
        return out

    def proxy(self, upstream: str, name: str) -> FaultProxy:
        return self.stack.enter_context(running_fault_proxy(upstream, name=name, slow_s=SLOW_S, retry_after_s=1))


@dataclass
class Wired:
    """One request's proxies and the boundaries.json that names them."""

    boundary: WholeBoundary
    repository: str
    proxies: dict[str, FaultProxy]  # "rest"/"git", "llm" or "health"

    @property
    def faulted(self) -> FaultProxy:
        return self.proxies["git" if self.boundary == "forge-git" else next(iter(self.proxies))]

    def requests(self) -> int:
        return self.faulted.requests

    def config(self, parts: Parts, tag: str) -> dict[str, dict[str, str]]:
        if self.boundary in ("forge-rest", "forge-git"):
            assert parts.forge is not None
            rest, git = self.proxies["rest"], self.proxies["git"]
            return {"forge": {"api_url": rest.url + "/api/v3", "git_url": git.url, "token": parts.forge.token}}
        if self.boundary == "llm":
            return {"llm": {"base_url": self.proxies["llm"].url}}
        return {"health": {"url": f"{self.proxies['health'].url}/app/{tag}"}}


def wire(parts: Parts, boundary: WholeBoundary, tag: str) -> Wired:
    """The proxies of request ``tag`` (and its repository on the forge)."""
    repository = f"{OWNER}/{tag}"
    if boundary in ("forge-rest", "forge-git"):
        forge = parts.forge
        assert forge is not None
        forge.forge.seed_repository(OWNER, tag, forge.seed)
        parts.repositories.append(repository)
        web = forge.forge.web_url
        proxies = {"rest": parts.proxy(web, f"{tag}-rest"), "git": parts.proxy(web, f"{tag}-git")}
    elif boundary == "llm":
        proxies = {"llm": parts.proxy(parts.llm.base_url, f"{tag}-llm")}
    else:
        proxies = {"health": parts.proxy(parts.health_url, f"{tag}-health")}
    return Wired(boundary, repository, proxies)


def real_effects(parts: Parts, w: Wired, s: kc.Submitted) -> dict[str, int]:
    """The side effects of request ``s`` counted on the real part (not through the proxy)."""
    if w.boundary in ("forge-rest", "forge-git"):
        assert parts.forge is not None
        http = parts.forge._http
        pulls = http.get(f"/repos/{w.repository}/pulls", params={"state": "all", "per_page": 100})
        pulls.raise_for_status()
        branches = http.get(f"/repos/{w.repository}/branches", params={"per_page": 100})
        branches.raise_for_status()
        prs = [p for p in pulls.json() if not p["head"]["ref"].startswith("revert-")]
        return {
            "forge prs": len(prs),
            "forge merged": sum(1 for p in prs if p.get("merged_at")),
            "forge branches": len(branches.json()),
        }
    if w.boundary == "llm":
        from sqlalchemy import func, select

        from promptship.store.ledger import LLMCallRow

        store = kc._store(s.fakes)
        with store.engine.connect() as conn:  # type: ignore[attr-defined]
            charges = int(conn.execute(select(func.count()).select_from(LLMCallRow)).scalar() or 0)
        answered = sum(1 for r in parts.llm.completions() if r.contains(f"[{s.tag}]"))
        return {"ledger charges": charges, "charge without its provider call": max(charges - answered, 0)}
    return {}


def run_limit(w: Wired, base_requests: int, base_counts: kc.Counts, resumed: bool) -> int:
    """Most requests docs/CONTRACTS.md allows the faulted run (and the run that resumed it) on its boundary."""
    again = base_requests if resumed else 0
    if w.boundary == "llm":
        return LLM_ATTEMPTS_PER_CALL * max(base_requests, 1) + again
    if w.boundary == "health":
        steps = json.loads(str(base_counts.values["steps"]))
        checks = sum(n for step, n in steps.items() if step.startswith("check_health"))
        return HEALTH_PROBES_PER_CHECK * max(checks, 1)
    return STEP_ATTEMPTS * max(base_requests, 1) + again


# -- one run --------------------------------------------------------------------------------------------------
def _wired(harness: kc.Harness, parts: Parts, boundary: WholeBoundary, tag: str) -> tuple[Wired, Path]:
    w = wire(parts, boundary, tag)
    fakes = harness.work / tag
    fakes.mkdir(parents=True, exist_ok=True)
    write_boundaries(fakes, w.config(parts, tag))
    return w, fakes


def _ended(s: kc.Submitted) -> bool:
    return kc.attempt_ended(s) and kc.flow_state(s.flow_run_id) in ("COMPLETED", "FAILED", "CRASHED")


def _report(s: kc.Submitted) -> tuple[str | None, str]:
    report = kc._store(s.fakes).run(s.key)
    if report is None:
        return None, ""
    # what ended a failed run is the report step's error ("after <step>: <ServiceError class>: …")
    error = next((st.error for st in reversed(report.steps) if st.step == "report" and st.error), "")
    return report.outcome, error or ""


@dataclass
class Baseline:
    outcome: str | None
    counts: kc.Counts
    real: dict[str, int]
    requests: int
    note: str = ""


def run_baseline(harness: kc.Harness, parts: Parts, boundary: WholeBoundary, shape: Shape) -> Baseline:
    tag = f"whole-{boundary}-unfaulted-{shape}"
    w, _ = _wired(harness, parts, boundary, tag)
    s = kc.submit(harness, tag, shape, repository=w.repository)
    if not kc.wait_for(lambda: _ended(s), RUN_TIMEOUT_S):
        return Baseline(None, kc.counts(s), {}, 0, note=f"did not end (flow run {kc.flow_state(s.flow_run_id)})")
    outcome, error = _report(s)
    note = "" if kc.flow_state(s.flow_run_id) == "COMPLETED" else f"flow run {kc.flow_state(s.flow_run_id)}: {error}"
    return Baseline(outcome, kc.counts(s), real_effects(parts, w, s), w.requests(), note=note)


def run_whole_case(harness: kc.Harness, parts: Parts, case: WholeCase, unfaulted: Future[Baseline]) -> WholeResult:
    """Run ``case`` through the deployment; clear its fault; resume a clean failure; compare with the unfaulted
    run (which runs beside it)."""
    started = time.monotonic()
    tag = case.tag
    w, fakes = _wired(harness, parts, case.boundary, tag)
    proxy = w.faulted
    match = case.match.replace("<repository>", f"/{w.repository}.git")
    proxy.inject(case.kind, count=case.count, match=match, method=case.method)
    if case.kind == "dns_failure":  # the gateway's provider URL is fixed when it is built: build it unresolvable
        write_boundaries(fakes, w.config(parts, tag))
    stop = threading.Event()
    if case.expect == "rolled_back":  # the outage ends once the rollback is recorded (see the module docstring)
        threading.Thread(target=_clear_after_rollback, args=(fakes, proxy, stop), daemon=True).start()
    s = kc.submit(harness, tag, case.shape, repository=w.repository)
    ended = kc.wait_for(lambda: _ended(s), RUN_TIMEOUT_S)
    stop.set()
    outcome, error = _report(s)
    state = kc.flow_state(s.flow_run_id)
    fired_bursts = proxy.fired[case.kind]
    proxy.clear()
    if case.kind == "dns_failure":
        write_boundaries(fakes, w.config(parts, tag))  # the name resolves again: the resumed run's gateway
    base = unfaulted.result()
    result = WholeResult(case, fired=False, outcome=outcome, unfaulted=base.outcome, error=error[:300])
    if base.note:
        result.note = f"the unfaulted run: {base.note}"
    elif not ended:
        result.note = f"the run did not end (flow run {state})"
    resumed = outcome == "failed"
    if resumed:
        if state != "FAILED":
            result.note = f"failed, but Prefect shows the flow run {state}"
        done = subprocess.run(
            [sys.executable, "-m", "promptship.cli", "resume", "--force", s.flow_run_id],
            cwd=harness.root,
            env=harness.env(PROMPTSHIP_TEST_FAKES_DIR=str(fakes)),
            capture_output=True,
            timeout=RUN_TIMEOUT_S,
        )
        (harness.work / f"{tag}-resume.log").write_bytes(done.stdout + done.stderr)
        result.resumed = _report(s)[0]
        if done.returncode != 0:
            result.note = f"promptship resume --force exited {done.returncode}"
    if case.kind in OUTAGE_KINDS:  # before any connection: the proxy saw nothing; the run met the outage
        met = result.clean_failure if case.expect == "failed" else _health_gate_failed(s)
        result.fired = fired_bursts > 0 and met
    else:
        result.fired = fired_bursts > 0
    found = kc.counts(s)
    expected = base.counts
    if resumed:  # the failed flow run published its report (run- and steps- artifacts), the resumed one its own
        expected = kc.Counts({**base.counts.values, "artifacts": 2 * int(str(base.counts.values["artifacts"]))})
    result.differences = found.diff(expected)
    real = real_effects(parts, w, s)
    result.differences += [
        f"{'+' if real.get(k, 0) > v else '-'}{k} {real.get(k, 0)} vs {v}"
        for k, v in base.real.items()
        if real.get(k, 0) != v
    ]
    result.requests = w.requests()
    if case.boundary == "llm" and case.kind in OUTAGE_KINDS:
        # the proxy saw none of the gateway's attempts during the outage; its error says how many it made
        made = re.search(r"after (\d+) attempts", error)
        result.requests += int(made.group(1)) if made else 0
    result.limit = run_limit(w, base.requests, base.counts, resumed)
    result.seconds = time.monotonic() - started
    return result


def _clear_after_rollback(fakes: Path, proxy: FaultProxy, stop: threading.Event) -> None:
    while not stop.is_set():
        if (fakes / "state.json").exists() and JsonState(fakes).read().get("rollbacks", 0) >= 1:
            proxy.clear()
            return
        stop.wait(0.05)


def _health_gate_failed(s: kc.Submitted) -> bool:
    """The run's first health check said unhealthy (what it met was the outage: the app was serving)."""
    store = kc._store(s.fakes)
    for attempt in store.attempts(s.key):
        for record in store.attempt_steps(attempt.id):
            if record.step == "check_health":
                return record.verdict == "unhealthy"
    return False


# -- the part -------------------------------------------------------------------------------------------------
def run_whole_cases(harness: kc.Harness, cases: tuple[WholeCase, ...], work: Path) -> WholeRun:
    """The unfaulted run of each (boundary, shape) and every case, side by side (each its own fakes, store and
    proxy), through the deployment and the campaign's worker; a case is compared once its unfaulted run ended."""
    started = time.monotonic()
    run = WholeRun()
    with ExitStack() as stack:
        parts = Parts(stack, work, harness.work, {c.boundary for c in cases})
        shapes: list[tuple[WholeBoundary, Shape]] = sorted({(c.boundary, c.shape) for c in cases})
        # the unfaulted runs are submitted first (the pool starts them first), so a case that waits for its own
        # never holds a thread one of them needs
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            bases = {
                key: pool.submit(contextvars.copy_context().run, run_baseline, harness, parts, *key) for key in shapes
            }
            futures = {
                c: pool.submit(
                    contextvars.copy_context().run, run_whole_case, harness, parts, c, bases[(c.boundary, c.shape)]
                )
                for c in cases
            }
            run.results = [futures[c].result() for c in cases]
        run.objects = parts.objects()  # before the parts stop: the stand-in's log and the forge live in memory
    run.seconds = time.monotonic() - started
    return run


def table_lines(run: WholeRun) -> list[str]:
    header = (
        f"{'boundary':<11} {'fault':<30} {'fired':<5} {'outcome':<26} {'unfaulted':<11} {'duplicates':<10} "
        f"{'requests/limit':>14} {'seconds':>7}  ok"
    )
    lines = [header, "-" * len(header)]
    for r in run.results:
        outcome = str(r.outcome)
        if r.outcome == "failed":
            outcome += f" ({SERVICE[r.case.boundary]})" if r.clean_failure else " (service not named)"
        if r.resumed is not None:
            outcome += f" → {r.resumed}"
        dup = "0" if not r.differences else "; ".join(r.differences)
        ok = "yes" if r.passed else "NO" + (f" ({r.note})" if r.note else "")
        lines.append(
            f"{r.case.boundary:<11} {r.case.name:<30} {'yes' if r.fired else 'NO':<5} {outcome:<26} "
            f"{str(r.unfaulted):<11} {dup:<10} {f'{r.requests}/{r.limit}':>14} {r.seconds:>7.1f}  {ok}"
        )
    lines.append(
        "(outcome: the report's when the run ended, '→' the outcome after the fault was cleared and `promptship "
        "resume --force` ran; unfaulted: the whole run of the same shape on the same boundary; duplicates: counts "
        "of the fakes, store, Prefect and the real part that differ from it)"
    )
    return lines


def print_whole_part(run: WholeRun | None, echo: Callable[[str], None]) -> WholeRun:
    """Print the table of ``run`` (None: the part was not run); the campaign's part 3b."""
    echo("")
    if run is None:
        echo("Part 3b: whole runs under faults: not run (--no-faults)")
        return WholeRun()
    echo(
        "Part 3b: whole runs under faults (the dev-cycle deployment on the worker; one boundary a real part behind "
        "the fault proxy, the others the durable fakes; each compared with the unfaulted whole run)"
    )
    for line in table_lines(run):
        echo(line)
    echo(
        f"whole-run cases took {run.seconds:.0f} s ({len(run.results)} cases and their unfaulted runs side by side, "
        "beside part 3)"
    )
    return run
