"""What the code agent is told: the first instruction of a run and the repair instruction after red CI.

Pure text building. What the repository's conventions are (its test command, where its manifests live) is
found out by the adapter side (``promptship.adapters.compile_check.inspect_repository``) and handed in.
(Owned by the OpenHands area; the flow only calls these functions.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from promptship.domain.request import DevRequest, branch_for
from promptship.domain.results import CIResult, Remark

# Log excerpts are the tail of a failing check: the end of a test log is where the failure is.
_EXCERPT_CHARS = 2_000
_REPAIR_TOTAL_CHARS = 8_000
# What a follow-up gives the agent of the comments around it (docs/GITHUB.md says these limits).
FOLLOW_UP_REMARKS = 20  # per part: review comments, PR discussion, issue comments (the newest)
REMARK_CHARS = 800  # per comment
FOLLOW_UP_CONTEXT_CHARS = 12_000  # all parts together


class RepoConventions(BaseModel):
    """How a repository is built, tested and deployed, as read from its checkout."""

    model_config = ConfigDict(frozen=True)

    test_command: str | None = Field(default=None, description="The repository's own test command, if declared.")
    build_command: str | None = Field(default=None, description="The repository's own build command, if any.")
    manifests_dir: str | None = Field(default=None, description="Directory holding its Kubernetes manifests.")
    languages: tuple[str, ...] = Field(default=(), description="Languages seen (python, javascript, …).")
    test_dirs: tuple[str, ...] = Field(default=(), description="Directories that hold its tests.")


def agent_instruction(
    request: DevRequest,
    test_command: str | None = None,
    *,
    branch: str | None = None,
    conventions: RepoConventions | None = None,
) -> str:
    """The first message of a run: the request, plus what a complete change contains in this repository:
    code AND tests AND Kubernetes manifests, the repository's test command, a commit on the work branch."""
    conventions = conventions or RepoConventions()
    if test_command:
        conventions = conventions.model_copy(update={"test_command": test_command})
    branch = branch or branch_for(request.run_key)
    test_cmd = conventions.test_command or "the repository's test suite"
    manifests = (
        f"in `{conventions.manifests_dir}/`, next to the existing ones and in their style"
        if conventions.manifests_dir
        else "in a `k8s/` directory at the repository root"
    )
    tests_where = (
        f" (tests live in {', '.join(f'`{d}/`' for d in conventions.test_dirs)})" if conventions.test_dirs else ""
    )
    langs = f" The repository uses {', '.join(conventions.languages)}." if conventions.languages else ""
    lines = [
        f"You are working in a git checkout of `{request.repository}` on the branch `{branch}` "
        f"(created from `{request.base_branch}`).{langs}",
        "",
        "## Request",
        request.prompt.strip(),
        "",
        "## A complete change has three parts",
        "1. The code, following the conventions of the files around it (layout, naming, style, dependencies).",
        f"2. Tests for the new behaviour, written like the existing tests{tests_where}.",
        f"3. Kubernetes manifests for anything that must run or be configured differently, {manifests} "
        "(Deployment, Service, ConfigMap as needed; keep image names, labels and probes consistent).",
        "",
        "## Before you finish",
        f"- Run the repository's test command `{test_cmd}` from the repository root and fix what fails."
        if conventions.test_command
        else f"- Run {test_cmd} and fix what fails.",
    ]
    if conventions.build_command:
        lines.append(f"- Run its build command `{conventions.build_command}`; it must succeed.")
    lines += [
        f"- Commit all your changes on the branch `{branch}` with a short, descriptive message "
        "(`git add -A && git commit -m ...`). Do not push, do not switch branches, do not rewrite history.",
        "- Never print, write or commit credentials; none are needed for this task.",
        "- Finish with a short summary of what you changed and the result of the test command.",
    ]
    return "\n".join(lines)


def repair_instruction(
    ci: CIResult,
    round_number: int = 1,
    *,
    branch: str | None = None,
    conventions: RepoConventions | None = None,
) -> str:
    """The instruction of repair round ``round_number``: which checks failed on which commit, with the end of
    their logs, and the test command to run before committing the fix."""
    conventions = conventions or RepoConventions()
    where = f"branch `{branch}`" if branch else "the current branch"
    failing = ci.failing or tuple(c for c in ci.checks if c.state != "success")
    lines = [
        f"Repair round {round_number}: CI failed on commit `{ci.sha[:12]}` of {where}. Fix the cause, not the "
        "tests' expectations, unless the tests are wrong for the requested behaviour.",
        "",
        "## Failing checks",
    ]
    if not failing:
        lines.append(f"- (no check detail was reported; CI verdict: {ci.verdict})")
    budget = _REPAIR_TOTAL_CHARS
    for check in failing:
        lines.append(f"### {check.name} — {check.state}" + (f" ({check.url})" if check.url else ""))
        excerpt = check.log_excerpt.strip()
        if excerpt and budget > 0:
            excerpt = excerpt[-min(_EXCERPT_CHARS, budget) :]
            budget -= len(excerpt)
            lines += ["```", excerpt, "```"]
    test_cmd = conventions.test_command or "the repository's test suite"
    lines += [
        "",
        "## Then",
        f"- Run `{test_cmd}` until it passes." if conventions.test_command else f"- Run {test_cmd} until it passes.",
        f"- Commit the fix on {where} (a new commit; do not amend, do not push).",
        "- Finish with a short summary of the cause and the fix.",
    ]
    return "\n".join(lines)


class FollowUpContext(BaseModel):
    """What people said around a follow-up, each text already redacted by the caller: the PR's conversation
    comments, its review comments (file and line) and the comments of the issue the request came from."""

    model_config = ConfigDict(frozen=True)

    discussion: tuple[Remark, ...] = ()
    review: tuple[Remark, ...] = ()
    issue_number: int | None = None
    issue: tuple[Remark, ...] = ()


def follow_up_instruction(instruction: str, context: FollowUpContext | None = None) -> str:
    """What the agent is told when a ``/promptship`` comment continues its work on the same branch: the
    comment's instruction, then what people said (oldest first within each part).

    Bounded (docs/GITHUB.md): the newest ``FOLLOW_UP_REMARKS`` of each part, each cut to ``REMARK_CHARS``, and
    ``FOLLOW_UP_CONTEXT_CHARS`` for all parts together — the review comments first, then the PR's discussion,
    then the issue; a part that no longer fits says how many of its comments were left out."""
    context = context or FollowUpContext()
    lines = [
        "A reviewer asked for more on the same pull request. Continue on the same branch and commit again.",
        "",
        f"Instruction: {instruction.strip()}",
    ]
    budget = FOLLOW_UP_CONTEXT_CHARS
    parts = (
        ("Review comments on the pull request's diff (oldest first):", context.review),
        ("What was said on the pull request (oldest first):", context.discussion),
        (f"Comments on the issue #{context.issue_number} the request came from (oldest first):", context.issue),
    )
    for title, remarks in parts:
        if not remarks:
            continue
        newest = remarks[-FOLLOW_UP_REMARKS:]
        kept: list[str] = []
        for remark in reversed(newest):  # the newest are kept when the budget runs out
            item = _remark_line(remark)
            if len(item) > budget:
                break
            kept.append(item)
            budget -= len(item)
        if not kept:
            continue
        lines += ["", title, *reversed(kept)]
        if left_out := len(remarks) - len(kept):
            lines.append(f"- ({left_out} older comment{'s' if left_out != 1 else ''} left out)")
    return "\n".join(lines) + "\n"


def _remark_line(remark: Remark) -> str:
    text = " ".join(remark.body.split())[:REMARK_CHARS]
    where = ""
    if remark.path:
        where = f"`{remark.path}`" + (f" line {remark.line}" if remark.line is not None else " (whole file)") + ", "
    return f"- {where}{remark.author or 'someone'}: {text}"
