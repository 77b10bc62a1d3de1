"""GitHub area: the local forge's PR round trip and the cost of one CI-wait poll.

- PR round trip: push a work branch (GitPython over smart HTTP) and find-or-create its PR (PyGithub),
  against a bare ``git push`` of the same size measured in the same run.
- CI-wait poll: one look at a commit's checks (check runs + suites + combined status). Conditional requests
  (If-None-Match → 304, no body, no rate limit on GitHub) against unconditional ones.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from promptship.bench.stats import percentile, summary

ROUNDS = 15
POLLS = 60


def run() -> None:

    from pydantic import SecretStr

    from promptship.adapters.github import GitHubHost
    from promptship.domain.request import branch_for
    from promptship_sandbox.forge import forge_github, running_forge

    with tempfile.TemporaryDirectory(prefix="bench-github-") as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        (src / "Makefile").write_text("test:\n\t@echo ok\n")
        (src / "README.md").write_text("bench\n")
        with running_forge(root / "forge") as forge:
            forge.seed_repository("bench", "app", src)
            forge.wait_idle(60)
            gh = forge_github(forge)
            host = GitHubHost(gh, token=SecretStr(forge.token))

            # baseline: a plain `git push` of a one-file commit
            ws = Path(host.prepare_workspace("bench/app", "main", "baseline", str(root / "baseline")))
            push_ms = []
            for i in range(ROUNDS):
                (ws / "f.txt").write_text(f"{i}\n")
                subprocess.run(["git", "-C", str(ws), "commit", "-qam", f"c{i}"], check=False, capture_output=True)
                if i == 0:
                    subprocess.run(["git", "-C", str(ws), "add", "f.txt"], check=True)
                    subprocess.run(["git", "-C", str(ws), "commit", "-qm", "c0"], check=True, capture_output=True)
                env = host._git_env()  # the same credentials path the adapter uses
                t0 = time.perf_counter()
                proc = subprocess.run(
                    ["git", "-C", str(ws), "push", "-q", "origin", "HEAD:refs/heads/baseline"],
                    env=env,
                    check=False,
                    capture_output=True,
                )
                if proc.returncode:
                    raise RuntimeError(f"git push: {proc.stderr.decode(errors='replace')}")
                push_ms.append((time.perf_counter() - t0) * 1000)

            pr_ms, find_ms = [], []
            for i in range(ROUNDS):
                key = f"bench{i:011d}"
                branch = branch_for(key)
                ws_i = Path(host.prepare_workspace("bench/app", "main", branch, str(root / "ws" / key)))
                (ws_i / "change.txt").write_text(f"change {i}\n")
                t0 = time.perf_counter()
                host.push_branch("bench/app", str(ws_i), branch)
                pr = host.find_or_create_pull_request(
                    "bench/app", run_key=key, branch=branch, base_branch="main", title=f"bench {i}", body="bench"
                )
                pr_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                again = host.find_or_create_pull_request(
                    "bench/app", run_key=key, branch=branch, base_branch="main", title=f"bench {i}", body="bench"
                )
                find_ms.append((time.perf_counter() - t0) * 1000)
                assert again.number == pr.number and not again.created
            forge.wait_idle(120)

            sha = gh.get_repo("bench/app").get_branch("main").commit.sha
            base = f"{forge.api_url}/repos/bench/app"
            conditional = GitHubHost(gh, token=SecretStr(forge.token))
            conditional._look_at_ci(base, sha)  # prime the ETags
            cond_ms, full_ms = [], []
            start = len(forge.requests)
            for _ in range(POLLS):
                t0 = time.perf_counter()
                conditional._look_at_ci(base, sha)
                cond_ms.append((time.perf_counter() - t0) * 1000)
            cond_bytes = sum(len(r.response_body) for r in forge.requests[start:])
            cond_codes = {r.status for r in forge.requests[start:]}
            start = len(forge.requests)
            for _ in range(POLLS):
                fresh = GitHubHost(gh, token=SecretStr(forge.token))  # no ETags: every answer is a 200
                t0 = time.perf_counter()
                fresh._look_at_ci(base, sha)
                full_ms.append((time.perf_counter() - t0) * 1000)
            full_bytes = sum(len(r.response_body) for r in forge.requests[start:])

    polled, woken, polled_counted, woken_counted = _requests_per_ci_wait()
    print(f"   git push (baseline)          {summary(push_ms)}")
    print(f"   push + create PR             {summary(pr_ms)}")
    print(f"   find existing PR (re-run)    {summary(find_ms)}")
    print(f"   ratio push+PR / push         {statistics.median(pr_ms) / statistics.median(push_ms):.2f}x (median)")
    print(f"   CI poll, conditional ({'/'.join(map(str, sorted(cond_codes)))})  {summary(cond_ms)}")
    print(f"   CI poll, unconditional (200)   {summary(full_ms)}")
    print(
        f"   ratio unconditional / conditional  {statistics.median(full_ms) / statistics.median(cond_ms):.2f}x "
        f"(median), p99 {percentile(full_ms, 99) / percentile(cond_ms, 99):.2f}x; bytes per poll "
        f"{full_bytes / POLLS:.0f} vs {cond_bytes / POLLS:.0f}"
    )
    print(
        f"   REST requests per CI wait (3 s build): polling {statistics.median(polled):.0f} "
        f"(backoff 0.5 s x1.5), webhook wake-ups {statistics.median(woken):.0f} (median of {len(polled)})"
    )
    print(
        f"   of which counted against the rate limit (304s are free): polling "
        f"{statistics.median(polled_counted):.0f}, wake-ups {statistics.median(woken_counted):.0f}"
    )


def _requests_per_ci_wait(rounds: int = 3) -> tuple[list[int], list[int], list[int], list[int]]:
    """How many REST requests one CI wait makes on a 3-second build: polling with backoff, or sleeping until
    the forge's signed check_suite webhook wakes it (the receiver side is a minimal HMAC-checking handler)."""
    import hashlib
    import hmac
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pydantic import SecretStr

    from promptship.adapters.github import GitHubHost
    from promptship.domain.ci import Backoff
    from promptship.domain.webhooks import CISignal
    from promptship.store.webhooks import InProcessCIWakeups
    from promptship_sandbox.forge import forge_github, running_forge

    secret = "bench-secret"
    wakeups = InProcessCIWakeups()

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, self.headers.get("X-Hub-Signature-256", "")):
                if self.headers["X-GitHub-Event"] == "check_suite":
                    payload = json.loads(body)
                    wakeups.notify(
                        CISignal(
                            repository=payload["repository"]["full_name"],
                            sha=payload["check_suite"]["head_sha"],
                            event="check_suite",
                        )
                    )
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    polled: list[int] = []
    woken: list[int] = []
    polled_counted: list[int] = []
    woken_counted: list[int] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-github-wait-") as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            (src / "Makefile").write_text("test:\n\t@sleep 3; echo ok\n")
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            with running_forge(Path(tmp) / "forge", webhook_url=url, webhook_secret=secret) as forge:
                forge.seed_repository("bench", "wait", src)
                forge.wait_idle(60)
                gh = forge_github(forge)
                backoff = Backoff(initial_s=0.5, factor=1.5, max_s=5.0)
                for i in range(rounds):
                    for mode, out in (("poll", polled), ("wake", woken)):
                        host = GitHubHost(
                            gh,
                            token=SecretStr(forge.token),
                            backoff=backoff,
                            wakeups=wakeups if mode == "wake" else None,
                            webhook_fallback_s=60,
                        )
                        sha = forge.commit_files("bench", "wait", f"{mode}{i}", {"n.txt": f"{i}"}, mode)
                        used_before = forge.rate_limit_used()
                        host.wait_for_ci("bench/wait", sha, timeout_s=120)
                        out.append(host.polls)
                        (polled_counted if mode == "poll" else woken_counted).append(
                            forge.rate_limit_used() - used_before
                        )
                        forge.wait_idle(60)
    finally:
        server.shutdown()
        server.server_close()
    return polled, woken, polled_counted, woken_counted
