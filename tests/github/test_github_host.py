"""GitHubHost through PyGithub and GitPython against the local forge (real HTTP, real git, real merges)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from promptship.adapters.github import GitHubHost
from promptship.domain.request import branch_for, pr_marker
from promptship.errors import CodeHostError
from promptship_sandbox.forge import CI_CHECK_NAME, Forge
from tests.github.conftest import NAME, OWNER, REPO, RecordingClock, client, make_host

pytestmark = pytest.mark.forge

RUN_KEY = "0123456789abcdef"


def _work(host: GitHubHost, tmp_path: Path, files: dict[str, str | None], run_key: str = RUN_KEY) -> tuple[Path, str]:
    """Check out the run's branch, change files as the agent would (uncommitted), push; return (ws, sha)."""
    ws = Path(host.prepare_workspace(REPO, "main", branch_for(run_key), str(tmp_path / "ws" / run_key)))
    for name, content in files.items():
        if content is None:
            (ws / name).unlink()
        else:
            (ws / name).write_text(content)
    return ws, host.push_branch(REPO, str(ws), branch_for(run_key))


def _open_pr(host: GitHubHost, run_key: str = RUN_KEY):
    return host.find_or_create_pull_request(
        REPO,
        run_key=run_key,
        branch=branch_for(run_key),
        base_branch="main",
        title="Add a greeting",
        body="The agent added a greeting.",
        labels=("promptship",),
    )


def test_one_pull_request_per_run_key_also_after_a_crash(forge: Forge, clock: RecordingClock, tmp_path: Path):
    host = make_host(forge, clock)
    _, sha = _work(host, tmp_path, {"greeting.txt": "hello\n"})
    # the flow is killed here, between push and PR creation; a new process re-runs the step
    rerun = make_host(forge, RecordingClock())
    assert rerun.find_pull_request(REPO, RUN_KEY) is None
    first = _open_pr(rerun)
    # killed again after the create but before recording it: the next attempt finds the same PR
    again = _open_pr(make_host(forge, RecordingClock()))
    assert first.created and not again.created
    assert again.number == first.number and again.head_sha == sha
    pulls = list(client(forge).get_repo(REPO).get_pulls(state="all"))
    assert [p.number for p in pulls] == [first.number]
    assert pr_marker(RUN_KEY) in (pulls[0].body or "")
    assert [label.name for label in pulls[0].labels] == ["promptship"]
    found = host.find_pull_request(REPO, RUN_KEY)
    assert found is not None and found.number == first.number and not found.created


def test_resumed_workspace_continues_the_pushed_branch(forge: Forge, host: GitHubHost, tmp_path: Path):
    _, sha = _work(host, tmp_path, {"greeting.txt": "hello\n"})
    fresh = Path(host.prepare_workspace(REPO, "main", branch_for(RUN_KEY), str(tmp_path / "elsewhere")))
    assert (fresh / "greeting.txt").read_text() == "hello\n"
    assert host.push_branch(REPO, str(fresh), branch_for(RUN_KEY)) == sha  # nothing new: same head


def test_ci_red_then_a_new_push_gets_a_new_green_verdict(forge: Forge, host: GitHubHost, tmp_path: Path):
    ws, red_sha = _work(host, tmp_path, {"BROKEN": "greeting missing in reply\n"})
    _open_pr(host)
    red = host.wait_for_ci(REPO, red_sha, timeout_s=600)
    assert red.verdict == "failed"
    failing = {c.name: c for c in red.failing}
    assert CI_CHECK_NAME in failing
    assert "FAILED test_chat: greeting missing in reply" in failing[CI_CHECK_NAME].log_excerpt
    log_calls = [r for r in forge.requests if "/actions/jobs/" in r.path or "/_forge/logs/" in r.path]
    assert [r.status for r in log_calls] == [302, 200]  # the Actions job log, followed through its redirect
    # the repair (the flow's job) removes the cause; the new head gets its own verdict
    (ws / "BROKEN").unlink()
    green_sha = host.push_branch(REPO, str(ws), branch_for(RUN_KEY))
    assert green_sha != red_sha
    green = host.wait_for_ci(REPO, green_sha, timeout_s=600)
    assert green.verdict == "passed" and not green.failing
    assert host.find_pull_request(REPO, RUN_KEY).head_sha == green_sha  # type: ignore[union-attr]


def test_merge_conflict_is_a_verdict(forge: Forge, host: GitHubHost, tmp_path: Path):
    _, sha = _work(host, tmp_path, {"README.md": "# app\n\nline one changed by the agent\nline two\n"})
    pr = _open_pr(host)
    forge.commit_files(OWNER, NAME, "main", {"README.md": "# app\n\nline one changed by a human\nline two\n"}, "edit")
    result = host.merge(REPO, pr.number, auto_merge=True, timeout_s=60)
    assert result.verdict == "conflict" and result.merge_sha is None
    assert client(forge).get_repo(REPO).get_pull(pr.number).mergeable is False
    assert not client(forge).get_repo(REPO).get_pull(pr.number).merged


def test_squash_merge_publishes_the_image_that_image_for_returns(forge: Forge, host: GitHubHost, tmp_path: Path):
    _, sha = _work(host, tmp_path, {"backend/app.py": "print('hello, world')\n"})
    pr = _open_pr(host)
    assert host.wait_for_ci(REPO, sha, timeout_s=600).verdict == "passed"
    merged = host.merge(REPO, pr.number, auto_merge=True, timeout_s=60)
    assert merged.verdict == "merged" and merged.merge_sha
    image = host.image_for(REPO, merged.merge_sha, "backend", timeout_s=600)
    assert image == f"forge.local/{OWNER}/{NAME}/backend:{merged.merge_sha}"
    record = json.loads(forge.image_record(OWNER, NAME, "backend", merged.merge_sha).read_text())
    assert record["image"] == image and record["sha"] == merged.merge_sha
    assert Path(record["git_dir"]).is_dir() and record["context"] == "backend" and record["repository"] == REPO
    main = client(forge).get_repo(REPO).get_branch("main").commit
    assert main.sha == merged.merge_sha and len(main.parents) == 1  # squashed: one parent
    assert main.commit.message.startswith("Add a greeting (#")


def test_human_merge_is_waited_for_and_times_out_as_waiting(forge: Forge, host: GitHubHost, tmp_path: Path):
    _work(host, tmp_path, {"greeting.txt": "hello\n"})
    pr = _open_pr(host)
    assert host.merge(REPO, pr.number, auto_merge=False, timeout_s=30).verdict == "waiting"
    merger = threading.Timer(0.3, forge.merge_pull_as_human, args=(OWNER, NAME, pr.number))
    merger.start()
    try:
        result = host.merge(REPO, pr.number, auto_merge=False, timeout_s=3600)
    finally:
        merger.join()
    assert result.verdict == "merged"
    assert result.merge_sha == client(forge).get_repo(REPO).get_branch("main").commit.sha


def test_an_unchanged_poll_gets_only_304_answers(tmp_path: Path, clock: RecordingClock):
    from promptship_sandbox.forge import running_forge
    from tests.github.conftest import make_source

    with running_forge(tmp_path / "forge", run_ci=False) as forge:
        sha = forge.seed_repository(OWNER, NAME, make_source(tmp_path))
        client(forge).get_repo(REPO).get_commit(sha).create_status("pending", context="external/ci")
        host = make_host(forge, clock)
        before, used_before = len(forge.requests), forge.rate_limit_used()
        result = host.wait_for_ci(REPO, sha, timeout_s=20)
        polls = [r for r in forge.requests[before:] if r.is_api]
        counted = forge.rate_limit_used() - used_before
    assert result.verdict == "timed_out"
    assert len(clock.sleeps) >= 3 and sum(clock.sleeps) >= 20
    by_path: dict[str, list[int]] = {}
    for r in polls:
        by_path.setdefault(r.path, []).append(r.status)
    assert set(by_path) == {
        f"/api/v3/repos/{REPO}/commits/{sha}/check-runs",
        f"/api/v3/repos/{REPO}/commits/{sha}/check-suites",
        f"/api/v3/repos/{REPO}/commits/{sha}/status",
    }
    for statuses in by_path.values():
        assert statuses[0] == 200 and len(statuses) >= 3
        assert set(statuses[1:]) == {304}, statuses
    assert counted == 3  # only the first look counted against the rate limit: 304s are free, as on GitHub
    assert polls[-1].response_headers["X-RateLimit-Used"] == str(forge.rate_limit_used())


def test_secondary_rate_limit_retry_after_is_honoured(forge: Forge, host: GitHubHost, clock: RecordingClock):
    sha = client(forge).get_repo(REPO).get_branch("main").commit.sha
    forge.secondary_rate_limit(requests=1, retry_after_s=7)
    result = host.wait_for_ci(REPO, sha, timeout_s=600)
    assert result.verdict == "passed"
    assert clock.sleeps[0] == 7
    forge.secondary_rate_limit(requests=2, retry_after_s=11)
    assert host.find_pull_request(REPO, RUN_KEY) is None
    assert clock.sleeps[-2:] == [11, 11]
    limited = [r for r in forge.requests if r.status == 403]
    assert len(limited) == 3 and all(r.response_headers.get("Retry-After") for r in limited)


def test_rate_limit_that_does_not_end_is_final_after_the_adapters_own_waits(forge: Forge, clock: RecordingClock):
    # One retry policy per layer (docs/CONTRACTS.md): the adapter waited the limit out twice itself, so the
    # step layer must not multiply those attempts — the error is final, and says how many attempts it took.
    host = make_host(forge, clock, max_rate_limit_waits=2)
    forge.secondary_rate_limit(requests=10, retry_after_s=3)
    with pytest.raises(CodeHostError) as info:
        host.find_pull_request(REPO, RUN_KEY)
    assert not info.value.retryable and info.value.retry_after_s == 3 and info.value.status == 403
    assert "after 3 attempts" in str(info.value)
    assert clock.sleeps == [3, 3]
    assert len([r for r in forge.requests if r.status == 403]) == 3


def test_credentials_stay_out_of_errors_and_checkouts(forge: Forge, host: GitHubHost, tmp_path: Path):
    ws, _ = _work(host, tmp_path, {"greeting.txt": "hello\n"})
    assert forge.token not in (ws / ".git" / "config").read_text()
    with pytest.raises(CodeHostError) as info:
        host.prepare_workspace(f"{OWNER}/missing", "main", "b", str(tmp_path / "missing"))
    assert forge.token not in str(info.value) and not info.value.retryable
    with pytest.raises(CodeHostError) as info:
        host.find_pull_request(f"{OWNER}/missing", RUN_KEY)
    assert info.value.status == 404 and forge.token not in str(info.value)


def test_ci_wait_ends_on_the_check_suite_webhook_without_polling(tmp_path: Path, clock: RecordingClock):
    """The forge signs webhooks; a receiver verifies them and wakes the wait on check_suite."""
    import hashlib
    import hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from promptship.domain.webhooks import CISignal
    from promptship.store.webhooks import InProcessCIWakeups
    from promptship_sandbox.forge import running_forge
    from tests.github.conftest import make_source

    secret = "forge-test-secret"
    wakeups = InProcessCIWakeups()
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(expected, self.headers.get("X-Hub-Signature-256", ""))
            event = self.headers["X-GitHub-Event"]
            received.append(event if ok else "BAD-SIGNATURE")
            payload = json.loads(body)
            if ok and event == "check_suite":
                suite = payload["check_suite"]
                wakeups.notify(
                    CISignal(
                        repository=payload["repository"]["full_name"],
                        sha=suite["head_sha"],
                        event=event,
                        action=payload["action"],
                    )
                )
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/github/webhook"
        with running_forge(tmp_path / "forge", webhook_url=url, webhook_secret=secret) as forge:
            forge.seed_repository(OWNER, NAME, make_source(tmp_path))
            assert forge.wait_idle(120)
            host = make_host(forge, clock, wakeups=wakeups, webhook_fallback_s=120)
            sha = forge.commit_files(OWNER, NAME, "feature", {"greeting.txt": "hi\n"}, "greeting")
            before = len(forge.requests)
            result = host.wait_for_ci(REPO, sha, timeout_s=600)
            check_run_polls = [r for r in forge.requests[before:] if r.path.endswith("/check-runs")]
            assert forge.wait_idle(60)
    finally:
        server.shutdown()
        server.server_close()
    assert result.verdict == "passed"
    assert clock.sleeps == []  # never slept on a poll schedule: woken by the event
    assert 1 <= len(check_run_polls) <= 2
    assert "BAD-SIGNATURE" not in received
    assert {"check_run", "check_suite", "status"} <= set(received)


def test_github_enterprise_and_forge_clone_urls():
    from promptship.adapters.github import default_git_url_for

    assert default_git_url_for("https://api.github.com")("o/r") == "https://github.com/o/r.git"
    assert default_git_url_for("https://ghe.example.com/api/v3")("o/r") == "https://ghe.example.com/o/r.git"
    assert default_git_url_for("http://127.0.0.1:9000/api/v3/")("o/r") == "http://127.0.0.1:9000/o/r.git"


def test_auto_merge_waits_for_a_required_check_instead_of_calling_it_a_conflict(
    forge: Forge, host: GitHubHost, clock: RecordingClock, tmp_path: Path
):
    _, sha = _work(host, tmp_path, {"greeting.txt": "hello\n"})
    pr = _open_pr(host)
    forge.require_status_checks(OWNER, NAME, ["security/review"])
    blocked = host.merge(REPO, pr.number, auto_merge=True, timeout_s=20)
    assert blocked.verdict == "timed_out" and sum(clock.sleeps) >= 20
    client(forge).get_repo(REPO).get_commit(sha).create_status("success", context="security/review")
    assert host.merge(REPO, pr.number, auto_merge=True, timeout_s=20).verdict == "merged"


def test_a_credential_in_a_custom_clone_url_is_scrubbed_from_errors(forge: Forge, clock: RecordingClock, tmp_path):
    secret = "s3cr3t-password-in-url"
    leaky = make_host(forge, clock, git_url_for=lambda repo: f"http://user:{secret}@127.0.0.1:9/{repo}.git")
    with pytest.raises(CodeHostError) as info:
        leaky.prepare_workspace(REPO, "main", "b", str(tmp_path / "leaky"))
    assert secret not in str(info.value) and forge.token not in str(info.value)
    assert info.value.retryable  # connection refused: worth another try
