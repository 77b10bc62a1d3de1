"""The texts sent to the code agent: the first instruction of a run and the repair instruction after red CI.

(Owned by the OpenHands area; the flow only calls these two functions.)
"""

from __future__ import annotations

from promptship.domain.request import DevRequest
from promptship.domain.results import CIResult


def agent_instruction(request: DevRequest, test_command: str | None) -> str:
    """The first instruction: code and tests and Kubernetes manifests, in the repository's conventions."""
    test = test_command or "the repository's test command"
    return (
        f"Repository {request.repository}, branch from {request.base_branch}.\n"
        f"Request: {request.prompt}\n\n"
        "Write the code, the tests for it, and the Kubernetes manifests it needs (under k8s/), following the "
        f"repository's existing conventions. Run the tests with `{test}` until they pass, then commit your "
        "changes on the current branch with a clear message, and finish."
    )


def repair_instruction(ci: CIResult, round_number: int) -> str:
    """The instruction of repair round ``round_number`` after a red CI: failing checks and log excerpts."""
    lines = [f"CI failed on commit {ci.sha[:12]} (repair round {round_number}). Failing checks:"]
    for check in ci.failing or ci.checks:
        lines.append(f"- {check.name}: {check.state}")
        if check.log_excerpt:
            lines.append("  log excerpt:\n" + "\n".join("    " + ln for ln in check.log_excerpt.splitlines()[-40:]))
    lines.append("Fix the cause, run the tests again until they pass, commit on the same branch, and finish.")
    return "\n".join(lines)
