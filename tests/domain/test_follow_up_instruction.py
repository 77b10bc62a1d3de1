"""What a follow-up tells the agent: the instruction, the review comments (file and line), the PR's discussion and
the issue's comments — bounded in count and characters; and the issue a PR's body references."""

from __future__ import annotations

import pytest

from promptship.domain.instructions import (
    FOLLOW_UP_CONTEXT_CHARS,
    FOLLOW_UP_REMARKS,
    REMARK_CHARS,
    FollowUpContext,
    follow_up_instruction,
)
from promptship.domain.results import Remark
from promptship.domain.writeback import issue_in, issue_reference


def test_each_part_is_there_with_its_author_file_and_line() -> None:
    context = FollowUpContext(
        review=(Remark(author="ana", body="off by one here", path="app/chat.py", line=12),),
        discussion=(Remark(author="bo", body="keep /status working"),),
        issue_number=4,
        issue=(Remark(author="cy", body="it must also answer in French"),),
    )

    text = follow_up_instruction("  add /ready  ", context)

    assert "Instruction: add /ready\n" in text
    assert "- `app/chat.py` line 12, ana: off by one here" in text
    assert "- bo: keep /status working" in text
    assert "issue #4 the request came from" in text and "- cy: it must also answer in French" in text


def test_a_comment_on_a_whole_file_says_so() -> None:
    context = FollowUpContext(review=(Remark(author="ana", body="split this file", path="big.py"),))
    assert "- `big.py` (whole file), ana: split this file" in follow_up_instruction("x", context)


def test_without_context_only_the_instruction_is_given() -> None:
    assert follow_up_instruction("add /ready") == (
        "A reviewer asked for more on the same pull request. Continue on the same branch and commit again.\n\n"
        "Instruction: add /ready\n"
    )


def test_the_newest_comments_of_each_part_are_kept_and_the_rest_counted() -> None:
    many = tuple(Remark(author="p", body=f"comment number {n:03d}") for n in range(FOLLOW_UP_REMARKS + 5))

    text = follow_up_instruction("x", FollowUpContext(discussion=many))

    assert "comment number 004" not in text and "comment number 005" in text
    assert f"comment number {FOLLOW_UP_REMARKS + 4:03d}" in text
    assert "(5 older comments left out)" in text
    assert text.index("comment number 005") < text.index("comment number 006")  # oldest first


def test_a_long_comment_is_cut_and_the_whole_context_is_bounded() -> None:
    long = "y" * (REMARK_CHARS * 3)
    parts = {
        name: tuple(
            Remark(author="p", body=f"{name}{n} {long}", path="f.py" if name == "r" else None) for n in range(20)
        )
        for name in ("r", "d", "i")
    }
    context = FollowUpContext(review=parts["r"], discussion=parts["d"], issue_number=2, issue=parts["i"])

    text = follow_up_instruction("x", context)

    assert "y" * (REMARK_CHARS + 1) not in text
    assert len(text) <= FOLLOW_UP_CONTEXT_CHARS + 1_000  # the instruction, titles and "left out" notes
    assert "r19 " in text  # the newest review comment fits first
    assert "left out" in text


@pytest.mark.parametrize(
    ("number", "closes"),
    [(7, False), (7, True), (123, False)],
)
def test_the_issue_a_pr_body_references_is_read_back(number: int, closes: bool) -> None:
    reference = issue_reference(number, closes=closes)
    body = f"The model says: Fixes #999 in passing.\n\n{reference}\n\n---\nOpened by promptship."
    assert issue_in(body) == number


@pytest.mark.parametrize("body", [None, "", "Follows up #3 (request `abc`).", "see #5", "Fixes #x"])
def test_a_body_without_a_reference_names_no_issue(body: str | None) -> None:
    assert issue_in(body) is None
