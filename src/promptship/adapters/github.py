"""``GitHubHost``: the ``CodeHost`` port on GitHub (github.com, GitHub Enterprise, or the local forge).

PyGithub for the REST API, GitPython for clone and push over HTTPS. The token travels to git in an
``http.extraHeader`` passed through the environment — never in a URL, an argument list, ``.git/config``, an
exception or a log line — and is asked for once per git operation, so a GitHub App's installation token
(``adapters.github_app``) is the current one for every clone, fetch and push. CI waits use conditional
requests (ETag / If-None-Match: an unchanged answer is a 304 that costs no rate limit), back off, honour
``Retry-After`` and secondary rate limits, and — when a webhook receiver announces CI events through
``CIWakeups`` — sleep until the event instead of polling.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import git
import requests
from github import Github, GithubException
from github.PullRequest import PullRequest
from github.Repository import Repository
from pydantic import SecretStr

from promptship.domain.ci import (
    Backoff,
    CheckRunView,
    StatusView,
    SuiteView,
    ci_verdict,
    is_rate_limited,
    log_excerpt,
    next_wait,
)
from promptship.domain.kpi import MergedPR
from promptship.domain.redaction import REDACTED, redact
from promptship.domain.request import PR_MARKER_PREFIX, branch_for, pr_marker
from promptship.domain.results import ChangeSize, CheckOutcome, CIResult, MergeResult, PullRequestInfo, Remark
from promptship.domain.retrying import after_attempts, retry_after_s
from promptship.domain.writeback import REVERT_MARKER_PREFIX, issue_in, revert_branch_for, revert_marker
from promptship.errors import CodeHostError
from promptship.ports import CIWakeups, Clock

T = TypeVar("T")

_ETAG_CACHE_SIZE = 512
DEFAULT_IMAGE_TEMPLATE = "forge.local/{owner}/{repo}/{component}:{sha}"


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class _Transient(Exception):
    """A rate limit, 5xx or network failure inside a poll loop: wait and look again."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


def default_git_url_for(api_url: str) -> Callable[[str], str]:
    """Clone URLs from the REST base URL: api.github.com → github.com; ``https://HOST/api/v3`` → HOST."""
    parts = urlsplit(api_url)
    host = parts.netloc
    if host == "api.github.com":
        web = "https://github.com"
    else:
        path = re.sub(r"/api/v3/?$", "", parts.path.rstrip("/"))
        web = f"{parts.scheme}://{host}{path}"

    def url_for(repository: str) -> str:
        return f"{web}/{repository}.git"

    return url_for


def git_auth_env(token: str) -> dict[str, str]:
    """The environment that makes ``git`` over HTTPS send ``token`` (never argv, URL or config file), like
    actions/checkout's extraheader; ``GIT_TERMINAL_PROMPT=0`` so a refused token fails instead of asking."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class GitHubHost:
    """The code host on GitHub or a GitHub-compatible server (GitHub Enterprise, the local forge).

    ``token``: a fixed token (a personal access token), or a callable giving the token to use now (a GitHub
    App's ``InstallationTokenAuth.current``), asked at the start of each git operation. ``git_stall_s``: a
    git transfer slower than 1 KiB/s for this long fails (retryable), as git itself never times out.
    """

    def __init__(
        self,
        gh: Github,
        *,
        token: SecretStr | Callable[[], SecretStr],
        git_url_for: Callable[[str], str] | None = None,
        clock: Clock | None = None,
        wakeups: CIWakeups | None = None,
        backoff: Backoff | None = None,
        webhook_fallback_s: float = 300.0,
        max_rate_limit_waits: int = 5,
        image_template: str = DEFAULT_IMAGE_TEMPLATE,
        committer: tuple[str, str] = ("promptship", "promptship@users.noreply.github.com"),
        git_stall_s: float = 60.0,
    ):
        self._gh = gh
        self._token = token
        self._git_tokens: deque[str] = deque(maxlen=8)  # tokens handed to git lately: scrubbed from its errors
        self._git_url_for = git_url_for or default_git_url_for(gh.requester.base_url)
        self._clock: Clock = clock or SystemClock()
        self._wakeups = wakeups
        self._backoff = backoff or Backoff()
        self._webhook_fallback_s = webhook_fallback_s
        self._max_rate_limit_waits = max_rate_limit_waits
        self._image_template = image_template
        self._committer = committer
        self._git_stall_s = git_stall_s
        self._etags: OrderedDict[str, tuple[str, Any]] = OrderedDict()  # URL → (ETag, document), LRU-bounded
        self.polls = 0  # REST requests made by CI and merge waits (for benchmarks)

    # -- workspace and push ---------------------------------------------------------------------------
    def prepare_workspace(self, repository: str, base_branch: str, branch: str, path: str) -> str:
        """A checkout of ``repository`` at ``path`` on ``branch``: the remote branch if a previous attempt
        pushed it, else a new branch from ``base_branch``. An existing checkout there is reused (its work kept)."""
        target = Path(path)
        env = self._git_env()
        try:
            if (target / ".git").is_dir():
                repo = git.Repo(target)
                repo.git.fetch("origin", "--prune", env=env)
            else:
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.clone_from(self._git_url_for(repository), target, branch=base_branch, env=env)
            with repo.config_writer() as config:
                config.set_value("user", "name", self._committer[0])
                config.set_value("user", "email", self._committer[1])
            remote_refs = {ref.remote_head for ref in repo.remotes.origin.refs}
            on_branch = not repo.head.is_detached and repo.active_branch.name == branch
            if not on_branch:
                if branch in [h.name for h in repo.heads]:
                    repo.git.checkout(branch)
                elif branch in remote_refs:
                    repo.git.checkout("-b", branch, f"origin/{branch}")
                else:
                    repo.git.checkout("-b", branch, f"origin/{base_branch}")
        except (git.GitCommandError, git.InvalidGitRepositoryError, OSError) as exc:
            raise self._git_error("preparing the workspace", repository, exc) from None
        return str(target)

    def push_branch(self, repository: str, workspace: str, branch: str) -> str:
        """Commit what the agent left uncommitted, force-push the work branch (it belongs to this run), and
        return its head SHA."""
        env = self._git_env()
        try:
            repo = git.Repo(workspace)
            if repo.is_dirty(untracked_files=True):
                repo.git.add("-A")
                repo.git.commit("-m", "promptship: changes of the code agent", env=env)
            repo.git.push("--force", "origin", f"HEAD:refs/heads/{branch}", env=env)
            return repo.head.commit.hexsha
        except (git.GitCommandError, git.InvalidGitRepositoryError, ValueError, OSError) as exc:
            raise self._git_error(f"pushing {branch}", repository, exc) from None

    def change_size(self, workspace: str, base_branch: str) -> ChangeSize:
        """Files and lines (added + deleted) the checked-out branch changes against ``origin/base_branch``."""
        try:
            numstat = git.Repo(workspace).git.diff("--numstat", f"origin/{base_branch}...HEAD")
        except (git.GitCommandError, git.InvalidGitRepositoryError, ValueError, OSError) as exc:
            raise self._git_error("measuring the change", workspace, exc) from None
        files = lines = 0
        for row in numstat.splitlines():
            added, deleted, _path = (row.split("\t", 2) + ["", "", ""])[:3]
            files += 1
            lines += (int(added) if added.isdigit() else 0) + (int(deleted) if deleted.isdigit() else 0)
        return ChangeSize(files_changed=files, lines_changed=lines)

    # -- pull requests --------------------------------------------------------------------------------
    def find_pull_request(self, repository: str, run_key: str) -> PullRequestInfo | None:
        """The PR of ``run_key``: by its branch, else by the hidden marker in an open PR's body."""
        repo = self._repo(repository)
        pr = self._find(repo, run_key, branch_for(run_key))
        return self._info(pr, created=False) if pr else None

    def find_or_create_pull_request(
        self,
        repository: str,
        *,
        run_key: str,
        branch: str,
        base_branch: str,
        title: str,
        body: str,
        labels: tuple[str, ...] = (),
    ) -> PullRequestInfo:
        """The one PR of ``run_key``. Looks first (a crash may have happened after the create), creates only
        when nothing is found, and on a concurrent create takes the one that won."""
        repo = self._repo(repository)
        pr = self._find(repo, run_key, branch)
        created = False
        if pr is None:
            marker = pr_marker(run_key)
            full_body = body if marker in body else f"{body.rstrip()}\n\n{marker}\n"
            try:
                pr = self._call(lambda: repo.create_pull(title=title, body=full_body, head=branch, base=base_branch))
                created = True
            except CodeHostError as exc:
                if exc.status != 422:
                    raise
                pr = self._find(repo, run_key, branch)  # created meanwhile, or nothing to propose
                if pr is None:
                    raise
        elif pr.state == "closed" and not pr.merged:
            self._call(lambda: pr.edit(state="open"))
        if labels:
            current = {label.name for label in pr.labels}
            missing = [name for name in labels if name not in current]
            if missing:
                # {"labels": [...]}, the body GitHub's description defines (PyGithub's add_to_labels sends a bare
                # array, which GitHub accepts but does not describe; the forge refuses it)
                self._call(
                    lambda: self._gh.requester.requestJsonAndCheck(
                        "POST", f"{pr.issue_url}/labels", input={"labels": missing}
                    )
                )
        return self._info(pr, created=created)

    def _find(self, repo: Repository, run_key: str, branch: str) -> PullRequest | None:
        marker = pr_marker(run_key)
        owner = repo.full_name.split("/", 1)[0]
        by_branch = self._call(lambda: list(repo.get_pulls(state="all", head=f"{owner}:{branch}")))
        for pr in by_branch:
            if marker in (pr.body or ""):
                return pr
        if by_branch:
            return by_branch[0]
        for pr in self._call(lambda: list(islice(repo.get_pulls(state="open"), 100))):
            if marker in (pr.body or ""):
                return pr
        return None

    @staticmethod
    def _info(pr: PullRequest, *, created: bool) -> PullRequestInfo:
        return PullRequestInfo(
            number=pr.number,
            url=pr.html_url,
            head_sha=pr.head.sha,
            branch=pr.head.ref,
            created=created,
            merged=pr.merged_at is not None,
            issue_number=issue_in(pr.body),
        )

    # -- CI -------------------------------------------------------------------------------------------
    def wait_for_ci(self, repository: str, sha: str, *, timeout_s: float) -> CIResult:
        """Poll the check runs, check suites and combined status of ``sha`` (conditional requests, backoff)
        until they give a final verdict or ``timeout_s`` passes. With ``CIWakeups``, sleep until a CI event
        of ``sha`` arrives (polling only as a slow fallback)."""
        start = self._clock.monotonic()
        deadline = start + timeout_s
        base = self._repo_url(repository)
        delays = self._backoff.delays()
        seen = self._wakeups.generation(repository, sha) if self._wakeups else 0
        last_checks: tuple[CheckOutcome, ...] = ()
        failures_in_row = 0
        while True:
            retry_after: float | None = None
            try:
                assessment, runs = self._look_at_ci(base, sha)
                if assessment.state == "failed" and any(c.state == "pending" for c in assessment.checks):
                    assessment, runs = self._look_at_ci(base, sha)  # once more, for the other checks' logs
                failures_in_row = 0
                last_checks = assessment.checks
                if assessment.final:
                    checks = assessment.checks
                    if assessment.state == "failed":
                        checks = self._with_logs(base, checks, runs)
                    return CIResult(
                        verdict="passed" if assessment.state == "passed" else "failed",
                        sha=sha,
                        checks=checks,
                        waited_s=round(self._clock.monotonic() - start, 3),
                    )
            except _Transient as exc:
                failures_in_row += 1
                if exc.retry_after is None and failures_in_row > self._max_rate_limit_waits:
                    raise CodeHostError(f"CI of {sha[:12]} unreadable: {exc}", retryable=True) from None
                retry_after = exc.retry_after
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return CIResult(
                    verdict="timed_out",
                    sha=sha,
                    checks=last_checks,
                    waited_s=round(self._clock.monotonic() - start, 3),
                )
            planned = next(delays)
            if self._wakeups is not None and retry_after is None:
                seen = self._wakeups.wait(
                    repository, sha, after=seen, timeout_s=min(remaining, self._webhook_fallback_s)
                )
            else:
                self._clock.sleep(next_wait(planned, remaining, retry_after))

    def _look_at_ci(self, base: str, sha: str) -> tuple[Any, dict[str, dict[str, Any]]]:
        # statuses first, check runs last: a CI that completes its check run before it posts its final status
        # (the forge; apps reporting both ways) is then never seen half-way, red status but running check
        status_doc = self._conditional_get(f"{base}/commits/{sha}/status?per_page=100")
        suites_doc = self._conditional_get(f"{base}/commits/{sha}/check-suites?per_page=100")
        runs_doc = self._conditional_get(f"{base}/commits/{sha}/check-runs?per_page=100")
        runs = {str(r["id"]): r for r in runs_doc.get("check_runs", [])}
        run_views = [
            CheckRunView(
                name=r["name"],
                status=r.get("status") or "queued",
                conclusion=r.get("conclusion"),
                id=r["id"],
                url=r.get("details_url") or r.get("html_url") or "",
            )
            for r in runs.values()
        ]
        status_views = [
            StatusView(
                context=s["context"],
                state=s["state"],
                target_url=s.get("target_url") or "",
                description=s.get("description") or "",
            )
            for s in status_doc.get("statuses", [])
        ]
        suite_views = [
            SuiteView(
                status=s.get("status") or "queued",
                conclusion=s.get("conclusion"),
                app=((s.get("app") or {}).get("slug") or ""),
                runs=s.get("latest_check_runs_count") or 0,
            )
            for s in suites_doc.get("check_suites", [])
            # a suite of an app that never creates check runs stays queued forever on GitHub: ignore those
            if (s.get("latest_check_runs_count") or 0) > 0 or s.get("status") == "in_progress"
        ]
        return ci_verdict(run_views, status_views, suite_views), runs

    def _with_logs(
        self, base: str, checks: tuple[CheckOutcome, ...], runs: dict[str, dict[str, Any]]
    ) -> tuple[CheckOutcome, ...]:
        """Attach log excerpts to failing check runs: the Actions job log when there is one, else the run's
        output text."""
        by_name = {r["name"]: r for r in runs.values()}
        out = []
        for check in checks:
            run = by_name.get(check.name)
            if check.state in ("failure", "error", "cancelled") and run is not None:
                text = self._job_log(base, run["id"])
                if not text:
                    output = run.get("output") or {}
                    text = "\n".join(x for x in (output.get("summary"), output.get("text")) if x)
                if text:
                    check = check.model_copy(update={"log_excerpt": self._scrub(log_excerpt(text))})
            out.append(check)
        return tuple(out)

    def _job_log(self, base: str, job_id: int) -> str:
        try:
            status, _, body = self._gh.requester.requestJson(
                "GET", f"{base}/actions/jobs/{job_id}/logs", follow_302_redirect=True
            )
        except (requests.RequestException, GithubException, AssertionError):
            # best effort: PyGithub refuses redirects to unexpected paths with an assertion
            return ""
        self.polls += 1
        return body if status == 200 else ""

    def _conditional_get(self, url: str) -> Any:
        """GET with If-None-Match; a 304 answers with the cached document."""
        cached = self._etags.get(url)
        headers = {"If-None-Match": cached[0]} if cached else {}
        try:
            status, resp_headers, body = self._gh.requester.requestJson("GET", url, headers=headers)
        except requests.RequestException as exc:
            raise _Transient(f"network: {type(exc).__name__}", None) from None
        self.polls += 1
        lowered = {k.lower(): v for k, v in resp_headers.items()}
        if status == 304 and cached:
            return cached[1]
        if status == 200:
            data = json.loads(body) if body else {}
            if lowered.get("etag"):
                self._etags[url] = (lowered["etag"], data)
                self._etags.move_to_end(url)
                while len(self._etags) > _ETAG_CACHE_SIZE:
                    self._etags.popitem(last=False)
            return data
        message = _message(body)
        if is_rate_limited(status, message, lowered):
            raise _Transient(f"rate limited ({status})", self._rate_limit_wait(lowered))
        if status >= 500:
            raise _Transient(f"{status} from the code host", None)
        raise CodeHostError(f"GET {_path(url)}: {status} {self._scrub(message)}", status=status)

    # -- merge and image ------------------------------------------------------------------------------
    def merge(self, repository: str, pr_number: int, *, auto_merge: bool, timeout_s: float) -> MergeResult:
        """Squash-merge when ``auto_merge`` (once GitHub knows the PR is mergeable), else wait for a person
        to merge it. A conflict (``mergeable`` false, or 405 on merge) is the verdict ``conflict``."""
        start = self._clock.monotonic()
        deadline = start + timeout_s
        repo = self._repo(repository)
        delays = self._backoff.delays()
        url = f"{self._repo_url(repository)}/pulls/{pr_number}"
        first_look = True
        while True:
            retry_after: float | None = None
            try:
                doc = self._conditional_get(url)
                if doc.get("merged"):
                    # merged before this step looked: an earlier attempt (or a person) merged it
                    return MergeResult(verdict="merged", merge_sha=doc.get("merge_commit_sha"), found=first_look)
                first_look = False
                if doc.get("state") == "closed":
                    return MergeResult(verdict="closed", detail="the pull request was closed without merging")
                if doc.get("mergeable") is False:
                    return MergeResult(verdict="conflict", detail=f"mergeable_state={doc.get('mergeable_state')}")
                if auto_merge and doc.get("mergeable") is True:
                    head_sha = doc["head"]["sha"]
                    title = f"{doc.get('title', '')} (#{pr_number})"
                    pr = self._call(lambda: repo.get_pull(pr_number))
                    try:
                        status = self._call(partial(pr.merge, merge_method="squash", sha=head_sha, commit_title=title))
                        return MergeResult(verdict="merged", merge_sha=status.sha)
                    except CodeHostError as exc:
                        if exc.status == 405 and not _blocked_by_policy(str(exc)):
                            return MergeResult(verdict="conflict", detail=str(exc))
                        # 405 for a review or required check still missing: wait for it like a person would;
                        # 409: the head moved meanwhile — look again
                        if exc.status not in (405, 409):
                            raise
            except _Transient as exc:
                retry_after = exc.retry_after
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                verdict = "timed_out" if auto_merge else "waiting"
                return MergeResult(verdict=verdict, detail=f"not merged within {timeout_s:.0f} s")
            self._clock.sleep(next_wait(next(delays), remaining, retry_after))

    def image_for(self, repository: str, sha: str, component: str, *, timeout_s: float) -> str:
        """Wait for the base-branch build of ``sha``; its image for ``component`` (docs/CONTRACTS.md)."""
        ci = self.wait_for_ci(repository, sha, timeout_s=timeout_s)
        if ci.verdict != "passed":
            names = ", ".join(c.name for c in ci.failing) or "no result in time"
            raise CodeHostError(
                f"no image for {repository}@{sha[:12]}: the base-branch build {ci.verdict} ({names})",
                retryable=ci.verdict == "timed_out",
            )
        owner, repo = repository.split("/", 1)
        return self._image_template.format(owner=owner, repo=repo, component=component, sha=sha)

    def comment(self, repository: str, number: int, body: str) -> None:
        """Comment on an issue or pull request."""
        repo = self._repo(repository)
        issue = self._call(lambda: repo.get_issue(number))
        self._call(lambda: issue.create_comment(body))

    def discussion(self, repository: str, number: int) -> list[Remark]:
        """The comments on issue/PR ``number``, oldest first, without promptship's own (hidden markers)."""
        repo = self._repo(repository)
        issue = self._call(lambda: repo.get_issue(number))
        comments = self._call(lambda: list(issue.get_comments()))
        return [
            Remark(author=c.user.login if c.user else "", body=c.body)
            for c in comments
            if c.body and "<!-- promptship-" not in c.body
        ]

    def review_comments(self, repository: str, pr_number: int) -> list[Remark]:
        """The review comments on PR ``pr_number``'s diff (``GET /pulls/{n}/comments``), oldest first."""
        repo = self._repo(repository)
        pr = self._call(lambda: repo.get_pull(pr_number))
        comments = self._call(lambda: list(pr.get_review_comments()))
        return [
            Remark(author=c.user.login if c.user else "", body=c.body, path=c.path, line=c.line)
            for c in sorted(comments, key=lambda c: c.id)
            if c.body
        ]

    def upsert_comment(self, repository: str, number: int, marker: str, body: str) -> None:
        """Edit our comment carrying ``marker`` on issue/PR ``number``, else create it (one comment per marker)."""
        if marker not in body:
            raise ValueError("the comment's body must carry its marker")
        repo = self._repo(repository)
        issue = self._call(lambda: repo.get_issue(number))
        for existing in self._call(lambda: list(issue.get_comments())):
            if marker in (existing.body or ""):
                if existing.body != body:
                    self._call(partial(existing.edit, body))
                return
        self._call(lambda: issue.create_comment(body))

    def open_revert(
        self, repository: str, *, merge_sha: str, base_branch: str, title: str, body: str, workspace: str
    ) -> PullRequestInfo:
        """The one revert PR of ``merge_sha``: found by its branch (and marker), else ``git revert`` of the merge
        commit on a fresh branch from ``base_branch``, pushed, and a PR opened. A branch pushed by an earlier
        try (a crash before the PR) is reused as it is."""
        repo = self._repo(repository)
        branch = revert_branch_for(merge_sha)
        marker = revert_marker(merge_sha)
        owner = repository.split("/", 1)[0]
        for pr in self._call(lambda: list(repo.get_pulls(state="all", head=f"{owner}:{branch}"))):
            if marker in (pr.body or ""):
                return self._info(pr, created=False)
        path = self.prepare_workspace(repository, base_branch, branch, workspace)
        env = self._git_env()
        try:
            checkout = git.Repo(path)
            already = checkout.git.log("--format=%H", f"origin/{base_branch}..HEAD").strip()
            if not already:  # the revert is not on the branch yet
                parents = checkout.commit(merge_sha).parents
                extra = ["-m", "1"] if len(parents) > 1 else []
                checkout.git.revert("--no-edit", *extra, merge_sha, env=env)
        except (git.GitCommandError, ValueError, OSError) as exc:
            raise self._git_error(f"reverting {merge_sha[:12]}", repository, exc) from None
        self.push_branch(repository, path, branch)
        pr = self.find_or_create_pull_request(
            repository, run_key=f"revert-{merge_sha}", branch=branch, base_branch=base_branch, title=title, body=body
        )
        return pr

    def delete_branch(self, repository: str, branch: str) -> bool:
        """``DELETE /git/refs/heads/BRANCH``; False when it was already gone (422/404)."""
        # not through PyGithub's GitRef: a ref read from a lazy repository deletes the wrong URL (git/ref/...)
        url = f"{self._repo_url(repository)}/git/refs/heads/{quote(branch)}"
        try:
            self._call(lambda: self._gh.requester.requestJsonAndCheck("DELETE", url))
        except CodeHostError as exc:
            if exc.status in (404, 422):
                return False
            raise
        return True

    # -- plumbing -------------------------------------------------------------------------------------
    def merged_pull_requests(self, repository: str, since: datetime) -> list[MergedPR]:
        """PRs merged since ``since`` (closed PRs, newest update first, read until older than ``since``);
        ``by_promptship`` when the body carries a run-key marker."""
        repo = self._repo(repository)

        def read() -> list[MergedPR]:
            out: list[MergedPR] = []
            for pr in repo.get_pulls(state="closed", sort="updated", direction="desc"):
                if pr.updated_at is not None and _aware(pr.updated_at) < since:
                    break
                if pr.merged_at is None or _aware(pr.merged_at) < since:
                    continue
                out.append(
                    MergedPR(
                        repository=repository,
                        number=pr.number,
                        created_at=_aware(pr.created_at),
                        merged_at=_aware(pr.merged_at),
                        by_promptship=PR_MARKER_PREFIX in (pr.body or "") or REVERT_MARKER_PREFIX in (pr.body or ""),
                    )
                )
            return out

        return self._call(read)

    def _repo(self, repository: str) -> Repository:
        return self._call(lambda: self._gh.get_repo(repository, lazy=True))

    def _repo_url(self, repository: str) -> str:
        return f"{self._gh.requester.base_url.rstrip('/')}/repos/{repository}"

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one PyGithub call; wait out rate limits (Retry-After, on the injected clock) a few times, then
        give up for good (not retryable: the waits were the retries); translate everything else into
        CodeHostError once (5xx and network errors retryable: not retried here)."""
        for _attempt in self._attempts():
            try:
                return fn()
            except GithubException as exc:
                message = _message(exc.data)
                headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
                if is_rate_limited(exc.status, message, headers):
                    wait = self._rate_limit_wait(headers)
                    if _attempt < self._max_rate_limit_waits:
                        self._clock.sleep(wait)
                        continue
                    limited = CodeHostError(
                        f"rate limited by the code host: {self._scrub(message)}",
                        retryable=True,
                        status=exc.status,
                        retry_after_s=wait,
                    )
                    raise after_attempts(limited, _attempt + 1) from None
                errors = exc.data.get("errors") if isinstance(exc.data, dict) else None
                detail = self._scrub(f"{message} {json.dumps(errors) if errors else ''}".strip())
                raise CodeHostError(
                    f"code host answered {exc.status}: {detail}",
                    retryable=exc.status >= 500,
                    status=exc.status,
                ) from None
            except requests.RequestException as exc:
                raise CodeHostError(f"code host unreachable: {type(exc).__name__}", retryable=True) from None
        raise AssertionError("unreachable")

    def _rate_limit_wait(self, headers: dict[str, str]) -> float:
        """What a rate-limited answer asks for; a minute when it does not say (GitHub's advice)."""
        wait = retry_after_s(headers, self._clock.time())
        return 60.0 if wait is None else wait

    def _attempts(self) -> Iterator[int]:
        yield from range(self._max_rate_limit_waits + 1)

    def _git_env(self) -> dict[str, str]:
        """Credentials for git through the environment (never argv, URL or config file), like
        actions/checkout's extraheader."""
        token = self._current_token()
        if token not in self._git_tokens:
            self._git_tokens.append(token)
        name, email = self._committer
        return {
            **git_auth_env(token),
            # git over HTTP has no timeout of its own: a transfer stalled below 1 KiB/s for this long fails
            # (retryable) instead of holding the step until the server drops the connection
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
            "GIT_HTTP_LOW_SPEED_TIME": str(max(1, round(self._git_stall_s))),
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
        }

    def _current_token(self) -> str:
        token = self._token if isinstance(self._token, SecretStr) else self._token()
        return token.get_secret_value()

    def _scrub(self, text: str) -> str:
        secrets = list(self._git_tokens)
        if isinstance(self._token, SecretStr):
            secrets.append(self._token.get_secret_value())
        for secret in secrets:
            if secret:
                text = text.replace(secret, REDACTED)
                text = text.replace(base64.b64encode(f"x-access-token:{secret}".encode()).decode(), REDACTED)
        return redact(text)

    def _git_error(self, what: str, repository: str, exc: BaseException) -> CodeHostError:
        stderr = getattr(exc, "stderr", "") or str(exc)
        text = self._scrub(str(stderr).strip())[-1500:]
        transient = any(
            s in text
            for s in (
                "Could not resolve host",
                "Connection refused",
                "Failed to connect",
                "Couldn't connect",
                "timed out",
                "returned error: 5",
                "returned error: 429",
                # the connection broke mid-transfer (curl 18/28/52/55/56): the push or fetch may be tried again
                "Connection reset",
                "transfer closed",
                "Operation too slow",
                "Empty reply from server",
                "Send failure",
                "Recv failure",
            )
        )
        return CodeHostError(f"git failed {what} for {repository}: {text}", retryable=transient)


def _blocked_by_policy(message: str) -> bool:
    """A 405 from branch protection (reviews, required checks), not a conflict."""
    lowered = message.lower()
    return any(word in lowered for word in ("review", "status check", "required", "protected branch"))


def _message(data: Any) -> str:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return data[:300]
    if isinstance(data, dict):
        return str(data.get("message", ""))
    return ""


def _path(url: str) -> str:
    return urlsplit(url).path
