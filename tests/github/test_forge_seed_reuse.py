"""Several repositories seeded from one directory (the demo's five scenario repositories): one commit, the same
SHA in each. With ``reuse_builds`` the same files pass once: the forge tests the seed once and every
repository's CI is green and publishes its own images from that test, its job log saying whose result it took;
a later commit with a tree that passed (a merge of a tested PR) is not tested again; a red result is never
copied."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from promptship_sandbox.forge import running_forge

pytestmark = pytest.mark.forge

REPOS = ["demo/app", "demo/app-two", "demo/app-three"]


def _source(tmp_path: Path, *, broken: bool = False) -> tuple[Path, Path]:
    """A repository directory whose `make test` appends a line to a file outside it (how many times it ran)."""
    source, tested = tmp_path / "source", tmp_path / "tested.txt"
    (source / "backend").mkdir(parents=True)
    (source / "backend" / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python", "-m", "app"]\n')
    fail = "\t@exit 1\n" if broken else ""
    (source / "Makefile").write_text(f"test:\n\t@echo tested >> {tested}\n\t@echo '1 passed'\n{fail}")
    return source, tested


def _job_log(forge_api: str, token: str, repo: str, run_id: int) -> str:
    answer = httpx.get(
        f"{forge_api}/repos/{repo}/actions/jobs/{run_id}/logs",
        headers={"Authorization": f"token {token}"},
        follow_redirects=True,
        timeout=30,
    )
    answer.raise_for_status()
    return answer.text


def test_one_seed_commit_is_tested_once_and_each_repository_publishes_its_images(tmp_path: Path) -> None:
    source, tested = _source(tmp_path)
    with running_forge(tmp_path / "forge", ci_workers=3, reuse_builds=True) as forge:
        sha = forge.seed_repositories(REPOS, source)
        assert forge.wait_idle(120)
        assert tested.read_text().splitlines() == ["tested"]  # make test ran once for the three repositories
        builds = {b.repository: b for b in forge.ci_runs}
        assert sorted(builds) == sorted(REPOS)
        for repo in REPOS:
            owner, name = repo.split("/")
            build = builds[repo]
            assert (build.sha, build.conclusion) == (sha, "success")
            assert build.images == (f"forge.local/{repo}/backend:{sha}",)
            record = json.loads(forge.image_record(owner, name, "backend", sha).read_text())
            assert record["repository"] == repo and Path(record["git_dir"]).name == f"{name}.git"
            status = httpx.get(
                f"{forge.api_url}/repos/{repo}/commits/{sha}/status",
                headers={"Authorization": f"token {forge.token}"},
                timeout=30,
            ).json()
            assert status["state"] == "success"
        reused = [b for b in forge.ci_runs if b.reused_from]
        [first] = [b for b in forge.ci_runs if not b.reused_from]
        assert len(reused) == 2 and {b.reused_from.split("#")[0] for b in reused if b.reused_from} == {first.repository}
        # what a person (or wait_for_ci's failure excerpt) reads: the reused build's check run and its job log
        repo = reused[0].repository
        checks = httpx.get(
            f"{forge.api_url}/repos/{repo}/commits/{sha}/check-runs",
            headers={"Authorization": f"token {forge.token}"},
            timeout=30,
        ).json()
        [check] = checks["check_runs"]
        assert check["conclusion"] == "success"
        log = _job_log(forge.api_url, forge.token, repo, check["id"])
        assert f"passed in CI run {reused[0].reused_from.split('#')[1]} of {first.repository}" in log  # type: ignore[union-attr]
        assert "make test did not run again" in log and "1 passed" in log


def test_a_commit_with_files_that_passed_is_not_tested_again_and_changed_files_are(tmp_path: Path) -> None:
    source, tested = _source(tmp_path)
    with running_forge(tmp_path / "forge", reuse_builds=True) as forge:
        forge.seed_repository("demo", "app", source)
        assert forge.wait_idle(120)
        change = {"backend/app.py": "print('v2')\n"}
        branch_sha = forge.commit_files("demo", "app", "feature", change, "v2")
        assert forge.wait_idle(120)
        main_sha = forge.commit_files("demo", "app", "main", change, "v2 on main")  # the files the PR tested
        assert forge.wait_idle(120)
        assert len(tested.read_text().splitlines()) == 2  # the seed and the change; main's build reused the change
        builds = {b.sha: b for b in forge.ci_runs}
        assert builds[branch_sha].reused_from is None and builds[branch_sha].conclusion == "success"
        assert builds[main_sha].conclusion == "success" and builds[main_sha].images == (
            f"forge.local/demo/app/backend:{main_sha}",
        )
        assert branch_sha == main_sha or builds[main_sha].reused_from is not None
        forge.commit_files("demo", "app", "main", {"backend/app.py": "print('v3')\n"}, "v3")
        assert forge.wait_idle(120)
        assert len(tested.read_text().splitlines()) == 3  # new files: tested


def test_a_red_result_is_never_reused_each_repository_tests_the_files_itself(tmp_path: Path) -> None:
    source, tested = _source(tmp_path, broken=True)
    with running_forge(tmp_path / "forge", ci_workers=2, reuse_builds=True) as forge:
        forge.seed_repositories(REPOS[:2], source)
        assert forge.wait_idle(120)
        assert len(tested.read_text().splitlines()) == 2
        assert [(b.conclusion, b.images, b.reused_from) for b in forge.ci_runs] == [("failure", (), None)] * 2


def test_without_reuse_each_repository_tests_the_commit_itself(tmp_path: Path) -> None:
    source, tested = _source(tmp_path)
    with running_forge(tmp_path / "forge", ci_workers=2) as forge:
        sha = forge.seed_repositories(REPOS, source)
        assert forge.wait_idle(120)
        assert len(tested.read_text().splitlines()) == 3
        assert {(b.sha, b.conclusion, b.reused_from) for b in forge.ci_runs} == {(sha, "success", None)}


@pytest.mark.parametrize("names", [["demo/ok", "no-owner"], ["demo/ok", "demo/ok"], ["demo/ok", "demo/taken"], []])
def test_bad_names_create_no_repository(tmp_path: Path, names: list[str]) -> None:
    source, _ = _source(tmp_path)
    with running_forge(tmp_path / "forge", run_ci=False) as forge:
        forge.seed_repository("demo", "taken", source)
        with pytest.raises(ValueError, match="owner/name|exists already|named twice"):
            forge.seed_repositories(names, source)
        assert not forge.has_repository("demo", "ok")
