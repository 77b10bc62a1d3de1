"""GitHub-shaped JSON for the forge's objects, following the schemas of ``@octokit/openapi``.

Only fields the schemas define are emitted (the tests validate with additional properties forbidden).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

APP_ID = 1


def node_id(kind: str, ident: int | str) -> str:
    return base64.b64encode(f"0:{kind}{ident}".encode()).decode().rstrip("=")


@dataclass
class User:
    login: str
    id: int


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class Comment:
    id: int
    issue_number: int
    body: str
    user: User
    created_at: str
    updated_at: str


@dataclass
class ReviewComment:
    """A comment on a line (or a whole file) of a pull request's diff."""

    id: int
    pull_number: int
    body: str
    path: str
    line: int | None
    side: str
    commit_id: str
    diff_hunk: str
    user: User
    created_at: str
    updated_at: str


@dataclass
class Issue:
    """An issue or the issue side of a pull request (they share numbers, as on GitHub)."""

    id: int
    number: int
    title: str
    body: str | None
    user: User
    created_at: str
    updated_at: str
    state: str = "open"
    closed_at: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    pull: Pull | None = None


@dataclass
class Pull:
    id: int
    number: int
    head_ref: str
    base_ref: str
    head_sha: str
    base_sha: str
    merged: bool = False
    merged_at: str | None = None
    merged_by: User | None = None
    merge_commit_sha: str | None = None
    review_comments: list[ReviewComment] = field(default_factory=list)


@dataclass
class Status:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    created_at: str
    updated_at: str
    creator: User


@dataclass
class CheckSuite:
    id: int
    head_sha: str
    head_branch: str | None
    before: str | None
    status: str
    conclusion: str | None
    created_at: str
    updated_at: str


@dataclass
class CheckRun:
    id: int
    suite_id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: str
    completed_at: str | None
    title: str | None = None
    summary: str | None = None
    text: str | None = None
    log: str = ""


@dataclass
class Repo:
    id: int
    owner: User
    name: str
    default_branch: str
    git_dir: Any
    created_at: str
    pushed_at: str
    admin: str = ""  # the forge's administrator: owner of every organisation on it
    collaborators: set[str] = field(default_factory=set)
    required_contexts: list[str] = field(default_factory=list)
    labels: dict[str, Label] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)
    statuses: list[Status] = field(default_factory=list)
    suites: dict[int, CheckSuite] = field(default_factory=dict)
    runs: dict[int, CheckRun] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    def association(self, login: str) -> str:
        if login in (self.owner.login, self.admin):
            return "OWNER"
        if login in self.collaborators:
            return "COLLABORATOR"
        return "NONE"


class Renderer:
    """Turns forge objects into GitHub JSON, with URLs under the forge's own address."""

    @staticmethod
    def reactions(url: str) -> dict[str, Any]:
        counts = dict.fromkeys(("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket"), 0)
        return {"url": f"{url}/reactions", "total_count": 0, **counts}

    def __init__(self, web_url: str):
        self.web = web_url.rstrip("/")
        self.api = f"{self.web}/api/v3"
        self.host = self.web.split("://", 1)[1]

    # -- users and apps -------------------------------------------------------------------------------
    def user(self, u: User) -> dict[str, Any]:
        base = f"{self.api}/users/{u.login}"
        return {
            "login": u.login,
            "id": u.id,
            "node_id": node_id("U", u.id),
            "avatar_url": f"{self.web}/avatars/{u.login}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{self.web}/{u.login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": "Bot" if u.login.endswith("[bot]") else "User",
            "site_admin": False,
        }

    def private_user(self, u: User, created_at: str, repos: int) -> dict[str, Any]:
        """``GET /user``: the authenticated user's own profile."""
        return {
            **self.user(u),
            "user_view_type": "private",
            "name": u.login,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": created_at,
            "updated_at": created_at,
            "private_gists": 0,
            "total_private_repos": repos,
            "owned_private_repos": repos,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": False,
        }

    def app(self, owner: User, created_at: str) -> dict[str, Any]:
        return {
            "id": APP_ID,
            "slug": "promptship-forge-ci",
            "node_id": node_id("A", APP_ID),
            "owner": self.user(owner),
            "name": "promptship forge CI",
            "description": "The local forge's CI runner",
            "external_url": self.web,
            "html_url": f"{self.web}/apps/promptship-forge-ci",
            "created_at": created_at,
            "updated_at": created_at,
            "permissions": {"checks": "write", "statuses": "write", "contents": "read"},
            "events": ["push", "pull_request"],
        }

    # -- repositories ---------------------------------------------------------------------------------
    def repo_minimal(self, r: Repo) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "id": r.id,
            "node_id": node_id("R", r.id),
            "name": r.name,
            "full_name": r.full_name,
            "owner": self.user(r.owner),
            "private": True,
            "html_url": f"{self.web}/{r.full_name}",
            "description": None,
            "fork": False,
            "url": a,
            "archive_url": f"{a}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{a}/assignees{{/user}}",
            "blobs_url": f"{a}/git/blobs{{/sha}}",
            "branches_url": f"{a}/branches{{/branch}}",
            "collaborators_url": f"{a}/collaborators{{/collaborator}}",
            "comments_url": f"{a}/comments{{/number}}",
            "commits_url": f"{a}/commits{{/sha}}",
            "compare_url": f"{a}/compare/{{base}}...{{head}}",
            "contents_url": f"{a}/contents/{{+path}}",
            "contributors_url": f"{a}/contributors",
            "deployments_url": f"{a}/deployments",
            "downloads_url": f"{a}/downloads",
            "events_url": f"{a}/events",
            "forks_url": f"{a}/forks",
            "git_commits_url": f"{a}/git/commits{{/sha}}",
            "git_refs_url": f"{a}/git/refs{{/sha}}",
            "git_tags_url": f"{a}/git/tags{{/sha}}",
            "hooks_url": f"{a}/hooks",
            "issue_comment_url": f"{a}/issues/comments{{/number}}",
            "issue_events_url": f"{a}/issues/events{{/number}}",
            "issues_url": f"{a}/issues{{/number}}",
            "keys_url": f"{a}/keys{{/key_id}}",
            "labels_url": f"{a}/labels{{/name}}",
            "languages_url": f"{a}/languages",
            "merges_url": f"{a}/merges",
            "milestones_url": f"{a}/milestones{{/number}}",
            "notifications_url": f"{a}/notifications{{?since,all,participating}}",
            "pulls_url": f"{a}/pulls{{/number}}",
            "releases_url": f"{a}/releases{{/id}}",
            "stargazers_url": f"{a}/stargazers",
            "statuses_url": f"{a}/statuses/{{sha}}",
            "subscribers_url": f"{a}/subscribers",
            "subscription_url": f"{a}/subscription",
            "tags_url": f"{a}/tags",
            "teams_url": f"{a}/teams",
            "trees_url": f"{a}/git/trees{{/sha}}",
        }

    def repo(self, r: Repo, *, full: bool = False) -> dict[str, Any]:
        open_issues = sum(1 for i in r.issues.values() if i.state == "open")
        data = self.repo_minimal(r)
        data.update(
            {
                "git_url": f"git://{self.host}/{r.full_name}.git",
                "ssh_url": f"git@{self.host}:{r.full_name}.git",
                "clone_url": f"{self.web}/{r.full_name}.git",
                "mirror_url": None,
                "svn_url": f"{self.web}/{r.full_name}",
                "homepage": None,
                "language": None,
                "forks_count": 0,
                "stargazers_count": 0,
                "watchers_count": 0,
                "size": 0,
                "default_branch": r.default_branch,
                "open_issues_count": open_issues,
                "is_template": False,
                "topics": [],
                "has_issues": True,
                "has_projects": False,
                "has_wiki": False,
                "has_pages": False,
                "has_downloads": True,
                "has_discussions": False,
                "archived": False,
                "disabled": False,
                "visibility": "private",
                "pushed_at": r.pushed_at,
                "created_at": r.created_at,
                "updated_at": r.pushed_at,
                "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
                "allow_rebase_merge": False,
                "allow_squash_merge": True,
                "allow_merge_commit": False,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "allow_forking": False,
                "web_commit_signoff_required": False,
                "license": None,
                "forks": 0,
                "open_issues": open_issues,
                "watchers": 0,
            }
        )
        if full:
            data["subscribers_count"] = 0
            data["network_count"] = 0
        return data

    # -- git objects ----------------------------------------------------------------------------------
    def commit(self, r: Repo, info: Any) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "url": f"{a}/commits/{info.sha}",
            "sha": info.sha,
            "node_id": node_id("C", info.sha[:12]),
            "html_url": f"{self.web}/{r.full_name}/commit/{info.sha}",
            "comments_url": f"{a}/commits/{info.sha}/comments",
            "commit": {
                "url": f"{a}/git/commits/{info.sha}",
                "author": {"name": info.author_name, "email": info.author_email, "date": info.author_date},
                "committer": {
                    "name": info.committer_name,
                    "email": info.committer_email,
                    "date": info.committer_date,
                },
                "message": info.message,
                "comment_count": 0,
                "tree": {"sha": info.tree, "url": f"{a}/git/trees/{info.tree}"},
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
            # GitHub sends null for authors without an account; openapi-core rejects that null (anyOf +
            # nullable), so the forge attributes every commit to the repository's owner.
            "author": self.user(r.owner),
            "committer": self.user(r.owner),
            "parents": [
                {"sha": p, "url": f"{a}/commits/{p}", "html_url": f"{self.web}/{r.full_name}/commit/{p}"}
                for p in info.parents
            ],
        }

    def branch(self, r: Repo, name: str, info: Any) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "name": name,
            "commit": self.commit(r, info),
            "_links": {"html": f"{self.web}/{r.full_name}/tree/{name}", "self": f"{a}/branches/{name}"},
            "protected": False,
            "protection": {"enabled": False},
            "protection_url": f"{a}/branches/{name}/protection",
        }

    def short_branch(self, r: Repo, name: str, sha: str) -> dict[str, Any]:
        return {
            "name": name,
            "commit": {"sha": sha, "url": f"{self.api}/repos/{r.full_name}/commits/{sha}"},
            "protected": False,
        }

    def ref(self, r: Repo, ref: str, sha: str) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "ref": ref,
            "node_id": node_id("REF", ref),
            "url": f"{a}/git/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{a}/git/commits/{sha}"},
        }

    # -- issues, labels, comments ---------------------------------------------------------------------
    def label(self, r: Repo, lbl: Label) -> dict[str, Any]:
        return {
            "id": lbl.id,
            "node_id": node_id("L", lbl.id),
            "url": f"{self.api}/repos/{r.full_name}/labels/{lbl.name}",
            "name": lbl.name,
            "description": lbl.description or "",
            "color": lbl.color,
            "default": False,
        }

    def issue(self, r: Repo, i: Issue) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        data: dict[str, Any] = {
            "id": i.id,
            "node_id": node_id("I", i.id),
            "url": f"{a}/issues/{i.number}",
            "repository_url": a,
            "labels_url": f"{a}/issues/{i.number}/labels{{/name}}",
            "comments_url": f"{a}/issues/{i.number}/comments",
            "events_url": f"{a}/issues/{i.number}/events",
            "html_url": f"{self.web}/{r.full_name}/{'pull' if i.pull else 'issues'}/{i.number}",
            "number": i.number,
            "state": i.state,
            "title": i.title,
            "body": i.body,
            "user": self.user(i.user),
            "labels": [self.label(r, r.labels[n]) for n in i.labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(i.comments),
            "closed_at": i.closed_at,
            "created_at": i.created_at,
            "updated_at": i.updated_at,
            "author_association": r.association(i.user.login),
            "timeline_url": f"{a}/issues/{i.number}/timeline",
            "reactions": self.reactions(f"{a}/issues/{i.number}"),
        }
        if i.state == "closed":
            data["state_reason"] = "completed"
        if i.pull:
            data["pull_request"] = {
                "url": f"{a}/pulls/{i.number}",
                "html_url": f"{self.web}/{r.full_name}/pull/{i.number}",
                "diff_url": f"{self.web}/{r.full_name}/pull/{i.number}.diff",
                "patch_url": f"{self.web}/{r.full_name}/pull/{i.number}.patch",
                "merged_at": i.pull.merged_at,
            }
        return data

    def comment(self, r: Repo, c: Comment) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "id": c.id,
            "node_id": node_id("IC", c.id),
            "url": f"{a}/issues/comments/{c.id}",
            "body": c.body,
            "html_url": f"{self.web}/{r.full_name}/issues/{c.issue_number}#issuecomment-{c.id}",
            "user": self.user(c.user),
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "issue_url": f"{a}/issues/{c.issue_number}",
            "author_association": r.association(c.user.login),
            "performed_via_github_app": None,
            "reactions": self.reactions(f"{a}/issues/comments/{c.id}"),
        }

    def review_comment(self, r: Repo, c: ReviewComment) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        html = f"{self.web}/{r.full_name}/pull/{c.pull_number}#discussion_r{c.id}"
        data: dict[str, Any] = {
            "url": f"{a}/pulls/comments/{c.id}",
            "pull_request_review_id": None,
            "id": c.id,
            "node_id": node_id("PRRC", c.id),
            "diff_hunk": c.diff_hunk,
            "path": c.path,
            "commit_id": c.commit_id,
            "original_commit_id": c.commit_id,
            "user": self.user(c.user),
            "body": c.body,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "html_url": html,
            "pull_request_url": f"{a}/pulls/{c.pull_number}",
            "author_association": r.association(c.user.login),
            "_links": {
                "self": {"href": f"{a}/pulls/comments/{c.id}"},
                "html": {"href": html},
                "pull_request": {"href": f"{a}/pulls/{c.pull_number}"},
            },
            "start_line": None,
            "original_start_line": None,
            "side": c.side,
            "subject_type": "line" if c.line is not None else "file",
            "reactions": self.reactions(f"{a}/pulls/comments/{c.id}"),
        }
        if c.line is not None:
            data["line"] = data["original_line"] = c.line
        return data

    # -- pull requests --------------------------------------------------------------------------------
    def pull(self, r: Repo, i: Issue, *, simple: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        assert i.pull is not None
        p = i.pull
        a = f"{self.api}/repos/{r.full_name}"
        html = f"{self.web}/{r.full_name}/pull/{i.number}"

        def side(ref: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{r.owner.login}:{ref}",
                "ref": ref,
                "repo": self.repo(r),
                "sha": sha,
                "user": self.user(r.owner),
            }

        data: dict[str, Any] = {
            "url": f"{a}/pulls/{i.number}",
            "id": p.id,
            "node_id": node_id("PR", p.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{a}/issues/{i.number}",
            "commits_url": f"{a}/pulls/{i.number}/commits",
            "review_comments_url": f"{a}/pulls/{i.number}/comments",
            "review_comment_url": f"{a}/pulls/comments{{/number}}",
            "comments_url": f"{a}/issues/{i.number}/comments",
            "statuses_url": f"{a}/statuses/{p.head_sha}",
            "number": i.number,
            "state": i.state,
            "locked": False,
            "title": i.title,
            "user": self.user(i.user),
            "body": i.body,
            "labels": [self.label(r, r.labels[n]) for n in i.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": i.created_at,
            "updated_at": i.updated_at,
            "closed_at": i.closed_at,
            "merged_at": p.merged_at,
            "merge_commit_sha": p.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(p.head_ref, p.head_sha),
            "base": side(p.base_ref, p.base_sha),
            "_links": {
                "self": {"href": f"{a}/pulls/{i.number}"},
                "html": {"href": html},
                "issue": {"href": f"{a}/issues/{i.number}"},
                "comments": {"href": f"{a}/issues/{i.number}/comments"},
                "review_comments": {"href": f"{a}/pulls/{i.number}/comments"},
                "review_comment": {"href": f"{a}/pulls/comments{{/number}}"},
                "commits": {"href": f"{a}/pulls/{i.number}/commits"},
                "statuses": {"href": f"{a}/statuses/{p.head_sha}"},
            },
            "author_association": r.association(i.user.login),
            "auto_merge": None,
            "draft": False,
        }
        if not simple:
            data.update(
                {
                    "merged": p.merged,
                    "merged_by": self.user(p.merged_by) if p.merged_by else None,
                    "comments": len(i.comments),
                    "review_comments": len(p.review_comments),
                    "maintainer_can_modify": False,
                    **(extra or {}),
                }
            )
        return data

    # -- statuses and checks --------------------------------------------------------------------------
    def status(self, r: Repo, s: Status, *, simple: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": f"{self.api}/repos/{r.full_name}/statuses/{s.sha}",
            "avatar_url": f"{self.web}/avatars/{s.creator.login}",
            "id": s.id,
            "node_id": node_id("S", s.id),
            "state": s.state,
            "description": s.description,
            "target_url": s.target_url,
            "context": s.context,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
        }
        if not simple:
            data["creator"] = self.user(s.creator)
        return data

    def combined_status(self, r: Repo, sha: str, latest: list[Status]) -> dict[str, Any]:
        states = {s.state for s in latest}
        if not latest:
            state = "pending"
        elif states & {"failure", "error"}:
            state = "failure"
        elif "pending" in states:
            state = "pending"
        else:
            state = "success"
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "state": state,
            "statuses": [self.status(r, s, simple=True) for s in latest],
            "sha": sha,
            "total_count": len(latest),
            "repository": self.repo_minimal(r),
            "commit_url": f"{a}/commits/{sha}",
            "url": f"{a}/commits/{sha}/status",
        }

    def check_run(self, r: Repo, c: CheckRun, pulls: list[dict[str, Any]]) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "id": c.id,
            "head_sha": c.head_sha,
            "node_id": node_id("CR", c.id),
            "external_id": str(c.id),
            "url": f"{a}/check-runs/{c.id}",
            "html_url": f"{self.web}/{r.full_name}/runs/{c.id}",
            "details_url": f"{self.web}/{r.full_name}/actions/runs/{c.id}/job/{c.id}",
            "status": c.status,
            "conclusion": c.conclusion,
            "started_at": c.started_at,
            "completed_at": c.completed_at,
            "output": {
                "title": c.title,
                "summary": c.summary,
                "text": c.text,
                "annotations_count": 0,
                "annotations_url": f"{a}/check-runs/{c.id}/annotations",
            },
            "name": c.name,
            "check_suite": {"id": c.suite_id},
            "app": self.app(r.owner, r.created_at),
            "pull_requests": pulls,
        }

    def check_suite(self, r: Repo, s: CheckSuite, head: Any, runs: int, pulls: list[dict[str, Any]]) -> dict[str, Any]:
        a = f"{self.api}/repos/{r.full_name}"
        return {
            "id": s.id,
            "node_id": node_id("CS", s.id),
            "head_branch": s.head_branch,
            "head_sha": s.head_sha,
            "status": s.status,
            "conclusion": s.conclusion,
            "url": f"{a}/check-suites/{s.id}",
            "before": s.before,
            "after": s.head_sha,
            "pull_requests": pulls,
            "app": self.app(r.owner, r.created_at),
            "repository": self.repo_minimal(r),
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "head_commit": {
                "id": head.sha,
                "tree_id": head.tree,
                "message": head.message,
                "timestamp": head.committer_date,
                "author": {"name": head.author_name, "email": head.author_email},
                "committer": {"name": head.committer_name, "email": head.committer_email},
            },
            "latest_check_runs_count": runs,
            "check_runs_url": f"{a}/check-suites/{s.id}/check-runs",
            "rerequestable": False,
            "runs_rerequestable": False,
        }

    def pull_minimal(self, r: Repo, i: Issue) -> dict[str, Any]:
        assert i.pull is not None
        a = f"{self.api}/repos/{r.full_name}"
        repo = {"id": r.id, "url": a, "name": r.name}
        return {
            "id": i.pull.id,
            "number": i.number,
            "url": f"{a}/pulls/{i.number}",
            "head": {"ref": i.pull.head_ref, "sha": i.pull.head_sha, "repo": repo},
            "base": {"ref": i.pull.base_ref, "sha": i.pull.base_sha, "repo": repo},
        }
