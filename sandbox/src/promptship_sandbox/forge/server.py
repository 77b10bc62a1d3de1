"""The local forge: GitHub's REST API under ``/api/v3``, smart-HTTP git, a CI runner and signed webhooks,
all on one 127.0.0.1 port.

State lives in memory (bare repositories on disk under ``<root>/git``); a restarted forge re-opens the
repositories but forgets pull requests, issues and checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from promptship_sandbox.credentials import github_token
from promptship_sandbox.forge import git as g
from promptship_sandbox.forge.apps import App, AppAuthError, AppRenderer, Installation, InstallationToken, verify_jwt
from promptship_sandbox.forge.hooks import Delivery, WebhookSender
from promptship_sandbox.forge.openapi import (
    UNDESCRIBED,
    OpenAPIRequests,
    RequestProblem,
    invalid_request_message,
    load_request_checker,
    shape_of_route,
)
from promptship_sandbox.forge.render import (
    CheckRun,
    CheckSuite,
    Comment,
    Issue,
    Label,
    Pull,
    Renderer,
    Repo,
    ReviewComment,
    Status,
    User,
)

CI_CHECK_NAME = "test"
CI_STATUS_CONTEXT = "promptship-ci/test"
IMAGE_HOST = "forge.local"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the forge answered (for tests: which calls, which answers)."""

    method: str
    path: str
    query: str
    status: int
    request_headers: dict[str, str]
    response_headers: dict[str, str]
    response_body: bytes
    request_body: bytes = b""

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/v3/")


@dataclass(frozen=True)
class CIRun:
    """One build of the forge's CI runner."""

    repository: str
    sha: str
    branch: str | None
    conclusion: str
    images: tuple[str, ...] = ()
    reused_from: str | None = None  # "owner/name#run id" whose passing test of the same files this build took
    seconds: float = 0.0  # wall time of the build's test (of the wait for the reused one)


@dataclass
class _TreeTest:
    """``make test`` of one tree (the files of a commit), shared by later builds of the same files
    (``Forge(reuse_builds=True)``)."""

    repository: str
    sha: str
    run_id: int
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    log: str = ""


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, errors: Any = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.errors = errors


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json; charset=utf-8"


Route = tuple[str, re.Pattern[str], Callable[..., _Response], str, str | None]  # method, re, answer, shape, template


@dataclass(frozen=True)
class Caller:
    """Who a request authenticates as: a user's token, an App's JWT, or an installation token (the App's bot
    user, limited to the installation's repositories)."""

    login: str
    app_id: int | None = None
    installation_id: int | None = None
    jwt: bool = False


@dataclass(frozen=True)
class RejectedRequest:
    """A request the forge refused because it breaks GitHub's description (422)."""

    method: str
    path: str
    problems: tuple[RequestProblem, ...]


class Forge:
    """A GitHub stand-in on 127.0.0.1. Use ``running_forge(root)``; see docs/CONTRACTS.md."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        owner_login: str = "demo",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        run_ci: bool = True,
        test_timeout_s: float = 900.0,
        python: str | None = None,
        token: str | None = None,
        request_log_limit: int | None = None,
        validate_requests: bool | None = None,
        ci_workers: int = 1,
        reuse_builds: bool = False,
    ):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "git").mkdir(exist_ok=True)
        (self.root / "registry").mkdir(exist_ok=True)
        self.run_ci = run_ci
        self.test_timeout_s = test_timeout_s
        # the same files pass once: a build whose commit has the tree of one that passed (or is being tested) on
        # this forge takes that result (its log says whose) instead of running make test again
        self.reuse_builds = reuse_builds
        self._tree_tests: dict[str, _TreeTest] = {}
        self.python = python or sys.executable
        self._started_at = _now()
        self.requests: list[LoggedRequest] = []
        self.request_log_limit = request_log_limit  # None: keep every request (tests); a number: the latest
        self.ci_runs: list[CIRun] = []
        self._lock = threading.RLock()
        self._ids = 1000
        self._users: dict[str, User] = {}
        self._tokens: dict[str, str] = {}
        self._repos: dict[str, Repo] = {}
        self._log_keys: dict[int, str] = {}
        self._rate_limited = 0
        self._rate_used: dict[str, int] = {}  # REST requests per user in the current hour (304s are free)
        self._rate_window = 0
        self.rate_limit_per_hour = 5000
        self._retry_after_s = 1
        self.owner = self._user(owner_login)
        self.token = self.add_user(owner_login, token=token)
        self.hooks = WebhookSender()
        self.hooks.configure(webhook_url, webhook_secret)
        self._ci_queue: queue.Queue[tuple[str, str, str | None, str | None] | None] = queue.Queue()
        self._ci_pending = 0
        self._ci_cv = threading.Condition()
        # CI runners: one by default (builds in push order); the demo runs several repositories at once
        self._ci_threads = [
            threading.Thread(target=self._ci_loop, name=f"forge-ci-{i}", daemon=True) for i in range(max(1, ci_workers))
        ]
        for thread in self._ci_threads:
            thread.start()
        # GitHub Apps: registered Apps, installations, installation tokens (with their expiry on self.clock)
        self.clock: Callable[[], float] = time.time
        self.installation_token_ttl_s = 3600.0
        self._apps: dict[int, App] = {}
        self._installations: dict[int, Installation] = {}
        self._installation_tokens: dict[str, InstallationToken] = {}
        # requests checked against @octokit/openapi (on whenever `make specs` installed it, unless told)
        self.request_checker = _request_checker(validate_requests)
        self.rejected_requests: list[RejectedRequest] = []
        self.undescribed_requests: list[tuple[str, str, str]] = []  # (method, path, why it is not checked)
        self._routes = self._build_routes()
        forge = self

        class Handler(_Handler):
            pass

        Handler.forge = forge
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.web_url = f"http://{host}:{self.port}"
        self.api_url = f"{self.web_url}/api/v3"
        self.render = Renderer(self.web_url)
        self.app_render = AppRenderer(self.render)
        self._reopen_repositories()
        self._thread = threading.Thread(target=self._server.serve_forever, name="forge-http", daemon=True)
        self._thread.start()

    # -- public helpers ---------------------------------------------------------------------------------
    def git_url(self, owner: str, repo: str) -> str:
        """The smart-HTTP clone URL (no credentials: git gets them with basic auth, password = a token)."""
        return f"{self.web_url}/{owner}/{repo}.git"

    @property
    def deliveries(self) -> list[Delivery]:
        return self.hooks.deliveries

    def configure_webhook(self, url: str | None, secret: str | None) -> None:
        """Send signed webhooks for every repository to ``url`` (None: stop sending)."""
        self.hooks.configure(url, secret)

    def add_user(self, login: str, *, token: str | None = None) -> str:
        """Create a user (if new) and return a fresh API token for it (or register ``token``)."""
        with self._lock:
            self._user(login)
            token = token or github_token("ghp_")
            self._tokens[token] = login
            return token

    # -- GitHub Apps -------------------------------------------------------------------------------------
    def register_app(
        self, app_id: int, public_key_pem: str, *, slug: str = "promptship", name: str | None = None
    ) -> App:
        """Register a GitHub App whose JWTs are checked against ``public_key_pem`` (RS256); its bot user is
        ``<slug>[bot]``. The forge's owner owns it."""
        with self._lock:
            if app_id in self._apps:
                raise ValueError(f"App {app_id} is registered already")
            app = App(app_id, slug, name or slug, public_key_pem, self.owner, self._user(f"{slug}[bot]"), _now())
            self._apps[app_id] = app
            return app

    def install_app(self, app_id: int, account: str, repositories: list[str] | None = None) -> int:
        """Install App ``app_id`` on ``account``: on ``repositories`` (owner/name) or, None, on all of the
        account's repositories. Sends ``installation.created``. Returns the installation id."""
        with self._lock:
            app = self._apps[app_id]
            inst = Installation(
                self._next_id(),
                app_id,
                self._user(account),
                _now(),
                None if repositories is None else {r.lower() for r in repositories},
            )
            self._installations[inst.id] = inst
            payload = {
                "action": "created",
                "installation": self.app_render.webhook_installation(inst, app),
                "repositories": [self._repo_ref(n) for n in sorted(inst.repositories or [])],
                "requester": None,
                "sender": self.render.user(self.owner),
            }
        self.hooks.send("installation", payload)
        return inst.id

    def change_installation_repositories(
        self, installation_id: int, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        """Add or remove repositories of a selected-repositories installation (as its owner does in the
        App's settings); sends ``installation_repositories.added`` / ``.removed``."""
        payloads = []
        with self._lock:
            inst = self._installations[installation_id]
            app = self._apps[inst.app_id]
            if inst.repositories is None:
                inst.repositories = {r.full_name.lower() for r in self._repos.values() if inst.covers(r.full_name)}
            for action, names in (("added", add), ("removed", remove)):
                if not names:
                    continue
                for n in names:
                    (inst.repositories.add if action == "added" else inst.repositories.discard)(n.lower())
                refs = [self._repo_ref(n) for n in names]
                payloads.append(
                    {
                        "action": action,
                        "installation": self.app_render.webhook_installation(inst, app),
                        "repository_selection": "selected",
                        "repositories_added": refs if action == "added" else [],
                        "repositories_removed": refs if action == "removed" else [],
                        "requester": None,
                        "sender": self.render.user(self.owner),
                    }
                )
        for payload in payloads:
            self.hooks.send("installation_repositories", payload)

    def installation_token_expired(self, token: str) -> bool:
        """True once an installation token issued by the forge has expired (on ``self.clock``)."""
        with self._lock:
            issued = self._installation_tokens.get(token)
            return issued is None or issued.expires_at <= self.clock()

    def _repo_ref(self, full_name: str) -> dict[str, Any]:
        r = self._repos.get(full_name.lower())
        return self.app_render.repository_ref(r.id if r else 0, r.full_name if r else full_name)

    def authenticate(self, header: str) -> Caller | str | None:
        """The caller an ``Authorization`` header names; a message for a credential that fails (expired,
        unknown, a bad JWT); None when there is no credential at all."""
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "Bad credentials"
            value = password or user
        elif scheme.lower() not in ("token", "bearer"):
            return None
        with self._lock:
            if value in self._tokens:
                return Caller(self._tokens[value])
            issued = self._installation_tokens.get(value)
            if issued is not None:
                if issued.expires_at <= self.clock():
                    return "Bad credentials"
                inst = self._installations.get(issued.installation_id)
                if inst is None:
                    return "Bad credentials"
                app = self._apps[inst.app_id]
                return Caller(app.bot.login, app_id=app.id, installation_id=inst.id)
            if value.count(".") == 2 and self._apps:
                try:
                    # on the wall clock: the App signs with its own (PyGithub: time.time()); self.clock is
                    # the forge's clock for installation tokens, which tests move forward
                    app = verify_jwt(value, self._apps, time.time())
                except AppAuthError as exc:
                    return str(exc)
                return Caller(f"app/{app.slug}", app_id=app.id, jwt=True)
        return "Bad credentials"

    def _app_of(self, caller: Caller) -> App:
        if not caller.jwt or caller.app_id is None:
            raise HTTPError(401, "A JSON web token could not be decoded")
        return self._apps[caller.app_id]

    def _get_app(self, caller: Caller, **_: Any) -> _Response:
        app = self._app_of(caller)
        count = sum(1 for i in self._installations.values() if i.app_id == app.id)
        return _Response(200, self.app_render.integration(app, count))

    def _list_installations(self, caller: Caller, **_: Any) -> _Response:
        app = self._app_of(caller)
        items = []
        for inst in sorted(self._installations.values(), key=lambda i: i.id):
            if inst.app_id == app.id:
                data = self.app_render.installation(inst, app)
                data.pop("client_id")  # this list's item schema has none
                # and its account is allOf(simple-user, enterprise): the enterprise's required fields too
                account = inst.account.login
                data["account"].update(name=account, slug=account, created_at=inst.created_at)
                data["account"]["updated_at"] = inst.created_at
                items.append(data)
        return _Response(200, items)

    def _get_installation(self, caller: Caller, installation_id: str, **_: Any) -> _Response:
        app = self._app_of(caller)
        inst = self._installations.get(int(installation_id))
        if inst is None or inst.app_id != app.id:
            raise HTTPError(404, "Not Found")
        return _Response(200, self.app_render.installation(inst, app))

    def _repo_installation(self, caller: Caller, owner: str, repo: str, **_: Any) -> _Response:
        app = self._app_of(caller)
        r = self._repo(owner, repo)
        for inst in self._installations.values():
            if inst.app_id == app.id and inst.covers(r.full_name):
                return _Response(200, self.app_render.installation(inst, app))
        raise HTTPError(404, "Not Found")

    def _create_token(self, caller: Caller, installation_id: str, **_: Any) -> _Response:
        app = self._app_of(caller)
        inst = self._installations.get(int(installation_id))
        if inst is None or inst.app_id != app.id:
            raise HTTPError(404, "Not Found")
        token = github_token("ghs_")
        expires_at = float(int(self.clock() + self.installation_token_ttl_s))
        self._installation_tokens[token] = InstallationToken(inst.id, expires_at)
        return _Response(201, self.app_render.token(token, expires_at, inst, app))

    def _get_named_user(self, username: str, **_: Any) -> _Response:
        u = self._users.get(username)
        if u is None:
            raise HTTPError(404, "Not Found")
        data = self.render.private_user(u, self._started_at, 0)
        for key in (
            "private_gists",
            "total_private_repos",
            "owned_private_repos",
            "disk_usage",
            "collaborators",
            "two_factor_authentication",
        ):
            data.pop(key, None)
        data["user_view_type"] = "public"
        return _Response(200, data)

    def require_status_checks(self, owner: str, repo: str, contexts: list[str]) -> None:
        """Branch protection on the default branch: merges need a success status for each of ``contexts``."""
        with self._lock:
            self._repo(owner, repo).required_contexts = list(contexts)

    def has_repository(self, owner: str, repo: str) -> bool:
        with self._lock:
            return f"{owner}/{repo}".lower() in self._repos

    def add_collaborator(self, owner: str, repo: str, login: str) -> None:
        with self._lock:
            self._user(login)
            self._repo(owner, repo).collaborators.add(login)

    def seed_repository(self, owner: str, repo: str, source_dir: str | Path, *, default_branch: str = "main") -> str:
        """Create ``owner/repo`` from a directory: one commit on ``default_branch``. Returns its SHA.

        The commit is a push to the base branch, so CI runs on it (and publishes its images when green).
        """
        return self.seed_repositories([f"{owner}/{repo}"], source_dir, default_branch=default_branch)

    def seed_repositories(
        self, repositories: Sequence[str], source_dir: str | Path, *, default_branch: str = "main"
    ) -> str:
        """Create each ``owner/name`` of ``repositories`` from one directory as one and the same commit (same
        files, message, author and date: the same SHA in each, as forks of one import share theirs). Returns it.

        Each is a push to its base branch, so CI runs in each repository and publishes its images there; with
        ``reuse_builds`` the commit is tested once and the other builds take that result. Nothing is created
        when a name is malformed or taken.
        """
        source = Path(source_dir).resolve()
        if not source.is_dir():
            raise FileNotFoundError(f"seed source {source} is not a directory")
        names = [tuple(full.split("/")) for full in repositories]
        bad = [full for full, parts in zip(repositories, names, strict=True) if len(parts) != 2 or not all(parts)]
        if bad or not names:
            raise ValueError(f"repositories must be owner/name: {bad or 'none given'}")
        date = f"@{int(time.time())} +0000"
        seeded: list[tuple[Repo, str]] = []
        with self._lock:
            taken = [full for full in repositories if full.lower() in self._repos]
            if taken or len({full.lower() for full in repositories}) != len(repositories):
                raise ValueError(f"repository exists already or is named twice: {taken or list(repositories)}")
            for owner, repo in names:
                r = self._create_repo(owner, repo, default_branch)
                message = f"Initial import of {source.name}"
                seeded.append((r, g.commit_directory(r.git_dir, source, default_branch, message, date=date)))
        shas = {sha for _, sha in seeded}
        if len(shas) != 1:
            raise g.GitFailed(f"one import gave different commits: {sorted(shas)}")
        for r, sha in seeded:
            self._after_push(r, {f"refs/heads/{default_branch}": (None, sha)})
        return seeded[0][1]

    def commit_files(self, owner: str, repo: str, branch: str, files: dict[str, str | None], message: str) -> str:
        """Commit directly to ``branch`` as another developer would (None deletes a file); CI runs on it.
        A new branch starts from the default branch."""
        with self._lock:
            r = self._repo(owner, repo)
            old = g.rev_parse(r.git_dir, f"refs/heads/{branch}")
            start = old or g.rev_parse(r.git_dir, f"refs/heads/{r.default_branch}")
            work = self.root / "tmp" / secrets.token_hex(6)
            try:
                if start:
                    g.export_tree(r.git_dir, start, work)
                work.mkdir(parents=True, exist_ok=True)
                for name, content in files.items():
                    path = work / name
                    if content is None:
                        path.unlink(missing_ok=True)
                    else:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(content)
                sha = g.commit_directory(r.git_dir, work, branch, message, start_from=start)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        self._after_push(r, {f"refs/heads/{branch}": (old, sha)})
        return sha

    def merge_pull_as_human(self, owner: str, repo: str, number: int, login: str | None = None) -> str:
        """A person presses 'Squash and merge'. Returns the merge commit SHA."""
        with self._lock:
            r = self._repo(owner, repo)
            user = self._users[login] if login else self.owner
        return self._merge(r, number, user, None, None, None)["sha"]

    def secondary_rate_limit(self, requests: int = 1, retry_after_s: int = 1) -> None:
        """The next ``requests`` API calls answer 403 'secondary rate limit' with ``Retry-After``."""
        with self._lock:
            self._rate_limited = requests
            self._retry_after_s = retry_after_s

    def wait_idle(self, timeout_s: float = 120.0) -> bool:
        """Wait until CI has nothing queued or running and every webhook is delivered."""
        deadline = time.monotonic() + timeout_s
        with self._ci_cv:
            if not self._ci_cv.wait_for(lambda: self._ci_pending == 0, timeout=timeout_s):
                return False
        return self.hooks.wait_idle(max(0.0, deadline - time.monotonic()))

    @property
    def registry_dir(self) -> Path:
        """Where CI publishes image records (docs/CONTRACTS.md "Images"); hand it to the sandbox kubelet."""
        return self.root / "registry"

    def image_record(self, owner: str, repo: str, context: str, sha: str) -> Path:
        return self.registry_dir / owner / repo / context / f"{sha}.json"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for _ in self._ci_threads:
            self._ci_queue.put(None)
        for thread in self._ci_threads:
            thread.join(timeout=5)
        self.hooks.close()

    # -- state helpers ----------------------------------------------------------------------------------
    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _user(self, login: str) -> User:
        with self._lock:
            if login not in self._users:
                self._users[login] = User(login=login, id=self._next_id())
            return self._users[login]

    def _repo(self, owner: str, name: str) -> Repo:
        r = self._repos.get(f"{owner}/{name}".lower())
        if r is None:
            raise HTTPError(404, "Not Found")
        return r

    def _create_repo(self, owner: str, name: str, default_branch: str) -> Repo:
        key = f"{owner}/{name}".lower()
        if key in self._repos:
            raise ValueError(f"repository {owner}/{name} exists already")
        git_dir = self.root / "git" / owner / f"{name}.git"
        if not git_dir.exists():
            g.init_bare(git_dir, default_branch)
        now = _now()
        r = Repo(
            id=self._next_id(),
            owner=self._user(owner),
            name=name,
            admin=self.owner.login,
            default_branch=default_branch,
            git_dir=git_dir,
            created_at=now,
            pushed_at=now,
        )
        self._repos[key] = r
        return r

    def _reopen_repositories(self) -> None:
        for git_dir in sorted((self.root / "git").glob("*/*.git")):
            head = (git_dir / "HEAD").read_text().strip()
            branch = head.rsplit("/", 1)[-1] if head.startswith("ref:") else "main"
            self._create_repo(git_dir.parent.name, git_dir.name[: -len(".git")], branch)

    def _label(self, r: Repo, name: str) -> Label:
        if name not in r.labels:
            r.labels[name] = Label(id=self._next_id(), name=name)
        return r.labels[name]

    def _open_pulls_for(self, r: Repo, sha: str) -> list[Issue]:
        return [i for i in r.issues.values() if i.pull and i.state == "open" and i.pull.head_sha == sha]

    # -- git pushes and CI ------------------------------------------------------------------------------
    def _after_push(self, r: Repo, changes: dict[str, tuple[str | None, str | None]]) -> None:
        """React to ref updates: refresh PR heads (synchronize), queue CI for every new branch tip."""
        events: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            r.pushed_at = _now()
            for ref, (old, new) in changes.items():
                if not ref.startswith("refs/heads/") or new is None:
                    continue
                branch = ref[len("refs/heads/") :]
                for i in r.issues.values():
                    if not i.pull or i.state != "open":
                        continue
                    if i.pull.head_ref == branch:
                        i.pull.head_sha = new
                        i.updated_at = _now()
                        events.append(("pull_request", self._pr_payload(r, i, "synchronize", before=old)))
                    if i.pull.base_ref == branch:
                        i.pull.base_sha = new
                if self.run_ci:
                    with self._ci_cv:
                        self._ci_pending += 1
                    self._ci_queue.put((r.full_name, new, branch, old))
        for event, payload in events:
            self.hooks.send(event, payload)

    def _ci_loop(self) -> None:
        while True:
            item = self._ci_queue.get()
            if item is None:
                return
            try:
                self._build(*item)
            except Exception as exc:  # a forge bug must not kill the runner; record it as an errored build
                print(f"forge CI runner: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                with self._ci_cv:
                    self._ci_pending -= 1
                    self._ci_cv.notify_all()

    def _build(self, full_name: str, sha: str, branch: str | None, before: str | None) -> None:
        with self._lock:
            r = self._repos[full_name.lower()]
            now = _now()
            suite = CheckSuite(self._next_id(), sha, branch, before, "in_progress", None, now, now)
            run = CheckRun(self._next_id(), suite.id, CI_CHECK_NAME, sha, "in_progress", None, now, None)
            self._log_keys[run.id] = secrets.token_hex(8)
            r.suites[suite.id] = suite
            r.runs[run.id] = run
            pending = self._add_status(r, sha, "pending", CI_STATUS_CONTEXT, "make test is running", run)
            created = self._check_run_payload(r, run, "created")
            status_payload = self._status_payload(r, pending)
        self.hooks.send("check_run", created)
        self.hooks.send("status", status_payload)

        t0 = time.monotonic()
        ok, log, reused_from = self._tested(r, sha, run.id)
        seconds = time.monotonic() - t0
        images: list[str] = []
        if ok and branch == r.default_branch:
            images = self._publish_images(r, sha)
            if images:
                log += "\n" + "\n".join(f"published image {ref}" for ref in images) + "\n"

        with self._lock:
            now = _now()
            conclusion = "success" if ok else "failure"
            run.status = suite.status = "completed"
            run.conclusion = suite.conclusion = conclusion
            run.completed_at = now
            suite.updated_at = now
            run.log = log
            run.title = "make test passed" if ok else "make test failed"
            run.summary = _tail(log, 60)
            state = "success" if ok else "failure"
            final = self._add_status(r, sha, state, CI_STATUS_CONTEXT, run.title, run)
            payloads = [
                ("check_run", self._check_run_payload(r, run, "completed")),
                ("check_suite", self._check_suite_payload(r, suite, "completed")),
                ("status", self._status_payload(r, final)),
            ]
            self.ci_runs.append(CIRun(r.full_name, sha, branch, conclusion, tuple(images), reused_from, seconds))
        for event, payload in payloads:
            self.hooks.send(event, payload)

    def _tested(self, r: Repo, sha: str, run_id: int) -> tuple[bool, str, str | None]:
        """``make test`` of ``sha``: (passed, log, whose test was reused or None).

        With ``reuse_builds`` the same files pass once on this forge, as a content-keyed CI cache does (Bazel's,
        or skip-duplicate-actions' ``same_content``): a build whose commit has the tree — every file, byte for
        byte — of one that passed takes that result, its log saying whose; one of a tree being tested waits for
        that test. Only passes are reused: a red result is never copied, the next build of those files tests
        them again. ``make test`` sees nothing but the files (the runner's environment is the forge's own)."""
        if not self.reuse_builds:
            return (*self._run_tests(r, sha), None)
        tree = g.git(r.git_dir, "rev-parse", f"{sha}^{{tree}}").strip()
        with self._lock:
            shared = self._tree_tests.get(tree)
            if shared is None:
                shared = self._tree_tests[tree] = _TreeTest(r.full_name, sha, run_id)
                mine = True
            else:
                mine = False
        if not mine:
            shared.done.wait(self.test_timeout_s + 60)
            if shared.ok:
                header = (
                    f"the files of {sha} (tree {tree}) passed in CI run {shared.run_id} of {shared.repository} "
                    f"(commit {shared.sha}); that result is reused, make test did not run again\n"
                )
                return True, header + shared.log, f"{shared.repository}#{shared.run_id}"
            with self._lock:  # that test failed (or never ended): this build tests the files itself
                shared = self._tree_tests[tree] = _TreeTest(r.full_name, sha, run_id)
        try:
            shared.ok, shared.log = self._run_tests(r, sha)
        finally:
            shared.done.set()
            if not shared.ok:
                with self._lock:
                    if self._tree_tests.get(tree) is shared:
                        del self._tree_tests[tree]
        return shared.ok, shared.log, None

    def _run_tests(self, r: Repo, sha: str) -> tuple[bool, str]:
        work = self.root / "ci" / f"{sha[:12]}-{secrets.token_hex(3)}"
        try:
            g.export_tree(r.git_dir, sha, work)
            if not (work / "Makefile").exists():
                return True, "no Makefile at the repository root: nothing to test\n"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTSHIP_", "GITHUB_", "GH_"))}
            env["PYTHON"] = self.python
            env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
            env["MAKEFLAGS"] = ""
            try:
                proc = subprocess.run(
                    ["make", "test", f"PYTHON={self.python}"],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=self.test_timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = (exc.stdout or b"").decode(errors="replace")
                return False, f"$ make test\n{out}\nmake test timed out after {self.test_timeout_s:.0f} s\n"
            out = proc.stdout.decode(errors="replace")
            return proc.returncode == 0, f"$ make test\n{out}\nexit code {proc.returncode}\n"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _publish_images(self, r: Repo, sha: str) -> list[str]:
        refs = []
        for context in g.top_level_dirs_with(r.git_dir, sha, "Dockerfile"):
            image = f"{IMAGE_HOST}/{r.owner.login}/{r.name}/{context}:{sha}"
            record = self.image_record(r.owner.login, r.name, context, sha)
            record.parent.mkdir(parents=True, exist_ok=True)
            data = {"image": image, "repository": r.full_name, "sha": sha, "context": context}
            data["git_dir"] = str(r.git_dir)
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2))
            tmp.replace(record)
            refs.append(image)
        return refs

    def _add_status(
        self, r: Repo, sha: str, state: str, context: str, description: str | None, run: CheckRun | None
    ) -> Status:
        now = _now()
        target = f"{self.web_url}/{r.full_name}/actions/runs/{run.id}/job/{run.id}" if run else None
        s = Status(self._next_id(), sha, state, context, description, target, now, now, self.owner)
        r.statuses.append(s)
        return s

    def _latest_statuses(self, r: Repo, sha: str) -> list[Status]:
        latest: dict[str, Status] = {}
        for s in r.statuses:
            if s.sha == sha:
                latest[s.context] = s
        return list(latest.values())

    # -- webhook payloads -------------------------------------------------------------------------------
    def _base_payload(self, r: Repo, sender: User | None = None) -> dict[str, Any]:
        return {"repository": self.render.repo(r), "sender": self.render.user(sender or self.owner)}

    def _pr_payload(self, r: Repo, i: Issue, action: str, before: str | None = None) -> dict[str, Any]:
        payload = {"action": action, "number": i.number, "pull_request": self._pull_json(r, i)}
        if action == "synchronize" and i.pull:
            payload.update({"before": before, "after": i.pull.head_sha})
        return {**payload, **self._base_payload(r, i.user)}

    def _check_run_payload(self, r: Repo, run: CheckRun, action: str) -> dict[str, Any]:
        data = self.render.check_run(r, run, self._pulls_minimal(r, run.head_sha))
        suite = r.suites[run.suite_id]
        data["check_suite"] = self.render.check_suite(
            r, suite, g.commit_info(r.git_dir, suite.head_sha), 1, self._pulls_minimal(r, suite.head_sha)
        )
        return {"action": action, "check_run": data, **self._base_payload(r)}

    def _check_suite_payload(self, r: Repo, suite: CheckSuite, action: str) -> dict[str, Any]:
        info = g.commit_info(r.git_dir, suite.head_sha)
        data = self.render.check_suite(r, suite, info, 1, self._pulls_minimal(r, suite.head_sha))
        return {"action": action, "check_suite": data, **self._base_payload(r)}

    def _status_payload(self, r: Repo, s: Status) -> dict[str, Any]:
        info = g.commit_info(r.git_dir, s.sha)
        branches = [
            {
                "name": ref[len("refs/heads/") :],
                "commit": {"sha": sha, "url": f"{self.api_url}/repos/{r.full_name}/commits/{sha}"},
                "protected": False,
            }
            for ref, sha in g.refs(r.git_dir).items()
            if sha == s.sha
        ]
        return {
            "id": s.id,
            "sha": s.sha,
            "name": r.full_name,
            "target_url": s.target_url,
            "context": s.context,
            "description": s.description,
            "state": s.state,
            "commit": self.render.commit(r, info),
            "branches": branches,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            **self._base_payload(r),
        }

    def _pulls_minimal(self, r: Repo, sha: str) -> list[dict[str, Any]]:
        return [self.render.pull_minimal(r, i) for i in self._open_pulls_for(r, sha)]

    # -- REST -------------------------------------------------------------------------------------------
    def _build_routes(self) -> list[Route]:
        R = r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        table: list[tuple[str, str, Callable[..., _Response]]] = [
            ("GET", r"/api/v3/user", self._get_user),
            ("GET", r"/api/v3/users/(?P<username>[^/]+)", self._get_named_user),
            ("GET", r"/api/v3/app", self._get_app),
            ("GET", r"/api/v3/app/installations", self._list_installations),
            ("GET", r"/api/v3/app/installations/(?P<installation_id>\d+)", self._get_installation),
            (
                "POST",
                r"/api/v3/app/installations/(?P<installation_id>\d+)/access_tokens",
                self._create_token,
            ),
            ("GET", R + r"/installation", self._repo_installation),
            ("GET", R, self._get_repo),
            ("GET", R + r"/branches", self._list_branches),
            ("GET", R + r"/branches/(?P<branch>.+)", self._get_branch),
            ("GET", R + r"/git/ref/(?P<ref>.+)", self._get_ref),
            ("GET", R + r"/git/refs/(?P<ref>.+)", self._get_ref),
            ("POST", R + r"/git/refs", self._create_ref),
            ("DELETE", R + r"/git/refs/(?P<ref>.+)", self._delete_ref),
            ("GET", R + r"/commits/(?P<ref>[^/]+)", self._get_commit),
            ("GET", R + r"/commits/(?P<ref>[^/]+)/status", self._combined_status),
            ("GET", R + r"/commits/(?P<ref>[^/]+)/statuses", self._list_statuses),
            ("GET", R + r"/statuses/(?P<ref>[^/]+)", self._list_statuses),
            ("POST", R + r"/statuses/(?P<sha>[0-9a-f]{40})", self._create_status),
            ("GET", R + r"/commits/(?P<ref>[^/]+)/check-runs", self._list_check_runs),
            ("GET", R + r"/commits/(?P<ref>[^/]+)/check-suites", self._list_check_suites),
            ("GET", R + r"/check-runs/(?P<id>\d+)", self._get_check_run),
            ("GET", R + r"/check-suites/(?P<id>\d+)", self._get_check_suite),
            ("GET", R + r"/actions/jobs/(?P<id>\d+)/logs", self._job_logs),
            ("GET", R + r"/pulls", self._list_pulls),
            ("POST", R + r"/pulls", self._create_pull),
            ("GET", R + r"/pulls/(?P<number>\d+)", self._get_pull),
            ("PATCH", R + r"/pulls/(?P<number>\d+)", self._edit_pull),
            ("GET", R + r"/pulls/(?P<number>\d+)/merge", self._is_merged),
            ("PUT", R + r"/pulls/(?P<number>\d+)/merge", self._merge_pull),
            ("GET", R + r"/pulls/(?P<number>\d+)/comments", self._list_review_comments),
            ("POST", R + r"/pulls/(?P<number>\d+)/comments", self._create_review_comment),
            ("GET", R + r"/pulls/comments/(?P<id>\d+)", self._get_review_comment),
            ("GET", R + r"/issues", self._list_issues),
            ("POST", R + r"/issues", self._create_issue),
            ("GET", R + r"/issues/(?P<number>\d+)", self._get_issue),
            ("PATCH", R + r"/issues/(?P<number>\d+)", self._edit_issue),
            ("GET", R + r"/issues/(?P<number>\d+)/comments", self._list_comments),
            ("POST", R + r"/issues/(?P<number>\d+)/comments", self._create_comment),
            ("GET", R + r"/issues/comments/(?P<id>\d+)", self._get_comment),
            ("PATCH", R + r"/issues/comments/(?P<id>\d+)", self._edit_comment),
            ("GET", R + r"/issues/(?P<number>\d+)/labels", self._list_issue_labels),
            ("POST", R + r"/issues/(?P<number>\d+)/labels", self._add_labels),
            ("GET", R + r"/labels", self._list_labels),
            ("POST", R + r"/labels", self._create_label),
            ("GET", R + r"/labels/(?P<name>[^/]+)", self._get_label),
        ]
        routes: list[Route] = []
        for m, p, f in table:
            shape = shape_of_route(p)
            template = None
            if self.request_checker is not None:
                template = self.request_checker.template(m, shape)
                if template is None and (m, shape) not in UNDESCRIBED:
                    raise ValueError(
                        f"forge route {m} {shape} is not in GitHub's description: fix the route or list it with "
                        "the reason in promptship_sandbox.forge.openapi.UNDESCRIBED"
                    )
            routes.append((m, re.compile(p + r"/?$"), f, shape, template))
        return routes

    def handle_api(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, caller: Caller | str
    ) -> _Response:
        """Answer one REST request of ``caller`` (a login, for the forge's own users, or a ``Caller``)."""
        if isinstance(caller, str):
            caller = Caller(caller)
        login = caller.login
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                raise HTTPError(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    headers={"Retry-After": str(self._retry_after_s)},
                )
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise HTTPError(400, "Problems parsing JSON") from exc
        path_matched = False
        for m, pattern, func, shape, template in self._routes:
            match = pattern.match(path)
            if not match:
                continue
            path_matched = True
            if m != method:
                continue
            kwargs = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            self._check_request(method, path, shape, template, list(kwargs.values()), query, body)
            app_route = (
                path.startswith("/api/v3/app/")
                or path in ("/api/v3/app", "/api/v3/app/")
                or (path.rstrip("/").endswith("/installation"))
            )
            if caller.jwt and not app_route:
                raise HTTPError(
                    401, "A JSON web token authenticates only the /app endpoints: use an installation token"
                )
            if "owner" in kwargs and "repo" in kwargs and caller.installation_id is not None:
                inst = self._installations.get(caller.installation_id)
                if inst is None or not inst.covers(f"{kwargs['owner']}/{kwargs['repo']}"):
                    raise HTTPError(404, "Not Found")  # GitHub hides what the installation cannot see
            with self._lock:
                user = self._users.get(login) or self.owner
                return func(user=user, caller=caller, query=query, data=data, **kwargs)
        raise HTTPError(404 if not path_matched or method == "GET" else 405, "Not Found")

    def _check_request(
        self,
        method: str,
        path: str,
        shape: str,
        template: str | None,
        path_values: list[str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> None:
        """422 for a request that breaks GitHub's description (when the forge checks requests)."""
        if self.request_checker is None:
            return
        if template is None:
            self.undescribed_requests.append((method, path, UNDESCRIBED[(method, shape)]))
            return
        problems = self.request_checker.check(method, template, path_values, query, body)
        if problems:
            self.rejected_requests.append(RejectedRequest(method, path, tuple(problems)))
            raise HTTPError(422, invalid_request_message(problems))

    def _get_user(self, user: User, **_: Any) -> _Response:
        owned = sum(1 for r in self._repos.values() if r.owner.login == user.login)
        return _Response(200, self.render.private_user(user, self._started_at, owned))

    def _get_repo(self, owner: str, repo: str, **_: Any) -> _Response:
        return _Response(200, self.render.repo(self._repo(owner, repo), full=True))

    def _list_branches(self, owner: str, repo: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        items = [self.render.short_branch(r, ref[11:], sha) for ref, sha in sorted(g.refs(r.git_dir).items())]
        return _Response(200, items)

    def _get_branch(self, owner: str, repo: str, branch: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        sha = g.rev_parse(r.git_dir, f"refs/heads/{branch}")
        if not sha:
            raise HTTPError(404, "Branch not found")
        return _Response(200, self.render.branch(r, branch, g.commit_info(r.git_dir, sha)))

    def _get_ref(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        full = ref if ref.startswith("refs/") else f"refs/{ref}"
        sha = g.rev_parse(r.git_dir, full) if full.startswith("refs/heads/") else None
        if not sha:
            raise HTTPError(404, "Not Found")
        return _Response(200, self.render.ref(r, full, sha))

    def _create_ref(self, owner: str, repo: str, data: Any, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        ref, sha = (data or {}).get("ref"), (data or {}).get("sha")
        if not isinstance(ref, str) or not ref.startswith("refs/heads/") or not isinstance(sha, str):
            raise HTTPError(422, "Reference name and sha are required")
        if g.rev_parse(r.git_dir, ref):
            raise HTTPError(422, "Reference already exists")
        if not g.rev_parse(r.git_dir, sha):
            raise HTTPError(422, "Object does not exist")
        g.git(r.git_dir, "update-ref", ref, sha)
        self._after_push(r, {ref: (None, sha)})
        return _Response(201, self.render.ref(r, ref, sha))

    def _delete_ref(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        """``DELETE /git/refs/heads/BRANCH`` (GitHub answers 422 "Reference does not exist" when it is gone)."""
        r = self._repo(owner, repo)
        full = ref if ref.startswith("refs/") else f"refs/{ref}"
        old = g.rev_parse(r.git_dir, full)
        if not old or not full.startswith("refs/heads/"):
            raise HTTPError(422, "Reference does not exist")
        g.git(r.git_dir, "update-ref", "-d", full)
        return _Response(204, None)

    def _resolve(self, r: Repo, ref: str) -> str:
        sha = g.rev_parse(r.git_dir, ref) if re.fullmatch(r"[0-9a-f]{40}", ref) else None
        sha = sha or g.rev_parse(r.git_dir, f"refs/heads/{ref}")
        if not sha:
            raise HTTPError(422, f"No commit found for SHA: {ref}")
        return sha

    def _get_commit(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, self.render.commit(r, g.commit_info(r.git_dir, self._resolve(r, ref))))

    def _combined_status(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        sha = self._resolve(r, ref)
        latest = sorted(self._latest_statuses(r, sha), key=lambda s: s.id, reverse=True)
        return _Response(200, self.render.combined_status(r, sha, latest))

    def _list_statuses(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        sha = self._resolve(r, ref)
        items = [self.render.status(r, s) for s in reversed(r.statuses) if s.sha == sha]
        return _Response(200, items)

    def _create_status(self, owner: str, repo: str, sha: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        data = data or {}
        if data.get("state") not in ("error", "failure", "pending", "success"):
            raise HTTPError(
                422, "Validation Failed", errors=[{"resource": "Status", "field": "state", "code": "invalid"}]
            )
        if not g.rev_parse(r.git_dir, sha):
            raise HTTPError(422, f"No commit found for SHA: {sha}")
        now = _now()
        s = Status(
            self._next_id(),
            sha,
            data["state"],
            data.get("context") or "default",
            data.get("description"),
            data.get("target_url"),
            now,
            now,
            user,
        )
        r.statuses.append(s)
        self.hooks.send("status", self._status_payload(r, s))
        return _Response(201, self.render.status(r, s))

    def _list_check_runs(self, owner: str, repo: str, ref: str, query: dict[str, list[str]], **_: Any) -> _Response:
        r = self._repo(owner, repo)
        sha = self._resolve(r, ref)
        runs = [c for c in r.runs.values() if c.head_sha == sha]
        name = (query.get("check_name") or [None])[0]
        if name:
            runs = [c for c in runs if c.name == name]
        if (query.get("filter") or ["latest"])[0] == "latest":
            latest: dict[str, CheckRun] = {}
            for c in runs:
                latest[c.name] = c
            runs = list(latest.values())
        pulls = self._pulls_minimal(r, sha)
        items = [self.render.check_run(r, c, pulls) for c in sorted(runs, key=lambda c: c.id, reverse=True)]
        return _Response(200, {"total_count": len(items), "check_runs": items})

    def _list_check_suites(self, owner: str, repo: str, ref: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        sha = self._resolve(r, ref)
        suites = sorted((s for s in r.suites.values() if s.head_sha == sha), key=lambda s: s.id, reverse=True)
        info = g.commit_info(r.git_dir, sha) if suites else None
        pulls = self._pulls_minimal(r, sha)
        items = [
            self.render.check_suite(r, s, info, sum(1 for c in r.runs.values() if c.suite_id == s.id), pulls)
            for s in suites
        ]
        return _Response(200, {"total_count": len(items), "check_suites": items})

    def _get_check_run(self, owner: str, repo: str, id: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        c = r.runs.get(int(id))
        if not c:
            raise HTTPError(404, "Not Found")
        return _Response(200, self.render.check_run(r, c, self._pulls_minimal(r, c.head_sha)))

    def _get_check_suite(self, owner: str, repo: str, id: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        s = r.suites.get(int(id))
        if not s:
            raise HTTPError(404, "Not Found")
        runs = sum(1 for c in r.runs.values() if c.suite_id == s.id)
        info = g.commit_info(r.git_dir, s.head_sha)
        return _Response(200, self.render.check_suite(r, s, info, runs, self._pulls_minimal(r, s.head_sha)))

    def _job_logs(self, owner: str, repo: str, id: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        c = r.runs.get(int(id))
        if not c:
            raise HTTPError(404, "Not Found")
        location = f"{self.web_url}/api/_forge/logs/{r.full_name}/{c.id}?key={self._log_keys[c.id]}"
        return _Response(302, None, headers={"Location": location})

    def rate_headers(self, login: str, *, counted: bool) -> dict[str, str]:
        """GitHub's X-RateLimit-* headers; ``counted`` requests use up the hour's allowance."""
        with self._lock:
            window = int(time.time()) // 3600
            if window != self._rate_window:
                self._rate_window, self._rate_used = window, {}
            if counted:
                self._rate_used[login] = self._rate_used.get(login, 0) + 1
            used = self._rate_used.get(login, 0)
            return {
                "X-RateLimit-Limit": str(self.rate_limit_per_hour),
                "X-RateLimit-Remaining": str(max(0, self.rate_limit_per_hour - used)),
                "X-RateLimit-Used": str(used),
                "X-RateLimit-Reset": str((window + 1) * 3600),
                "X-RateLimit-Resource": "core",
            }

    def rate_limit_used(self, login: str | None = None) -> int:
        """REST requests that counted against ``login``'s rate limit this hour (default: the owner)."""
        with self._lock:
            return self._rate_used.get(login or self.owner.login, 0)

    def job_log_text(self, owner: str, repo: str, run_id: int, key: str) -> str | None:
        with self._lock:
            r = self._repos.get(f"{owner}/{repo}".lower())
            c = r.runs.get(run_id) if r else None
            if not c or not secrets.compare_digest(self._log_keys.get(run_id, ""), key):
                return None
            return c.log

    # pull requests
    def _pull_issue(self, r: Repo, number: str | int) -> Issue:
        i = r.issues.get(int(number))
        if not i or not i.pull:
            raise HTTPError(404, "Not Found")
        return i

    def _pull_json(self, r: Repo, i: Issue) -> dict[str, Any]:
        assert i.pull is not None
        p = i.pull
        base_tip = g.rev_parse(r.git_dir, f"refs/heads/{p.base_ref}") or p.base_sha
        commits, additions, deletions, files = g.diff_stats(r.git_dir, base_tip, p.head_sha)
        if p.merged or i.state == "closed":
            mergeable, state = None, "unknown"
        else:
            check = g.merge_check(r.git_dir, base_tip, p.head_sha)
            mergeable = check.clean
            state = "dirty" if not check.clean else self._mergeable_state(r, p.head_sha)
        extra = {
            "mergeable": mergeable,
            "rebaseable": False,
            "mergeable_state": state,
            "commits": commits,
            "additions": additions,
            "deletions": deletions,
            "changed_files": files,
        }
        return self.render.pull(r, i, extra=extra)

    def _mergeable_state(self, r: Repo, sha: str) -> str:
        states = {s.state for s in self._latest_statuses(r, sha)}
        if states & {"failure", "error"}:
            return "unstable"
        if "pending" in states:
            return "blocked"
        return "clean"

    def _list_pulls(self, owner: str, repo: str, query: dict[str, list[str]], **_: Any) -> _Response:
        r = self._repo(owner, repo)
        state = (query.get("state") or ["open"])[0]
        head = (query.get("head") or [None])[0]
        base = (query.get("base") or [None])[0]
        items = []
        for i in sorted(r.issues.values(), key=lambda i: i.number, reverse=True):
            if not i.pull or (state != "all" and i.state != state):
                continue
            if head and f"{r.owner.login}:{i.pull.head_ref}" != head and i.pull.head_ref != head:
                continue
            if base and i.pull.base_ref != base:
                continue
            items.append(self.render.pull(r, i, simple=True))
        return _Response(200, items)

    def _create_pull(self, owner: str, repo: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        data = data or {}
        head, base, title = data.get("head"), data.get("base"), data.get("title")
        if not isinstance(head, str) or not isinstance(base, str) or not isinstance(title, str) or not title:
            raise HTTPError(422, "Validation Failed", errors=[{"resource": "PullRequest", "code": "missing_field"}])
        head_ref = head.split(":", 1)[1] if ":" in head else head
        head_sha = g.rev_parse(r.git_dir, f"refs/heads/{head_ref}")
        base_sha = g.rev_parse(r.git_dir, f"refs/heads/{base}")
        if not head_sha or not base_sha:
            field_name = "head" if not head_sha else "base"
            raise HTTPError(
                422, "Validation Failed", errors=[{"resource": "PullRequest", "field": field_name, "code": "invalid"}]
            )
        for i in r.issues.values():
            if i.pull and i.state == "open" and i.pull.head_ref == head_ref and i.pull.base_ref == base:
                raise HTTPError(
                    422,
                    "Validation Failed",
                    errors=[
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {r.owner.login}:{head_ref}.",
                        }
                    ],
                )
        if g.diff_stats(r.git_dir, base_sha, head_sha)[0] == 0:
            raise HTTPError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"No commits between {base} and {head_ref}",
                    }
                ],
            )
        now = _now()
        number = max(r.issues, default=0) + 1
        i = Issue(self._next_id(), number, title, data.get("body"), user, now, now)
        i.pull = Pull(self._next_id(), number, head_ref, base, head_sha, base_sha)
        r.issues[number] = i
        self.hooks.send("pull_request", self._pr_payload(r, i, "opened"))
        return _Response(201, self._pull_json(r, i))

    def _get_pull(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, self._pull_json(r, self._pull_issue(r, number)))

    def _edit_pull(self, owner: str, repo: str, number: str, data: Any, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i = self._pull_issue(r, number)
        data = data or {}
        if "title" in data:
            i.title = data["title"]
        if "body" in data:
            i.body = data["body"]
        action = "edited"
        if data.get("state") in ("open", "closed") and not (i.pull and i.pull.merged):
            action = "closed" if data["state"] == "closed" else "reopened"
            i.state = data["state"]
            i.closed_at = _now() if i.state == "closed" else None
        i.updated_at = _now()
        self.hooks.send("pull_request", self._pr_payload(r, i, action))
        return _Response(200, self._pull_json(r, i))

    def _is_merged(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i = self._pull_issue(r, number)
        if i.pull and i.pull.merged:
            return _Response(204)
        raise HTTPError(404, "Not Found")

    def _merge_pull(self, owner: str, repo: str, number: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        data = data or {}
        result = self._merge(
            r,
            int(number),
            user,
            data.get("sha"),
            data.get("commit_title"),
            data.get("commit_message"),
            method=data.get("merge_method", "merge"),
        )
        return _Response(200, result)

    def _merge(
        self,
        r: Repo,
        number: int,
        user: User,
        expected_sha: str | None,
        title: str | None,
        message: str | None,
        method: str = "squash",
    ) -> dict[str, Any]:
        with self._lock:
            i = self._pull_issue(r, number)
            p = i.pull
            assert p is not None
            if method not in ("merge", "squash", "rebase"):
                raise HTTPError(422, "Validation Failed")
            if method == "rebase" or method == "merge":
                method = "squash"  # the forge squashes whatever is asked: its repositories allow only that
            if p.merged or i.state != "open":
                raise HTTPError(405, "Pull Request is not mergeable")
            if expected_sha and expected_sha != p.head_sha:
                raise HTTPError(409, "Head branch was modified. Review and try the merge again.")
            base_ref = f"refs/heads/{p.base_ref}"
            base_tip = g.rev_parse(r.git_dir, base_ref)
            if not base_tip:
                raise HTTPError(405, "Base branch does not exist")
            check = g.merge_check(r.git_dir, base_tip, p.head_sha)
            if not check.clean or not check.tree:
                raise HTTPError(405, "Pull Request is not mergeable")
            passed = {s.context for s in self._latest_statuses(r, p.head_sha) if s.state == "success"}
            for context in r.required_contexts if p.base_ref == r.default_branch else []:
                if context not in passed:
                    raise HTTPError(405, f'Required status check "{context}" is expected.')
            subject = title or f"{i.title} (#{i.number})"
            body = message if message is not None else ""
            sha = g.squash_commit(r.git_dir, check.tree, base_tip, f"{subject}\n\n{body}".rstrip() + "\n")
            if not g.update_ref(r.git_dir, base_ref, sha, base_tip):
                raise HTTPError(409, "Base branch was modified. Review and try the merge again.")
            now = _now()
            p.merged, p.merged_at, p.merged_by, p.merge_commit_sha = True, now, user, sha
            i.state, i.closed_at, i.updated_at = "closed", now, now
            closed = self._pr_payload(r, i, "closed")
        self.hooks.send("pull_request", closed)
        self._after_push(r, {base_ref: (base_tip, sha)})
        return {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    # issues, comments, labels
    def _list_review_comments(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        pull = self._pull_issue(r, number).pull
        assert pull is not None
        return _Response(200, [self.render.review_comment(r, c) for c in pull.review_comments])

    def _get_review_comment(self, owner: str, repo: str, id: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        for i in r.issues.values():
            for c in i.pull.review_comments if i.pull else ():
                if c.id == int(id):
                    return _Response(200, self.render.review_comment(r, c))
        raise HTTPError(404, "Not Found")

    def _create_review_comment(self, owner: str, repo: str, number: str, data: Any, user: User, **_: Any) -> _Response:
        """A comment on a line (``line``, side RIGHT) or a whole file (``subject_type: file``) of the PR's diff.
        Like GitHub: 422 when the path or line is not part of the diff, when ``line`` is missing for a line
        comment; replies (``in_reply_to``) and multi-line ranges are not served by the forge (422)."""
        r = self._repo(owner, repo)
        i = self._pull_issue(r, number)
        assert i.pull is not None
        data = data or {}

        def invalid(field_name: str, message: str) -> HTTPError:
            return HTTPError(
                422,
                "Validation Failed",
                errors=[
                    {"resource": "PullRequestReviewComment", "field": field_name, "code": "custom", "message": message}
                ],
            )

        body, path, commit_id = data.get("body"), data.get("path"), data.get("commit_id")
        for name, value in (("body", body), ("path", path), ("commit_id", commit_id)):
            if not isinstance(value, str) or not value:
                raise HTTPError(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "PullRequestReviewComment", "field": name, "code": "missing_field"}],
                )
        assert isinstance(body, str) and isinstance(path, str) and isinstance(commit_id, str)
        if "in_reply_to" in data or "start_line" in data or data.get("side", "RIGHT") != "RIGHT":
            raise invalid("side", "the forge serves single-line comments on the new side (RIGHT) only")
        line = data.get("line")
        if data.get("subject_type") != "file" and not isinstance(line, int):
            raise invalid("line", "line is required unless subject_type is file")
        if g.rev_parse(r.git_dir, commit_id) is None:
            raise invalid("commit_id", "commit_id is not part of the pull request")
        hunk = g.diff_hunk(r.git_dir, i.pull.base_sha, commit_id, path, line if isinstance(line, int) else None)
        if hunk is None:
            raise invalid("line" if isinstance(line, int) else "path", "must be part of the diff")
        now = _now()
        c = ReviewComment(
            self._next_id(),
            i.number,
            body,
            path,
            line if isinstance(line, int) else None,
            "RIGHT",
            commit_id,
            hunk,
            user,
            now,
            now,
        )
        i.pull.review_comments.append(c)
        i.updated_at = now
        return _Response(201, self.render.review_comment(r, c))

    def _issue(self, r: Repo, number: str | int) -> Issue:
        i = r.issues.get(int(number))
        if not i:
            raise HTTPError(404, "Not Found")
        return i

    def _list_issues(self, owner: str, repo: str, query: dict[str, list[str]], **_: Any) -> _Response:
        r = self._repo(owner, repo)
        state = (query.get("state") or ["open"])[0]
        items = [
            self.render.issue(r, i)
            for i in sorted(r.issues.values(), key=lambda i: i.number, reverse=True)
            if state == "all" or i.state == state
        ]
        return _Response(200, items)

    def _create_issue(self, owner: str, repo: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        data = data or {}
        title = data.get("title")
        if not isinstance(title, str) or not title:
            raise HTTPError(
                422, "Validation Failed", errors=[{"resource": "Issue", "field": "title", "code": "missing_field"}]
            )
        now = _now()
        number = max(r.issues, default=0) + 1
        i = Issue(self._next_id(), number, title, data.get("body"), user, now, now)
        for name in data.get("labels") or []:
            i.labels.append(self._label(r, name if isinstance(name, str) else name["name"]).name)
        r.issues[number] = i
        payload = {"action": "opened", "issue": self.render.issue(r, i), **self._base_payload(r, user)}
        self.hooks.send("issues", payload)
        for name in i.labels:
            label = self.render.label(r, r.labels[name])
            self.hooks.send(
                "issues",
                {"action": "labeled", "issue": self.render.issue(r, i), "label": label, **self._base_payload(r, user)},
            )
        return _Response(201, self.render.issue(r, i))

    def _get_issue(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, self.render.issue(r, self._issue(r, number)))

    def _edit_issue(self, owner: str, repo: str, number: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i = self._issue(r, number)
        data = data or {}
        for key in ("title", "body"):
            if key in data:
                setattr(i, key, data[key])
        if data.get("state") in ("open", "closed"):
            i.state = data["state"]
            i.closed_at = _now() if i.state == "closed" else None
        i.updated_at = _now()
        return _Response(200, self.render.issue(r, i))

    def _list_comments(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, [self.render.comment(r, c) for c in self._issue(r, number).comments])

    def _find_comment(self, r: Repo, comment_id: str) -> tuple[Issue, Comment]:
        for i in r.issues.values():
            for c in i.comments:
                if c.id == int(comment_id):
                    return i, c
        raise HTTPError(404, "Not Found")

    def _get_comment(self, owner: str, repo: str, id: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, self.render.comment(r, self._find_comment(r, id)[1]))

    def _edit_comment(self, owner: str, repo: str, id: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i, c = self._find_comment(r, id)
        body = (data or {}).get("body")
        if not isinstance(body, str) or not body:
            raise HTTPError(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "field": "body", "code": "missing_field"}],
            )
        if c.user.login != user.login:
            raise HTTPError(403, "Resource not accessible by integration")
        previous = c.body
        c.body, c.updated_at = body, _now()
        payload = {
            "action": "edited",
            "changes": {"body": {"from": previous}},
            "issue": self.render.issue(r, i),
            "comment": self.render.comment(r, c),
            **self._base_payload(r, user),
        }
        self.hooks.send("issue_comment", payload)
        return _Response(200, self.render.comment(r, c))

    def _create_comment(self, owner: str, repo: str, number: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i = self._issue(r, number)
        body = (data or {}).get("body")
        if not isinstance(body, str) or not body:
            raise HTTPError(
                422,
                "Validation Failed",
                errors=[{"resource": "IssueComment", "field": "body", "code": "missing_field"}],
            )
        now = _now()
        c = Comment(self._next_id(), i.number, body, user, now, now)
        i.comments.append(c)
        i.updated_at = now
        payload = {
            "action": "created",
            "issue": self.render.issue(r, i),
            "comment": self.render.comment(r, c),
            **self._base_payload(r, user),
        }
        self.hooks.send("issue_comment", payload)
        return _Response(201, self.render.comment(r, c))

    def _list_issue_labels(self, owner: str, repo: str, number: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, [self.render.label(r, r.labels[n]) for n in self._issue(r, number).labels])

    def _add_labels(self, owner: str, repo: str, number: str, data: Any, user: User, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        i = self._issue(r, number)
        names = data.get("labels", []) if isinstance(data, dict) else (data or [])
        for name in names:
            name = name if isinstance(name, str) else name.get("name", "")
            if name and name not in i.labels:
                i.labels.append(self._label(r, name).name)
                if not i.pull:
                    self.hooks.send(
                        "issues",
                        {
                            "action": "labeled",
                            "issue": self.render.issue(r, i),
                            "label": self.render.label(r, r.labels[name]),
                            **self._base_payload(r, user),
                        },
                    )
        i.updated_at = _now()
        return _Response(200, [self.render.label(r, r.labels[n]) for n in i.labels])

    def _list_labels(self, owner: str, repo: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        return _Response(200, [self.render.label(r, lbl) for lbl in r.labels.values()])

    def _create_label(self, owner: str, repo: str, data: Any, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        data = data or {}
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise HTTPError(422, "Validation Failed")
        if name in r.labels:
            raise HTTPError(
                422, "Validation Failed", errors=[{"resource": "Label", "code": "already_exists", "field": "name"}]
            )
        lbl = self._label(r, name)
        lbl.color = data.get("color", lbl.color)
        lbl.description = data.get("description")
        return _Response(201, self.render.label(r, lbl))

    def _get_label(self, owner: str, repo: str, name: str, **_: Any) -> _Response:
        r = self._repo(owner, repo)
        if name not in r.labels:
            raise HTTPError(404, "Not Found")
        return _Response(200, self.render.label(r, r.labels[name]))

    # -- git smart HTTP ---------------------------------------------------------------------------------
    def handle_git(
        self,
        method: str,
        repo_path: tuple[str, str, str],
        query: str,
        headers: dict[str, str],
        body: bytes,
        login: str,
        caller: Caller | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        owner, name, rest = repo_path
        with self._lock:
            r = self._repo(owner, name)
            inst = self._installations.get(caller.installation_id) if caller and caller.installation_id else None
        if caller is not None and caller.jwt:
            return 403, {"Content-Type": "text/plain"}, b"a JWT cannot clone or push: use an installation token\n"
        if inst is not None and not inst.covers(r.full_name):
            return 404, {"Content-Type": "text/plain"}, b"Repository not found.\n"
        pushing = rest == "/git-receive-pack" or "service=git-receive-pack" in query
        if pushing and inst is None and login not in (r.owner.login, self.owner.login, *r.collaborators):
            return 403, {"Content-Type": "text/plain"}, b"permission denied\n"
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "GIT_PROJECT_ROOT": str(self.root / "git"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{r.owner.login}/{r.name}.git{rest}",
            "REQUEST_METHOD": method,
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": login,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
        }
        if headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
        if headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = headers["git-protocol"]
        before = g.refs(r.git_dir) if rest == "/git-receive-pack" else None
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        out = proc.stdout
        sep = out.find(b"\r\n\r\n")
        sep_len = 4
        if sep < 0:
            sep, sep_len = out.find(b"\n\n"), 2
        head, payload = (out[:sep], out[sep + sep_len :]) if sep >= 0 else (b"", out)
        status, resp_headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            if ":" not in line:
                continue
            k, v = line.split(":", 1)
            if k.strip().lower() == "status":
                status = int(v.strip().split()[0])
            else:
                resp_headers[k.strip()] = v.strip()
        if before is not None:
            after = g.refs(r.git_dir)
            changes = {
                ref: (before.get(ref), after.get(ref))
                for ref in set(before) | set(after)
                if before.get(ref) != after.get(ref)
            }
            if changes:
                self._after_push(r, changes)
        return status, resp_headers, payload


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "promptship-forge"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    forge: Forge

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the forge keeps its own request log
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _caller(self) -> Caller | str | None:
        return self.forge.authenticate(self.headers.get("Authorization", ""))

    def _dispatch(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path, query = parsed.path, parsed.query
        body = self._read_body()
        req_headers = {k.lower(): v for k, v in self.headers.items()}
        status, headers, payload = self._answer(method, path, query, body, req_headers)
        headers.setdefault("Content-Length", str(len(payload)))
        # logged before answering: a client that got its answer always finds it in the log
        logged_headers = {k: v for k, v in req_headers.items() if k != "authorization"}
        self.forge.requests.append(
            LoggedRequest(
                method, path, query, status, logged_headers, headers, payload, body if path.startswith("/api/") else b""
            )
        )
        limit = self.forge.request_log_limit
        if limit is not None and len(self.forge.requests) > limit + limit // 10:
            del self.forge.requests[: len(self.forge.requests) - limit]
            del self.forge.hooks.deliveries[: max(0, len(self.forge.hooks.deliveries) - limit)]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD" and payload:
            self.wfile.write(payload)

    def _answer(
        self, method: str, path: str, query: str, body: bytes, req_headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        forge = self.forge
        caller = self._caller()
        if path.startswith("/api/v3/") or path == "/api/v3":
            if caller is None:
                return _json_error(401, "Requires authentication", {})
            if isinstance(caller, str):
                return _json_error(401, caller, {})
            login = caller.login
            try:
                resp = forge.handle_api(method, path, urllib.parse.parse_qs(query), body, caller)
            except HTTPError as exc:
                return _json_error(exc.status, exc.message, exc.headers, exc.errors)
            except g.GitFailed as exc:
                return _json_error(500, f"forge git failure: {exc}", {})
            headers = dict(resp.headers)
            headers.setdefault("X-GitHub-Media-Type", "github.v3; format=json")
            if resp.body is None:
                return resp.status, {**headers, **forge.rate_headers(login, counted=True)}, b""
            payload = json.dumps(resp.body).encode()
            headers["Content-Type"] = resp.content_type
            if method == "GET" and resp.status == 200:
                etag = 'W/"' + hashlib.sha256(payload).hexdigest()[:40] + '"'
                headers["ETag"] = etag
                headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
                if req_headers.get("if-none-match") == etag:
                    # like GitHub: a 304 does not count against the rate limit
                    unchanged = {"ETag": etag, "Cache-Control": headers["Cache-Control"]}
                    return 304, {**unchanged, **forge.rate_headers(login, counted=False)}, b""
            return resp.status, {**headers, **forge.rate_headers(login, counted=True)}, payload
        m = re.fullmatch(r"/api/_forge/logs/([^/]+)/([^/]+)/(\d+)", path)
        if m and method == "GET":
            key = (urllib.parse.parse_qs(query).get("key") or [""])[0]
            text = forge.job_log_text(m.group(1), m.group(2), int(m.group(3)), key)
            if text is None:
                return 404, {"Content-Type": "text/plain"}, b"not found\n"
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
        m = re.fullmatch(r"/([^/]+)/([^/]+?)(?:\.git)?(/info/refs|/git-upload-pack|/git-receive-pack)", path)
        if m:
            if not isinstance(caller, Caller):
                return (
                    401,
                    {"WWW-Authenticate": 'Basic realm="promptship forge"', "Content-Type": "text/plain"},
                    b"auth\n",
                )
            try:
                return forge.handle_git(
                    method, (m.group(1), m.group(2), m.group(3)), query, req_headers, body, caller.login, caller
                )
            except HTTPError as exc:
                return exc.status, {"Content-Type": "text/plain"}, exc.message.encode()
        return 404, {"Content-Type": "text/plain"}, b"not found\n"


def _json_error(
    status: int, message: str, headers: dict[str, str], errors: Any = None
) -> tuple[int, dict[str, str], bytes]:
    body: dict[str, Any] = {
        "message": message,
        "documentation_url": "https://docs.github.com/rest",
    }
    if errors:
        body["errors"] = errors
    return status, {"Content-Type": "application/json; charset=utf-8", **headers}, json.dumps(body).encode()


def _request_checker(validate: bool | None) -> OpenAPIRequests | None:
    """The request checker: on when ``validate`` (then the description must be installed), off when False;
    None (default): on whenever ``make specs`` has installed ``@octokit/openapi``."""
    from promptship_sandbox import specs

    path = specs.github_openapi_path()
    if validate is False or (validate is None and not path.is_file()):
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `make specs` (the forge validates requests against it)")
    return load_request_checker(path)
