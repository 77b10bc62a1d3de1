"""Plumbing over real bare repositories: refs, merges with ``git merge-tree``, seeding from a directory.

Everything runs the ``git`` executable against a bare repository; nothing here talks HTTP.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORGE_IDENTITY = {
    "GIT_AUTHOR_NAME": "promptship forge",
    "GIT_AUTHOR_EMAIL": "forge@forge.local",
    "GIT_COMMITTER_NAME": "promptship forge",
    "GIT_COMMITTER_EMAIL": "forge@forge.local",
}


class GitFailed(Exception):
    """A git command inside the forge failed (a forge bug or a broken repository, never a user outcome)."""


def git(git_dir: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``git --git-dir=git_dir args`` and return stdout; raise GitFailed on a non-zero exit."""
    proc = _run(git_dir, args, input=input, env=env)
    if proc.returncode != 0:
        raise GitFailed(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def _run(
    git_dir: Path, args: tuple[str, ...], *, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **FORGE_IDENTITY, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    full_env.pop("GIT_DIR", None)
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True, env=full_env, check=False
    )


def init_bare(git_dir: Path, default_branch: str) -> None:
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", "--bare", f"--initial-branch={default_branch}", str(git_dir)],
        check=True,
        capture_output=True,
    )
    git(git_dir, "config", "http.receivepack", "true")
    git(git_dir, "config", "uploadpack.allowAnySHA1InWant", "true")


def commit_directory(
    git_dir: Path,
    source_dir: Path,
    branch: str,
    message: str,
    *,
    start_from: str | None = None,
    date: str | None = None,
) -> str:
    """Commit the contents of ``source_dir`` (honouring its .gitignore) as the tip of ``branch`` — on top of
    its current tip, or of ``start_from`` when the branch does not exist yet. ``date`` (git's ``@epoch +0000``
    form): the author and committer date, so that the same files committed into several repositories at one
    date are one commit, with one SHA, in each of them."""
    with tempfile.TemporaryDirectory(prefix="forge-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(source_dir)}
        git(git_dir, "add", "-A", ".", env=env)
        tree = git(git_dir, "write-tree", env=env).strip()
    parent = rev_parse(git_dir, f"refs/heads/{branch}") or start_from
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    dated = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
    sha = git(git_dir, *args, env=dated).strip()
    git(git_dir, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def rev_parse(git_dir: Path, ref: str) -> str | None:
    proc = _run(git_dir, ("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"))
    return proc.stdout.decode().strip() or None if proc.returncode == 0 else None


def refs(git_dir: Path) -> dict[str, str]:
    """refs/heads/* → sha."""
    out = git(git_dir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    return {name: sha for name, sha in pairs}


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str
    message: str


def commit_info(git_dir: Path, sha: str) -> CommitInfo:
    fmt = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
    parts = git(git_dir, "show", "-s", f"--format={fmt}", sha).split("\x00")
    return CommitInfo(
        sha=parts[0],
        tree=parts[1],
        parents=tuple(parts[2].split()),
        author_name=parts[3],
        author_email=parts[4],
        author_date=parts[5],
        committer_name=parts[6],
        committer_email=parts[7],
        committer_date=parts[8],
        message=parts[9].rstrip("\n"),
    )


@dataclass(frozen=True)
class MergeCheck:
    clean: bool
    tree: str | None
    conflicts: tuple[str, ...] = ()


def merge_check(git_dir: Path, base_sha: str, head_sha: str) -> MergeCheck:
    """A real three-way merge of ``head_sha`` into ``base_sha`` without touching any ref."""
    proc = _run(git_dir, ("merge-tree", "--write-tree", "--name-only", "--no-messages", base_sha, head_sha))
    lines = proc.stdout.decode(errors="replace").splitlines()
    if proc.returncode == 0:
        return MergeCheck(clean=True, tree=lines[0].strip())
    if proc.returncode == 1:
        return MergeCheck(clean=False, tree=None, conflicts=tuple(x for x in lines[1:] if x.strip()))
    raise GitFailed(f"git merge-tree: {proc.stderr.decode(errors='replace').strip()}")


def squash_commit(git_dir: Path, tree: str, parent: str, message: str) -> str:
    return git(git_dir, "commit-tree", tree, "-p", parent, "-m", message).strip()


def update_ref(git_dir: Path, ref: str, new: str, old: str) -> bool:
    """Move ``ref`` from ``old`` to ``new`` atomically; False if it moved meanwhile."""
    return _run(git_dir, ("update-ref", ref, new, old)).returncode == 0


def diff_stats(git_dir: Path, base_sha: str, head_sha: str) -> tuple[int, int, int, int]:
    """(commits, additions, deletions, changed_files) of head relative to the merge base with base."""
    commits = int(git(git_dir, "rev-list", "--count", f"{base_sha}..{head_sha}").strip() or 0)
    additions = deletions = files = 0
    for line in git(git_dir, "diff", "--numstat", f"{base_sha}...{head_sha}").splitlines():
        a, d, _ = line.split("\t", 2)
        files += 1
        additions += int(a) if a.isdigit() else 0
        deletions += int(d) if d.isdigit() else 0
    return commits, additions, deletions, files


def diff_hunk(git_dir: Path, base_sha: str, head_sha: str, path: str, line: int | None) -> str | None:
    """The hunk of ``path``'s diff (head against the merge base with base) holding new-side ``line`` — the
    whole file's diff when ``line`` is None; None when the diff does not hold it (GitHub's 422)."""
    out = git(git_dir, "diff", "--no-color", f"{base_sha}...{head_sha}", "--", path)
    hunks: list[list[str]] = []
    for text in out.splitlines():
        if text.startswith("@@"):
            hunks.append([text])
        elif hunks:
            hunks[-1].append(text)
    if not hunks:
        return None
    if line is None:
        return "\n".join(h for hunk in hunks for h in hunk)
    for hunk in hunks:
        match = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", hunk[0])
        if match:
            start, count = int(match.group(1)), int(match.group(2) or 1)
            if start <= line < start + count:
                return "\n".join(hunk)
    return None


def export_tree(git_dir: Path, sha: str, dest: Path) -> None:
    """Write the files of commit ``sha`` into ``dest`` (no .git)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", sha], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise GitFailed(f"git archive {sha}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, capture_output=True)


def top_level_dirs_with(git_dir: Path, sha: str, filename: str) -> list[str]:
    """Top-level directories of commit ``sha`` that hold ``filename`` (build contexts)."""
    out = git(git_dir, "ls-tree", "-r", "--name-only", sha)
    names = []
    for line in out.splitlines():
        parts = line.strip().split("/")
        if len(parts) == 2 and parts[1] == filename:
            names.append(parts[0])
    return sorted(names)
