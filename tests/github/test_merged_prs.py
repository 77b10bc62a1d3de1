"""The KPIs' human baseline: merged PRs read from the forge, told apart by promptship's run-key marker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from promptship.adapters.github import GitHubHost
from promptship.domain.request import branch_for
from promptship_sandbox.forge import Forge
from tests.github.conftest import REPO, client

pytestmark = pytest.mark.forge


def _push_change(host: GitHubHost, workspace: Path, branch: str, name: str) -> str:
    host.prepare_workspace(REPO, "main", branch, str(workspace))
    (workspace / name).write_text(f"{name}\n")
    import git

    repo = git.Repo(workspace)
    repo.git.add(A=True)
    repo.index.commit(f"add {name}")
    return host.push_branch(REPO, str(workspace), branch)


def test_merged_prs_are_split_into_promptship_and_human(forge: Forge, host: GitHubHost, tmp_path: Path):
    since = datetime.now(UTC) - timedelta(minutes=5)
    key = "0123456789abcdef"
    _push_change(host, tmp_path / "w1", branch_for(key), "agent.txt")
    ours = host.find_or_create_pull_request(
        REPO, run_key=key, branch=branch_for(key), base_branch="main", title="agent change", body="by the agent"
    )
    _push_change(host, tmp_path / "w2", "human-change", "human.txt")
    gh_repo = client(forge).get_repo(REPO)
    theirs = gh_repo.create_pull(title="human change", body="written by a person", head="human-change", base="main")
    open_one = _push_change(host, tmp_path / "w3", "still-open", "open.txt")
    assert open_one
    gh_repo.create_pull(title="not merged", body="", head="still-open", base="main")
    assert forge.wait_idle(120)
    for number in (ours.number, theirs.number):
        gh_repo.get_pull(number).merge(merge_method="squash")

    merged = {p.number: p for p in host.merged_pull_requests(REPO, since)}
    assert set(merged) == {ours.number, theirs.number}
    assert merged[ours.number].by_promptship is True
    assert merged[theirs.number].by_promptship is False
    assert all(p.merged_at >= p.created_at >= since for p in merged.values())
    assert host.merged_pull_requests(REPO, datetime.now(UTC) + timedelta(minutes=1)) == []
