"""What the code agent is told: the first instruction of a run and the repair instruction after red CI (with
the LLM call that summarizes the failing log for it, ``ci_summary_call``).

Pure text building. What the repository's conventions are (its test command, where its manifests live) is
found out by the adapter side (``promptship.adapters.compile_check.inspect_repository``) and handed in.
(Owned by the OpenHands area; the flow only calls these functions.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from promptship.domain.request import DevRequest, branch_for
from promptship.domain.results import CIResult, LLMCall, LLMMessage, Remark

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
    summary: CILogSummary | None = None,
) -> str:
    """The instruction of repair round ``round_number``: which checks failed on which commit, with the end of
    their logs, and the test command to run before committing the fix. A ``summary`` of the logs (a small local
    model's, ``ci_summary_call``) comes first, marked as a hint: the log tails stay, they are the evidence."""
    conventions = conventions or RepoConventions()
    where = f"branch `{branch}`" if branch else "the current branch"
    failing = ci.failing or tuple(c for c in ci.checks if c.state != "success")
    lines = [
        f"Repair round {round_number}: CI failed on commit `{ci.sha[:12]}` of {where}. Fix the cause, not the "
        "tests' expectations, unless the tests are wrong for the requested behaviour.",
        "",
    ]
    if summary is not None:
        lines += [
            "## Summary of the failure (a hint)",
            f"Written by a small local model ({summary.model}) from the logs below; it may be incomplete or "
            'wrong. The log tails under "Failing checks" are the evidence: check the summary against them.',
            "",
            summary.text,
            "",
        ]
    lines.append("## Failing checks")
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


# --- the summary of a red CI log, for the repair instruction --------------------------------------------

CI_SUMMARY_CALLER = "summarize_ci_log"
"""The caller (ledger step, policy ``callers`` key) of the summary call."""
# What the summarizer reads: the end of the failing logs, small enough for a 2048-token context with its answer.
_SUMMARY_INPUT_CHARS = 2_000
_SUMMARY_MAX_TOKENS = 80
_SUMMARY_MAX_CHARS = 800
# The summary is optional: it never holds a repair round longer than this (retries and fallbacks included).
# Measured on 1 llama.cpp thread, 2 shared cores: 13–18 s for ~380 prompt tokens at load average ~10, 34–63 s
# for the first such prompt at load ~16 (the agent's own repair round takes minutes).
_SUMMARY_DEADLINE_S = 90.0


class CILogSummary(BaseModel):
    """A short summary of the failing checks' logs and the model group that wrote it."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str


def ci_summary_call(run_key: str, ci: CIResult) -> LLMCall | None:
    """The LLM call that summarizes the failing checks' logs for the repair instruction, or None when no failing
    check has a log. Always local (``force_local``): a CI log can hold whatever the code printed. It reads the
    end of each failing log (the failure and the test runner's summary are there), bounded in all."""
    failing = ci.failing or tuple(c for c in ci.checks if c.state != "success")
    logged = [c for c in failing if c.log_excerpt.strip()]
    if not logged:
        return None
    share = _SUMMARY_INPUT_CHARS // len(logged)
    parts = [f"Check `{c.name}` ({c.state}), end of its log:\n{c.log_excerpt.strip()[-share:]}" for c in logged]
    return LLMCall(
        run_key=run_key,
        step=CI_SUMMARY_CALLER,
        force_local=True,
        messages=(
            LLMMessage(role="system", content="You summarize failing CI logs for the developer who must fix them."),
            LLMMessage(
                role="user",
                content="\n\n".join(parts) + "\n\nIn one or two sentences: which tests or commands failed, and what "
                "error does the log show for each? Quote test names exactly; do not guess what the log does not say.",
            ),
        ),
        max_tokens=_SUMMARY_MAX_TOKENS,
        deadline_s=_SUMMARY_DEADLINE_S,
    )


def ci_log_summary(content: str, model: str) -> CILogSummary | None:
    """The model's answer as a summary for the repair instruction (whitespace tidied, bounded), or None when
    it said nothing."""
    text = "\n".join(line.rstrip() for line in content.strip().splitlines() if line.strip())
    if not text:
        return None
    if len(text) > _SUMMARY_MAX_CHARS:
        text = text[: _SUMMARY_MAX_CHARS - 1].rstrip() + "…"
    return CILogSummary(text=text, model=model)
