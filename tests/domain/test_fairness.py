"""Fair under load, the pure part: the work queue of each repository, and the queued/running/waiting census."""

from __future__ import annotations

import pytest

from promptship.domain.fairness import RunSeen, census_state, repository_of_queue, repository_queue_name, run_census


@pytest.mark.parametrize(
    ("repository", "name"),
    [
        ("demo/chat-app", "promptship-repo:demo:chat-app"),
        ("Demo/Chat.App", "promptship-repo:demo:chat.app"),
        ("a-b/c_d", "promptship-repo:a-b:c_d"),
    ],
)
def test_a_repository_queue_name_has_no_slash_and_maps_back(repository: str, name: str) -> None:
    assert repository_queue_name(repository) == name
    assert "/" not in name
    assert repository_of_queue(name) == repository.lower()


@pytest.mark.parametrize("other", ["default", "tag:promptship", "deployment:1234", "promptship-repo:x"])
def test_other_queues_belong_to_no_repository(other: str) -> None:
    assert repository_of_queue(other) is None


@pytest.mark.parametrize(
    ("state_type", "expected"),
    [
        ("SCHEDULED", "queued"),  # Scheduled, Late, AwaitingRetry, Resuming: no process yet
        ("PENDING", "running"),  # the worker claimed it: counts against the queue's and the pool's limit
        ("RUNNING", "running"),
        ("CANCELLING", "running"),
        ("PAUSED", "waiting"),  # suspended: no process, counts against no limit
        ("paused", "waiting"),
        ("COMPLETED", None),
        ("CRASHED", None),
        ("FAILED", None),
        ("CANCELLED", None),
    ],
)
def test_census_state(state_type: str, expected: str | None) -> None:
    assert census_state(state_type) == expected


def _runs(spec: dict[str, dict[str, int]]) -> list[RunSeen]:
    return [RunSeen(repository, t) for repository, types in spec.items() for t, n in types.items() for _ in range(n)]


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # A: 4 scheduled behind its queue's limit, 1 running, 2 suspended; B: 1 pending
        (
            {"team/a": {"SCHEDULED": 4, "RUNNING": 1, "PAUSED": 2}, "team/b": {"PENDING": 1}},
            {"team/a": (4, 1, 2), "team/b": (0, 1, 0)},
        ),
        # runs that ended count nothing; a repository with only ended runs is not reported
        ({"team/a": {"COMPLETED": 3, "RUNNING": 1}, "team/c": {"CRASHED": 1}}, {"team/a": (0, 1, 0)}),
        # repositories are case-folded like request keys
        ({"Team/A": {"RUNNING": 1}, "team/a": {"SCHEDULED": 1}}, {"team/a": (1, 1, 0)}),
        # nothing live: nothing reported
        ({}, {}),
    ],
)
def test_run_census(runs: dict[str, dict[str, int]], expected: dict[str, tuple[int, int, int]]) -> None:
    assert run_census(_runs(runs)) == {
        (repository, state): n
        for repository, counts in expected.items()
        for state, n in zip(("queued", "running", "waiting"), counts, strict=True)
    }
