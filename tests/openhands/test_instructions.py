"""The texts sent to the code agent (pure functions, tables)."""

from __future__ import annotations

import pytest

from promptship.domain.instructions import RepoConventions, agent_instruction, repair_instruction
from promptship.domain.request import DevRequest, branch_for
from promptship.domain.results import CheckOutcome, CIResult

REQUEST = DevRequest(prompt="Add a /version endpoint returning the build sha", repository="demo/chat-app")


@pytest.mark.parametrize(
    ("test_command", "conventions", "must_contain"),
    [
        ("make test", None, ["`make test`", "Kubernetes manifests", "Tests for the new behaviour", "k8s/"]),
        (None, RepoConventions(test_command="npm test", manifests_dir="deploy"), ["`npm test`", "`deploy/`"]),
        (None, None, ["the repository's test suite", "Kubernetes manifests"]),
        (
            "make test",
            RepoConventions(build_command="make build", test_dirs=("backend/tests",), languages=("python",)),
            ["`make build`", "`backend/tests/`", "uses python"],
        ),
    ],
)
def test_the_first_instruction_asks_for_code_tests_manifests_and_names_the_test_command(
    test_command: str | None, conventions: RepoConventions | None, must_contain: list[str]
) -> None:
    text = agent_instruction(REQUEST, test_command, conventions=conventions)
    assert REQUEST.prompt in text
    assert f"`{branch_for(REQUEST.run_key)}`" in text
    assert "commit" in text.lower()
    for needle in must_contain:
        assert needle in text


def test_the_repair_instruction_carries_failing_checks_and_the_end_of_their_logs() -> None:
    long_log = "\n".join(f"line {i}" for i in range(2000)) + "\nE   AssertionError: 404 != 200"
    ci = CIResult(
        verdict="failed",
        sha="0123456789abcdef" * 2 + "01234567",
        checks=(
            CheckOutcome(name="backend-tests", state="failure", log_excerpt=long_log, url="http://ci/1"),
            CheckOutcome(name="lint", state="success", log_excerpt="all good"),
        ),
    )
    text = repair_instruction(ci, 2, conventions=RepoConventions(test_command="make test"))
    assert "Repair round 2" in text and "0123456789ab" in text
    assert "backend-tests — failure" in text and "AssertionError: 404 != 200" in text
    assert "line 0\n" not in text  # only the tail of a long log
    assert "lint" not in text  # passing checks are not sent
    assert "`make test`" in text
