"""Faults at the boundaries: the fault proxy (``promptship_sandbox.faultproxy``) in front of each outside service
the pipeline talks to, the real part behind it, the product's own adapter in front of it.

Each case makes one request the way its step does — the adapter call inside a Prefect task with the step
layer's retry policy (``tasks._step``: 1 + 3 attempts, only for retryable ``ServiceError``s, delays 1/3/9 s,
at least the error's Retry-After) — with a fault scheduled on the proxy, and compares it with the same
request made without a fault on the same boundary:

- the verdict must be the unfaulted one, or a clean ``failed`` naming the service (a ``ServiceError`` of that
  service) that, once the fault is cleared, the same request made again (what ``promptship resume`` does: the
  step runs again with the same run key and first finds its side effect) turns into the unfaulted verdict;
- the side effects counted on the real part (PRs and branches on the forge, charges in the ledger and
  completions at the LLM stand-in) must equal the unfaulted request's — never a second PR, never a charge
  without a provider call;
- the requests the proxy saw must stay within what docs/CONTRACTS.md ("Retries") states for that service;
- the fault must have fired (a case whose fault never fired fails).

Boundaries (real part behind the proxy — the request — what is counted):

- ``forge-rest``: the local forge's REST API — ``GitHubHost.find_or_create_pull_request`` (open_pull_request)
  — the PRs of the branch;
- ``forge-git``: the forge's git smart-HTTP — ``prepare_workspace``, a commit, ``push_branch`` (generate_code's
  git part) — the branch's head on the forge;
- ``llm``: the LLM stand-in behind the real ``LiteLLMGateway`` — ``LiteLLMGateway.complete`` (a step's LLM
  call) — ledger charges;
- ``gateway``: the gateway service (``servers/gateway.py``) as the agent sees it — the agent's chat completion
  with its per-run key (2 attempts, as the agent's SDK) — ledger charges against the stand-in's completions;
- ``health``: an HTTP app serving ``/health`` (200, or 503 for the unhealthy target) — ``HttpHealthProbe.check``
  (check_health) — the verdicts on a healthy and an unhealthy target;
- ``kube-apiserver`` (full campaign only: the control plane takes a minute to start): the sandbox control
  plane's API server (TLS, so the proxy runs in tcp mode) — ``KubeCluster.apply_manifests`` (roll_out's apply)
  — the Deployment's generation;
- ``agent-server`` (full campaign only: it and the gateway it needs take the longest to start): the real
  OpenHands agent-server (``scripts/openhands.sh up``), its agent's LLM calls through the gateway service to the
  scripted stand-in — ``OpenHandsAgent.start`` + ``result`` for a run key (generate_code's agent part) — the
  conversations of the run key, the instructions they were given and the agent's LLM calls.

The outage kinds (``connect_refused``, ``dns_failure``) act before any connection, so the proxy cannot count
the client's attempts: the case counts the step's attempts instead (each one met the outage), and a clean
failure must name the service, say ``retryable`` where docs/CONTRACTS.md says so, and have used all 4 attempts.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from promptship.errors import ServiceError
from promptship_sandbox.faultproxy import OUTAGE_KINDS, FaultKind, FaultProxy, running_fault_proxy

BoundaryName = Literal["forge-rest", "forge-git", "llm", "gateway", "health", "kube-apiserver", "agent-server"]
Expect = Literal["same", "failed"]

# the fault kinds; the proxy's 502 and 503 are both "5xx burst"
KIND_OF: dict[str, str] = {
    "http_502": "5xx burst",
    "http_503": "5xx burst",
    "rate_limit_429": "429 Retry-After",
    "secondary_rate_limit": "secondary rate limit",
    "reset": "connection reset",
    "slow_body": "slow body",
    "truncated": "truncated",
    "refuse": "connection reset",  # at accept: the TCP connect succeeded, so it is a reset, not a refusal
    "connect_refused": "connect refused",
    "dns_failure": "DNS failure",
}
STEP_ATTEMPTS = 4  # tasks._step: 1 + len(RETRY_DELAYS_S)
OUTAGE = 1000  # a fault that lasts until it is cleared
CLIENT_TIMEOUT_S = 3.0  # every client's read timeout in the campaign; the proxy's slow body stalls longer
AGENT_TIMEOUT_S = 15.0  # the agent's client waits longer: its first call meets a cold gateway
AGENT_SERVER_TIMEOUT_S = 10.0  # OpenHandsAgent's client: starting a conversation takes seconds on a loaded host
AGENT_RESULT_TIMEOUT_S = 120.0
SLOW_S = 20.0
OWNER, NAME = "demo", "app"
REPO = f"{OWNER}/{NAME}"


@dataclass(frozen=True)
class FaultCase:
    boundary: BoundaryName
    kind: FaultKind
    count: int = 1
    match: str = ""
    method: str | None = None
    expect: Expect = "same"
    after: int = 0  # matching requests let through first

    @property
    def name(self) -> str:
        times = "outage" if self.count >= OUTAGE else f"x{self.count}"
        where = f" {self.method or ''} {self.match}".rstrip() if self.match else ""
        return f"{self.kind} {times}{where}" + (f" after {self.after}" if self.after else "")


PULLS = f"/api/v3/repos/{REPO}/pulls"
CONVERSATIONS = "/api/conversations"
RECEIVE = f"/{REPO}.git/git-receive-pack"
FULL: tuple[FaultCase, ...] = (
    FaultCase("forge-rest", "http_502", 2, "/api/v3/repos/"),
    FaultCase("forge-rest", "truncated", 1, PULLS, "POST"),
    FaultCase("forge-rest", "reset", 1, PULLS, "POST"),
    FaultCase("forge-rest", "secondary_rate_limit", 2, "/api/v3/"),
    FaultCase("forge-rest", "rate_limit_429", 2, "/api/v3/"),
    FaultCase("forge-rest", "slow_body", 1, PULLS, "GET"),
    FaultCase("forge-rest", "refuse", OUTAGE, expect="failed"),
    FaultCase("forge-rest", "connect_refused", OUTAGE, expect="failed"),
    FaultCase("forge-rest", "dns_failure", OUTAGE, expect="failed"),
    FaultCase("forge-git", "http_503", 1, RECEIVE),
    FaultCase("forge-git", "truncated", 1, RECEIVE),
    FaultCase("forge-git", "reset", 1, RECEIVE),
    FaultCase("forge-git", "rate_limit_429", 1, f"/{REPO}.git/info/refs"),
    FaultCase("forge-git", "slow_body", 1, RECEIVE),
    FaultCase("forge-git", "refuse", OUTAGE, expect="failed"),
    FaultCase("forge-git", "dns_failure", OUTAGE, expect="failed"),
    FaultCase("llm", "http_503", 2),
    FaultCase("llm", "rate_limit_429", 1),
    FaultCase("llm", "reset", 1),
    FaultCase("llm", "truncated", 1),
    FaultCase("llm", "slow_body", 1),
    FaultCase("llm", "refuse", OUTAGE, expect="failed"),
    FaultCase("llm", "connect_refused", OUTAGE, expect="failed"),
    FaultCase("gateway", "http_502", 1),
    FaultCase("gateway", "truncated", 1),
    FaultCase("gateway", "reset", 1),
    FaultCase("gateway", "refuse", OUTAGE, expect="failed"),
    FaultCase("gateway", "connect_refused", OUTAGE, expect="failed"),
    FaultCase("gateway", "dns_failure", OUTAGE, expect="failed"),
    FaultCase("health", "http_503", 2),
    FaultCase("health", "reset", 2),
    FaultCase("health", "slow_body", 2),
    FaultCase("health", "truncated", 2),
    FaultCase("health", "refuse", 2),
    # TLS: the proxy sees connections, not requests (tcp mode); the adapter opens one per request here
    FaultCase("kube-apiserver", "refuse", 2),
    FaultCase("kube-apiserver", "reset", 2),
    FaultCase("kube-apiserver", "slow_body", 1),
    FaultCase("kube-apiserver", "refuse", OUTAGE, expect="failed"),
    # the agent-server: a retried start must find the conversation the first one made, never start a second
    FaultCase("agent-server", "http_503", 2, CONVERSATIONS, "POST"),
    FaultCase("agent-server", "truncated", 1, CONVERSATIONS, "POST"),
    FaultCase("agent-server", "reset", 1, CONVERSATIONS, "POST"),
    FaultCase("agent-server", "slow_body", 1, CONVERSATIONS, "POST"),
    # the polls of result(): the start's look-up let through, then 3 failed looks (result() tolerates 5 in a row)
    FaultCase("agent-server", "http_502", 3, CONVERSATIONS + "/", "GET", after=1),
    FaultCase("agent-server", "refuse", OUTAGE, expect="failed"),
    FaultCase("agent-server", "connect_refused", OUTAGE, expect="failed"),
    FaultCase("agent-server", "dns_failure", OUTAGE, expect="failed"),
)
QUICK: tuple[FaultCase, ...] = (  # no LLM boundary: the gateway's start-up (LiteLLM, the gate) is the costly one
    FaultCase("forge-rest", "truncated", 1, PULLS, "POST"),
    FaultCase("forge-rest", "secondary_rate_limit", 2, "/api/v3/"),
    FaultCase("forge-rest", "connect_refused", OUTAGE, expect="failed"),
    FaultCase("forge-rest", "dns_failure", OUTAGE, expect="failed"),
    FaultCase("forge-git", "reset", 1, RECEIVE),
    FaultCase("forge-git", "refuse", OUTAGE, expect="failed"),
    FaultCase("health", "slow_body", 2),
    FaultCase("health", "http_503", 2),
)


class Boundary(Protocol):
    name: BoundaryName
    service: str  # the ServiceError.service a clean failure names
    proxy: FaultProxy
    step_retries: bool  # the request is a step's call (retried by the step layer) or not (the agent's own)
    outage_retryable: bool  # docs/CONTRACTS.md: a connection that cannot be made is a retryable failure

    def request(self, tag: str) -> str:
        """Make the request of run ``tag``; its verdict (the same string for every tag when all goes well)."""
        ...

    def effects(self, tag: str) -> dict[str, int]:
        """The side effects of run ``tag`` counted on the real part (not through the proxy)."""
        ...

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        """Most requests through the proxy docs/CONTRACTS.md allows for this request."""
        ...


@dataclass
class CaseResult:
    case: FaultCase
    fired: int
    verdict: str
    unfaulted: str
    differences: list[str]
    requests: int
    limit: int
    resumed: str | None = None
    seconds: float = 0.0
    note: str = ""
    service: str = ""  # the ServiceError.service a clean failure of this boundary names
    attempts: int = 0  # the step's attempts of the faulted request (the request function's calls)
    outage_retryable: bool = True

    @property
    def clean_failure(self) -> bool:
        return self.verdict.startswith(f"failed: {self.service}" if self.service else "failed:")

    @property
    def misclassified(self) -> str:
        """An outage (nothing listens, the name does not resolve) must end as the service's connection failure:
        retryable where CONTRACTS.md says so, after all the step's attempts; '' when it did."""
        if self.case.kind not in OUTAGE_KINDS or not self.clean_failure:
            return ""
        retryable = "(retryable)" in self.verdict
        if retryable != self.outage_retryable:
            said = "retryable" if self.outage_retryable else "final"
            return f"{'retryable' if retryable else 'final'}, CONTRACTS.md says {said}"
        if retryable and self.attempts != self.limit:
            return f"{self.attempts} attempts of {self.limit}"
        return ""

    @property
    def passed(self) -> bool:
        outcome_ok = self.verdict == self.unfaulted or (self.clean_failure and self.resumed == self.unfaulted)
        return (
            self.fired > 0
            and outcome_ok
            and not self.differences
            and self.requests <= self.limit
            and not self.misclassified
        )

    @property
    def duplicates(self) -> int:
        return sum(1 for d in self.differences if d.startswith("+"))


# -- one request, as a step makes it --------------------------------------------------------------------------
def as_step(fn: Callable[[], str], name: str, *, retries: bool) -> str:
    """``fn`` in a Prefect task with the step layer's retry policy (or none); a ServiceError it ends with
    becomes ``failed: <service>``."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from tasks._step import RETRY_DELAYS_S, retry_if_retryable

    step = task(
        name=name,
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=len(RETRY_DELAYS_S) if retries else 0,
        retry_delay_seconds=list(RETRY_DELAYS_S),
        retry_condition_fn=retry_if_retryable,
    )(fn)
    try:
        return step()
    except ServiceError as exc:
        return f"failed: {exc.service}" + (" (retryable)" if exc.retryable else "")


def run_case(
    boundary: Boundary, case: FaultCase, unfaulted: str, base_effects: dict[str, int], base_requests: int
) -> CaseResult:
    tag = f"{case.boundary}-{case.kind}-{case.count}-{(case.method or '').lower()}{len(case.match)}-{case.after}"
    proxy = boundary.proxy
    proxy.clear()
    before, fired_before = proxy.requests, proxy.fired[case.kind]
    attempts = 0

    def request() -> str:
        nonlocal attempts
        attempts += 1
        return boundary.request(tag)

    started = time.monotonic()
    proxy.inject(case.kind, count=case.count, match=case.match, method=case.method, after=case.after)
    verdict = as_step(request, f"fault-{tag}", retries=boundary.step_retries)
    requests = proxy.requests - before
    fired = proxy.fired[case.kind] - fired_before
    limit = boundary.limit(base_requests, case)
    if case.kind in OUTAGE_KINDS:
        # before any connection: the proxy saw nothing; every attempt of the step met the outage
        fired = attempts if fired else 0
        requests, limit = attempts, STEP_ATTEMPTS if boundary.step_retries else 1
    proxy.clear()
    resumed = None
    if verdict.startswith("failed:"):  # the fault cleared: the request made again, as a resumed run makes it
        resumed = as_step(lambda: boundary.request(tag), f"resume-{tag}", retries=boundary.step_retries)
    found = boundary.effects(tag)
    differences = [
        f"{'+' if found.get(k, 0) > v else '-'}{k} {found.get(k, 0)} vs {v}"
        for k, v in base_effects.items()
        if found.get(k, 0) != v
    ]
    return CaseResult(
        case,
        fired=fired,
        verdict=verdict,
        unfaulted=unfaulted,
        differences=differences,
        requests=requests,
        limit=limit,
        resumed=resumed,
        seconds=time.monotonic() - started,
        service=boundary.service,
        attempts=attempts,
        outage_retryable=boundary.outage_retryable,
    )


def run_boundary(boundary: Boundary, cases: list[FaultCase]) -> list[CaseResult]:
    """The unfaulted request, then each case on the same boundary; in a flow run of its own (``fault-cases-…``,
    its task runs the requests), as steps run inside the dev-cycle flow."""
    from prefect import flow

    def cases_of_one_boundary() -> list[CaseResult]:  # no parameters: Prefect would validate and store them
        return _run_boundary(boundary, cases)

    return flow(name=f"fault-cases-{boundary.name}", persist_result=False)(cases_of_one_boundary)()


def _run_boundary(boundary: Boundary, cases: list[FaultCase]) -> list[CaseResult]:
    before = boundary.proxy.requests
    unfaulted = as_step(
        lambda: boundary.request("unfaulted"), f"unfaulted-{boundary.name}", retries=boundary.step_retries
    )
    base_requests = boundary.proxy.requests - before
    base_effects = boundary.effects("unfaulted")
    if unfaulted.startswith("failed:"):
        return [CaseResult(c, 0, "-", unfaulted, [], 0, 0, note=f"the unfaulted request: {unfaulted}") for c in cases]
    return [run_case(boundary, c, unfaulted, base_effects, base_requests) for c in cases]


# -- the forge -------------------------------------------------------------------------------------------
class ForgeParts:
    """The forge with one repository, a REST proxy and a git proxy in front of it, and the adapter on both."""

    def __init__(self, stack: ExitStack, work: Path, *, ci: bool = False):
        """``ci``: the forge runs CI (``make test`` of the seed's Makefile, which passes) on every push, as whole
        runs need to get past ``wait_for_ci``; the step-level cases need none."""
        from pydantic import SecretStr

        from promptship.adapters.github import GitHubHost
        from promptship_sandbox import credentials
        from promptship_sandbox.forge import running_forge

        self.work = work
        self.token = credentials.github_token("ghp_")
        self.forge = stack.enter_context(running_forge(work / "forge", run_ci=ci, ci_workers=3 if ci else 1))
        self.forge.add_user(OWNER, token=self.token)
        self.seed = seed = work / "seed"
        seed.mkdir(parents=True)
        (seed / "README.md").write_text("fault cases\n")
        if ci:
            (seed / "Makefile").write_text("test:\n\t@echo ok\n")
        self.forge.seed_repository(OWNER, NAME, seed)
        web = self.forge.api_url.removesuffix("/api/v3")
        self.rest = stack.enter_context(running_fault_proxy(web, name="forge-rest", slow_s=SLOW_S, retry_after_s=1))
        self.git = stack.enter_context(running_fault_proxy(web, name="forge-git", slow_s=SLOW_S, retry_after_s=1))
        self._host_class, self._secret = GitHubHost, SecretStr(self.token)
        self.host = self.rest_host()
        self._http = httpx.Client(
            base_url=self.forge.api_url, headers={"Authorization": f"token {self.forge.token}"}, timeout=30
        )
        self._lock = threading.Lock()

    def rest_host(self) -> Any:
        """The adapter, built for the proxies' addresses as they are now (a new step process builds its own
        client: during a ``dns_failure`` outage the proxy's URL names a host that does not resolve)."""
        from github import Auth, Github

        gh = Github(
            base_url=self.rest.url + "/api/v3",
            auth=Auth.Token(self.token),
            retry=None,
            timeout=int(CLIENT_TIMEOUT_S),
            seconds_between_requests=0,
            seconds_between_writes=0,
        )
        git = self.git
        return self._host_class(
            gh,
            token=self._secret,
            git_url_for=lambda repository: f"{git.url}/{repository}.git",
            git_stall_s=CLIENT_TIMEOUT_S,
        )

    def pushed_branch(self, tag: str) -> str:
        """A branch of run ``tag`` pushed straight to the forge (not through the proxy), for the PR cases."""
        branch = f"promptship/{tag}"
        with self._lock:
            if self.branch_head(branch) is None:
                ws = self.work / "direct" / tag
                subprocess.run(
                    ["git", "clone", "-q", self.forge.git_url(OWNER, NAME), str(ws)],
                    check=True,
                    env=_git_env(self.forge.token),
                )
                (ws / f"{tag}.txt").write_text(tag + "\n")
                subprocess.run(["git", "-C", str(ws), "add", "-A"], check=True)
                subprocess.run(
                    ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", tag],
                    check=True,
                )
                subprocess.run(
                    ["git", "-C", str(ws), "push", "-q", "origin", f"HEAD:refs/heads/{branch}"],
                    check=True,
                    env=_git_env(self.forge.token),
                )
        return branch

    def branch_head(self, branch: str) -> str | None:
        r = self._http.get(f"/repos/{REPO}/branches/{branch}")
        return r.json()["commit"]["sha"] if r.status_code == 200 else None

    def pulls_of(self, branch: str) -> int:
        r = self._http.get(f"/repos/{REPO}/pulls", params={"state": "all", "per_page": 100})
        r.raise_for_status()
        return sum(1 for p in r.json() if p["head"]["ref"] == branch)


def _git_env(token: str) -> dict[str, str]:
    import os

    from promptship.adapters.github import git_auth_env

    return {**os.environ, **git_auth_env(token)}


class ForgeRest:
    name: BoundaryName = "forge-rest"
    service = "codehost"
    step_retries = True
    outage_retryable = True  # network errors: retryable, not retried by the adapter

    def __init__(self, parts: ForgeParts):
        self.parts = parts
        self.proxy = parts.rest

    def request(self, tag: str) -> str:
        branch = self.parts.pushed_branch(tag)
        pr = self.parts.rest_host().find_or_create_pull_request(
            REPO, run_key=tag, branch=branch, base_branch="main", title=f"Change {tag}", body="A change."
        )
        truth = self.parts.pulls_of(branch)
        return (
            "pr open"
            if pr.branch == branch and truth >= 1
            else f"WRONG: PR #{pr.number} reported, {truth} on the forge"
        )

    def effects(self, tag: str) -> dict[str, int]:
        return {"prs": self.parts.pulls_of(f"promptship/{tag}")}

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        # 5xx and network errors: the step's 4 attempts of the whole call; a rate-limited request is waited out
        # 5 times by the adapter (6 requests) before it counts as one failed attempt
        waits = 6 if case.kind in ("rate_limit_429", "secondary_rate_limit") else 1
        return STEP_ATTEMPTS * unfaulted_requests * waits


class ForgeGit:
    name: BoundaryName = "forge-git"
    service = "codehost"
    step_retries = True
    outage_retryable = True

    def __init__(self, parts: ForgeParts):
        self.parts = parts
        self.proxy = parts.git

    def request(self, tag: str) -> str:
        branch = f"promptship/git-{tag}"
        ws = self.parts.work / "ws" / tag
        host = self.parts.host
        host.prepare_workspace(REPO, "main", branch, str(ws))
        (ws / "change.txt").write_text(f"the change of {tag}\n")  # the same content on every attempt
        sha = host.push_branch(REPO, str(ws), branch)
        head = self.parts.branch_head(branch)
        return "pushed" if head == sha else f"WRONG: pushed {sha[:8]} reported, the forge has {head}"

    def effects(self, tag: str) -> dict[str, int]:
        return {"branches": 1 if self.parts.branch_head(f"promptship/git-{tag}") else 0}

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        # git over HTTPS retries nothing: 1 × 4 (the step's attempts); a clone makes its own requests again
        return STEP_ATTEMPTS * max(unfaulted_requests, 1) + 2


# -- the LLM path --------------------------------------------------------------------------------------------
class LLMParts:
    """The LLM stand-in with a proxy in front, the real LiteLLMGateway calling it through the proxy, and the
    gateway service with a second proxy in front (the agent's view)."""

    def __init__(self, stack: ExitStack, work: Path):
        import litellm

        from promptship.settings import Settings
        from promptship_sandbox.llm_gateway import running_sandbox_gateway

        litellm.suppress_debug_info = True  # its "Give Feedback" banner on each expected failure
        settings = Settings(home=work / "home")
        settings.llm.timeout_s = CLIENT_TIMEOUT_S
        self.provider: FaultProxy | None = None

        def via_proxy(url: str) -> str:
            self.provider = stack.enter_context(running_fault_proxy(url, name="llm", slow_s=SLOW_S, retry_after_s=1))
            return self.provider.url

        self.sandbox = stack.enter_context(running_sandbox_gateway(settings, llm_via=via_proxy))
        assert self.provider is not None
        self.service = stack.enter_context(running_fault_proxy(self.sandbox.url, name="gateway", slow_s=SLOW_S))
        self.gateway = self.sandbox.gateway

    def charges(self, run_key: str) -> int:
        from sqlalchemy import func, select

        from promptship.store.ledger import LLMCallRow

        with self.gateway.ledger.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(LLMCallRow.run_key == run_key)).scalar() or 0)

    def completions_for(self, run_key: str) -> int:
        """Completions that reached the stand-in for ``run_key`` (its prompt names it; the llm and gateway
        boundaries share the stand-in and run side by side)."""
        return sum(1 for r in self.sandbox.llm.completions() if r.contains(f"({run_key})"))


class LLMBehindGateway:
    name: BoundaryName = "llm"
    service = "llm"
    step_retries = True
    outage_retryable = False  # retried inside the gateway (4 per group × the chain); a failed chain is final

    def __init__(self, parts: LLMParts):
        self.parts = parts
        assert parts.provider is not None
        self.proxy = parts.provider

    def request(self, tag: str) -> str:
        from promptship.domain.results import LLMCall, LLMMessage

        reply = self.parts.gateway.complete(
            LLMCall(
                run_key=f"llm-{tag}", step="route", messages=(LLMMessage(role="user", content=f"say ok (llm-{tag})"),)
            )
        )
        return "answered" if f"(llm-{tag})" in reply.content else f"WRONG: answer {reply.content[:60]!r}"

    def effects(self, tag: str) -> dict[str, int]:
        # a charge per completion answered in full; none for a request the gateway gave up on
        return {"charges": self.parts.charges(f"llm-{tag}")}

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        # (1 + max_retries) attempts per model group × the groups of the fallback chain (CONTRACTS.md: 12 for the
        # local group, 20 for the cloud group); a failed chain is final: the step does not retry it
        return 20 * max(unfaulted_requests, 1)


class GatewayForAgent:
    name: BoundaryName = "gateway"
    service = "gateway"
    step_retries = False  # the agent's call, not a step's: its SDK retries (2 attempts), then its run decides
    outage_retryable = False  # the agent's 2 attempts are all it has; its run then decides

    AGENT_ATTEMPTS = 2

    def __init__(self, parts: LLMParts):
        self.parts = parts
        self.proxy = parts.service
        self._keys: dict[str, str] = {}
        self._model: dict[str, str] = {}

    def _access(self, tag: str) -> tuple[str, str]:
        if tag not in self._keys:
            gw = self.parts.gateway
            decision = gw.route("write a small change")
            access = gw.agent_access(f"agent-{tag}", decision, budget_usd=5.0)
            self._keys[tag] = access.api_key.get_secret_value()
            self._model[tag] = access.model.removeprefix("openai/")
        return self._keys[tag], self._model[tag]

    def request(self, tag: str) -> str:
        key, model = self._access(tag)
        last = ""
        for _ in range(self.AGENT_ATTEMPTS):
            try:
                r = httpx.post(
                    f"{self.proxy.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": model, "messages": [{"role": "user", "content": f"say ok (agent-{tag})"}]},
                    timeout=AGENT_TIMEOUT_S,
                )
            except httpx.TransportError as exc:
                last = type(exc).__name__
                continue
            if r.status_code in (429, 500, 502, 503):
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code != 200:
                return f"failed: gateway (HTTP {r.status_code})"
            content = r.json()["choices"][0]["message"]["content"] or ""
            return "answered" if f"(agent-{tag})" in content else f"WRONG: answer {content[:60]!r}"
        return f"failed: gateway ({last})"

    def effects(self, tag: str) -> dict[str, int]:
        charges = self.parts.charges(f"agent-{tag}")
        calls = self.parts.completions_for(f"agent-{tag}")
        # the agent's own retry after a lost answer is a second provider call, charged as such: what must hold is
        # one charge per provider call, never a charge without one (a call without a charge is counted too)
        return {
            "charge without its provider call": max(charges - calls, 0),
            "provider call not charged": max(calls - charges, 0),
        }

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        return self.AGENT_ATTEMPTS * max(unfaulted_requests, 1)


# -- the health URL ----------------------------------------------------------------------------------------
class _Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        status = 200 if self.path.startswith("/up/") else 503
        body = b'{"status":"ok"}' if status == 200 else b'{"status":"down"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HealthURL:
    name: BoundaryName = "health"
    service = "health"
    step_retries = True
    outage_retryable = True

    def __init__(self, stack: ExitStack):
        from promptship.adapters.health import HttpHealthProbe

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        self.proxy = stack.enter_context(
            running_fault_proxy(f"127.0.0.1:{server.server_address[1]}", name="health", slow_s=SLOW_S)
        )
        client = stack.enter_context(httpx.Client())
        self.probe = HttpHealthProbe(client, consecutive=3, retries=10, timeout_s=1.0, interval_s=0.05)

    def request(self, tag: str) -> str:
        # the same fault schedule meets a serving app and a failing one: neither verdict may change
        up = self.probe.check(f"{self.proxy.url}/up/{tag}").verdict
        down = self.probe.check(f"{self.proxy.url}/down/{tag}").verdict
        return f"{up} / {down}"

    def effects(self, tag: str) -> dict[str, int]:
        return {}

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        return 2 * 10  # health_retries (10) probes per check, two checks


# -- the kube-apiserver ------------------------------------------------------------------------------------
class KubeAPI:
    """The sandbox control plane's kube-apiserver (TLS) behind a tcp-mode proxy; the request is the roll_out
    step's apply (``KubeCluster.apply_manifests``: dry run of every manifest, then server-side apply)."""

    name: BoundaryName = "kube-apiserver"
    service = "cluster"
    step_retries = True
    outage_retryable = True
    NAMESPACE = "faults"

    def __init__(self, stack: ExitStack, work: Path):
        import json

        from promptship_sandbox.cluster import running_control_plane

        self.cp = stack.enter_context(running_control_plane(work / "control-plane"))
        self.proxy = stack.enter_context(
            running_fault_proxy(self.cp.api_url, mode="tcp", name="kube-apiserver", slow_s=SLOW_S)
        )
        config = json.loads(self.cp.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://{self.proxy.address}"
        self.kubeconfig = work / "kubeconfig-via-proxy"
        self.kubeconfig.write_text(json.dumps(config))
        direct = self._cluster(self.cp.kubeconfig)
        direct.api_request("POST", "/api/v1/namespaces", body={"metadata": {"name": self.NAMESPACE}})
        self.direct = direct

    def _cluster(self, kubeconfig: Path) -> Any:
        # a new client (and connection) per request, as a new step process has: the tcp-mode faults act on
        # connections, and a pooled one would let the request pass them by
        from promptship.adapters.kube import KubeCluster
        from promptship.settings import Settings
        from promptship.wiring import build_kube_api_client

        settings = Settings()
        settings.kube.kubeconfig = kubeconfig
        return KubeCluster(build_kube_api_client(settings), request_timeout_s=CLIENT_TIMEOUT_S)

    def _manifest(self, tag: str) -> dict[str, Any]:
        name = "d-" + "".join(ch if ch.isalnum() else "-" for ch in tag.lower())[:50].strip("-")
        labels = {"app": name}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": f"registry.local/app:{name}"}]},
                },
            },
        }

    def request(self, tag: str) -> str:
        from promptship.domain.request import DeployTarget

        manifest = self._manifest(tag)
        name = manifest["metadata"]["name"]
        cluster = self._cluster(self.kubeconfig)
        try:
            applied = cluster.apply_manifests(DeployTarget(namespace=self.NAMESPACE, deployment=name), [manifest])
        finally:
            cluster.api.close()
        found = self.direct.read_object(f"/apis/apps/v1/namespaces/{self.NAMESPACE}/deployments/{name}")
        ok = found is not None and applied.applied == (f"Deployment/{name}",)
        return "applied" if ok else f"WRONG: {applied.applied} reported, found {found is not None}"

    def effects(self, tag: str) -> dict[str, int]:
        name = self._manifest(tag)["metadata"]["name"]
        found = self.direct.read_object(f"/apis/apps/v1/namespaces/{self.NAMESPACE}/deployments/{name}")
        # an apply retried with the same manifest must not make a new generation (a second rollout)
        return {"deployment generations": int((found or {}).get("metadata", {}).get("generation", 0))}

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        return STEP_ATTEMPTS * max(unfaulted_requests, 1)  # 1 × 4 requests (1 connection each)


# -- the agent-server ---------------------------------------------------------------------------------------
class AgentServerParts:
    """The real OpenHands agent-server (``scripts/openhands.sh up``: scrubbed environment, session key) with a
    proxy in front; its agent's LLM is the gateway service of ``llm`` (the scripted stand-in behind it)."""

    def __init__(self, stack: ExitStack, work: Path, llm: LLMParts):
        from promptship_sandbox.agent_server import agent_server_installed, running_agent_server

        ok, why = agent_server_installed()
        if not ok:
            raise RuntimeError(f"the agent-server boundary needs the OpenHands agent-server: {why}")
        self.work = work
        self.llm = llm
        state = work / "openhands"
        state.mkdir(parents=True, exist_ok=True)
        self.server = stack.enter_context(running_agent_server(state))
        self.proxy = stack.enter_context(running_fault_proxy(self.server.url, name="agent-server", slow_s=SLOW_S))
        self.direct = stack.enter_context(
            httpx.Client(base_url=self.server.url, headers={"X-Session-API-Key": self.server.session_key}, timeout=30)
        )


class AgentServer:
    """generate_code's agent part: ``OpenHandsAgent.start`` (find the run key's conversation, else create it)
    and ``result``, with a client of its own per attempt (as a new step process has), through the proxy."""

    name: BoundaryName = "agent-server"
    service = "agent"
    step_retries = True
    outage_retryable = True  # lost connections and timeouts: AgentError(retryable)

    def __init__(self, parts: AgentServerParts):
        self.parts = parts
        self.proxy = parts.proxy
        self._decision: Any = None
        self._scripted: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def run_key(tag: str) -> str:
        return f"oh-{tag}"

    def _checkout(self, tag: str) -> Path:
        ws = self.parts.work / "agent-ws" / tag
        if not (ws / ".git").is_dir():
            ws.mkdir(parents=True, exist_ok=True)
            (ws / "README.md").write_text("fault cases\n")
            env = {"PATH": _path(), "HOME": str(ws), "GIT_CONFIG_NOSYSTEM": "1"}
            for args in (
                ["init", "-q", "-b", "main"],
                ["add", "-A"],
                ["-c", "user.name=seed", "-c", "user.email=seed@example.invalid", "commit", "-qm", "seed"],
            ):
                subprocess.run(["git", *args], cwd=ws, env=env, check=True, capture_output=True)
        return ws

    def request(self, tag: str) -> str:
        from promptship.adapters.openhands import OpenHandsAgent
        from promptship.domain.request import conversation_id_for
        from promptship.domain.results import AgentTask
        from promptship_sandbox.llm_server import ToolCall

        key, ws = self.run_key(tag), self._checkout(tag)
        marker = f"(run {key})"
        gateway = self.parts.llm.gateway
        with self._lock:
            if self._decision is None:
                self._decision = gateway.route("write a small change")
            if tag not in self._scripted:  # one script per run key: a second conversation would find none
                self._scripted.add(tag)
                self.parts.llm.sandbox.llm.script_conversation(
                    marker,
                    [
                        [ToolCall("file_editor", {"command": "create", "path": f"{ws}/change.txt", "file_text": "ok"})],
                        [ToolCall("finish", {"message": "created change.txt"})],
                    ],
                )
        access = gateway.agent_access(key, self._decision, budget_usd=5.0)  # per attempt, as generate_code
        task = AgentTask(
            run_key=key,
            conversation_id=conversation_id_for(key),
            instruction=f"Create change.txt containing ok {marker}.",
            workspace=str(ws),
            model=access.model,
            base_url=access.base_url,
            budget_usd=5.0,
            max_iterations=6,
            timeout_s=AGENT_RESULT_TIMEOUT_S,
        )
        with httpx.Client(base_url=self.proxy.url, timeout=AGENT_SERVER_TIMEOUT_S) as http:
            from pydantic import SecretStr

            agent = OpenHandsAgent(
                http, session_api_key=SecretStr(self.parts.server.session_key), poll_max_s=1.0, llm_num_retries=0
            )
            result = agent.result(agent.start(task, access), timeout_s=AGENT_RESULT_TIMEOUT_S)
        written = (ws / "change.txt").read_text() if (ws / "change.txt").exists() else None
        if result.verdict == "finished" and (written or "").strip() != "ok":
            return f"WRONG: finished reported, change.txt is {written!r}"
        return f"{result.verdict}: {', '.join(result.changed_files) or 'no files'}"

    def conversations(self, key: str) -> list[dict[str, Any]]:
        """The agent-server's conversations tagged with run key ``key`` (asked directly, not through the proxy)."""
        return conversations_tagged(self.parts.direct, key)

    def effects(self, tag: str) -> dict[str, int]:
        key = self.run_key(tag)
        conversations = self.conversations(key)
        instructions = 0
        for c in conversations:
            r = self.parts.direct.get(
                f"/api/conversations/{c['id']}/events/search",
                params={"kind": "MessageEvent", "source": "user", "limit": 100},
            )
            r.raise_for_status()
            instructions += len(r.json().get("items") or [])
        return {
            "conversations": len(conversations),
            "instructions": instructions,
            "agent llm calls": self.parts.llm.completions_for(f"run {key}"),
        }

    def limit(self, unfaulted_requests: int, case: FaultCase) -> int:
        # CONTRACTS.md: 1 × 4 for the start's requests; result() polls (waits, not retries) and tolerates 6
        # failed looks in a row per wait, × 4 attempts
        return STEP_ATTEMPTS * (max(unfaulted_requests, 1) + 6)


def conversations_tagged(http: Any, key: str) -> list[dict[str, Any]]:
    """The conversations an agent-server (``http``: a client with its base URL and session key) holds tagged with
    run key ``key``, every page of its search."""
    found: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        r = http.get("/api/conversations/search", params={"limit": 100, **({"page_id": page} if page else {})})
        r.raise_for_status()
        body = r.json()
        found += [c for c in body.get("items") or [] if (c.get("tags") or {}).get("runkey") == key]
        page = body.get("next_page_id")
        if not page:
            return found


def _path() -> str:
    import os

    return os.environ.get("PATH", "")


# -- the campaign part ---------------------------------------------------------------------------------------
@dataclass
class FaultRun:
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def kind_names(self) -> set[str]:
        return {KIND_OF[r.case.kind] for r in self.results if r.fired}

    @property
    def boundary_names(self) -> set[str]:
        return {r.case.boundary for r in self.results if r.fired}

    @property
    def kinds(self) -> int:
        return len(self.kind_names)

    @property
    def boundaries(self) -> int:
        return len(self.boundary_names)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    @property
    def lost(self) -> int:
        """Cases that ended neither in the unfaulted verdict nor, once resumed, in it."""
        return sum(1 for r in self.results if r.verdict != r.unfaulted and r.resumed != r.unfaulted)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


@contextmanager
def quiet_prefect_console() -> Iterator[None]:
    """Task and flow runs' console lines (a failed attempt is expected here) off while the cases run; the table
    says what happened, and the runs' logs are on the Prefect server."""
    import logging

    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def running_boundaries(work: Path, names: set[str]) -> Iterator[dict[str, Boundary]]:
    with ExitStack() as stack:
        found: dict[str, Boundary] = {}
        if names & {"forge-rest", "forge-git"}:
            forge = ForgeParts(stack, work)
            found |= {"forge-rest": ForgeRest(forge), "forge-git": ForgeGit(forge)}
        if names & {"llm", "gateway", "agent-server"}:
            llm = LLMParts(stack, work)
            found |= {"llm": LLMBehindGateway(llm), "gateway": GatewayForAgent(llm)}
            if "agent-server" in names:
                found["agent-server"] = AgentServer(AgentServerParts(stack, work, llm))
        if "health" in names:
            found["health"] = HealthURL(stack)
        if "kube-apiserver" in names:
            found["kube-apiserver"] = KubeAPI(stack, work)
        yield found


def run_fault_cases(cases: tuple[FaultCase, ...], work: Path) -> FaultRun:
    """Start the boundaries the cases need, run each boundary's cases (boundaries side by side, but the
    agent-server's after the llm's: its agent's LLM path goes through the llm proxy), stop them."""
    import contextvars

    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    by_boundary: dict[str, list[FaultCase]] = {}
    for c in cases:
        by_boundary.setdefault(c.boundary, []).append(c)
    run = FaultRun()
    # the agent-server's agent calls its LLM through the gateway service and the `llm` boundary's proxy: beside
    # the llm cases, their outages refused the agent's calls (the full campaign of session 6 lost all 8
    # agent-server cases so). One lane runs the llm cases, then the agent-server's; every other boundary has its own.
    lanes = [[name] for name in by_boundary if name != "agent-server"]
    if "agent-server" in by_boundary:
        lane = next((la for la in lanes if la == ["llm"]), None)
        if lane is None:
            lanes.append(["agent-server"])
        else:
            lane.append("agent-server")

    with quiet_prefect_console(), running_boundaries(work, set(by_boundary)) as boundaries:

        def run_lane(names: list[str]) -> list[CaseResult]:
            return [r for name in names for r in run_boundary(boundaries[name], list(by_boundary[name]))]

        contexts = [contextvars.copy_context() for _ in lanes]
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            futures = [pool.submit(ctx.run, run_lane, lane) for ctx, lane in zip(contexts, lanes, strict=True)]
            done = [f.result() for f in futures]
    order = {c: i for i, c in enumerate(cases)}
    run.results = sorted((r for rs in done for r in rs), key=lambda r: order[r.case])
    run.seconds = time.monotonic() - started
    return run


def table_lines(run: FaultRun) -> list[str]:
    header = (
        f"{'boundary':<14} {'fault':<44} {'fired':>5}  {'verdict':<30} {'expected':<18} {'duplicates':<10} "
        f"{'requests/limit':>14} {'seconds':>7}  ok"
    )
    lines = [header, "-" * len(header)]
    for r in run.results:
        expected = "same" if r.case.expect == "same" else "failed, resumed"
        verdict = "same" if r.verdict == r.unfaulted else r.verdict
        if r.resumed is not None:
            verdict += " → " + ("same" if r.resumed == r.unfaulted else r.resumed)
        dup = "0" if not r.differences else "; ".join(r.differences)
        why = r.note or r.misclassified
        ok = "yes" if r.passed else "NO" + (f" ({why})" if why else "")
        if r.passed and r.case.expect == "same" and r.verdict != r.unfaulted:
            ok += " (not absorbed by the retries)"
        lines.append(
            f"{r.case.boundary:<14} {r.case.name:<44} {r.fired:>5}  {verdict:<30} {expected:<18} {dup:<10} "
            f"{f'{r.requests}/{r.limit}':>14} {r.seconds:>7.1f}  {ok}"
        )
    lines.append(
        "(verdict: 'same' = the unfaulted request's; requests = through the proxy / the most docs/CONTRACTS.md "
        "allows; duplicates: side effects counted on the real part that differ from the unfaulted request's)"
    )
    return lines


def print_fault_part(cases: tuple[FaultCase, ...], work: Path, echo: Callable[[str], None]) -> FaultRun:
    """Run ``cases`` (none: print that the part was skipped) and print their table; the campaign's part 3."""
    echo("")
    if not cases:
        echo("Part 3: faults at the boundaries: not run (--no-faults)")
        return FaultRun()
    echo(
        "Part 3: faults at the boundaries (the fault proxy in front of each real part; each case compared with the "
        "unfaulted request)"
    )
    run = run_fault_cases(cases, work)
    for line in table_lines(run):
        echo(line)
    echo(f"fault cases took {run.seconds:.0f} s ({len(run.results)} cases, boundaries side by side)")
    return run
