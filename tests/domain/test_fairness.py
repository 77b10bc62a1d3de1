"""Fair under load, the pure part: which limits a run takes a slot of, and the queued/running/waiting census."""

from __future__ import annotations

import pytest

from promptship.domain.fairness import (
    GLOBAL_LIMIT_NAME,
    RunSeen,
    SlotLimit,
    repository_limit_name,
    repository_of_limit,
    run_census,
    slots_for,
)
from promptship.domain.limits import RunLimits


@pytest.mark.parametrize(
    ("repository", "name"),
    [
        ("demo/chat-app", "promptship-repo:demo:chat-app"),
        ("Demo/Chat.App", "promptship-repo:demo:chat.app"),
        ("a-b/c_d", "promptship-repo:a-b:c_d"),
    ],
)
def test_a_repository_limit_name_has_no_slash_and_maps_back(repository: str, name: str) -> None:
    assert repository_limit_name(repository) == name
    assert "/" not in name
    assert repository_of_limit(name) == repository.lower()


@pytest.mark.parametrize("other", [GLOBAL_LIMIT_NAME, "tag:promptship", "deployment:1234", "promptship-repo:x"])
def test_other_limits_belong_to_no_repository(other: str) -> None:
    assert repository_of_limit(other) is None


@pytest.mark.parametrize(
    ("per_repository", "global_", "expected"),
    [
        (0, 0, ()),
        (1, 0, (SlotLimit("promptship-repo:team:app", 1),)),
        (0, 5, (SlotLimit(GLOBAL_LIMIT_NAME, 5),)),
        (2, 5, (SlotLimit("promptship-repo:team:app", 2), SlotLimit(GLOBAL_LIMIT_NAME, 5))),
    ],
)
def test_slots_for_takes_one_of_each_configured_limit(
    per_repository: int, global_: int, expected: tuple[SlotLimit, ...]
) -> None:
    limits = RunLimits(workspace_root="/tmp/w", per_repository_limit=per_repository, global_limit=global_)
    assert slots_for(limits, "team/app") == expected


def _runs(spec: dict[str, tuple[int, int]]) -> list[RunSeen]:
    """``{repo: (live, suspended)}`` as runs."""
    out: list[RunSeen] = []
    for repository, (live, suspended) in spec.items():
        out += [RunSeen(repository, suspended=False)] * live + [RunSeen(repository, suspended=True)] * suspended
    return out


@pytest.mark.parametrize(
    ("runs", "working", "expected"),
    [
        # A: 5 live of which 1 holds its slot, 2 suspended; B: 1 live holding its slot
        (
            {"team/a": (5, 2), "team/b": (1, 0)},
            {"team/a": 1, "team/b": 1},
            {"team/a": (4, 1, 2), "team/b": (0, 1, 0)},
        ),
        # no limit for the repository: nothing tells started from queued, so live runs are running
        ({"team/a": (3, 1), "team/b": (2, 0)}, {"team/b": 1}, {"team/a": (0, 3, 1), "team/b": (1, 1, 0)}),
        # a slot still leased by a run that already ended (crashed, lease not yet expired) counts no run
        ({"team/a": (0, 1)}, {"team/a": 1}, {"team/a": (0, 0, 1)}),
        # a run gave its slot back a moment before its suspension shows: queued for that moment, never negative
        ({"team/a": (1, 0)}, {"team/a": 0}, {"team/a": (1, 0, 0)}),
        # repositories are case-folded like request keys
        ({"Team/A": (1, 0), "team/a": (1, 0)}, {"TEAM/a": 2}, {"team/a": (0, 2, 0)}),
        # nothing live: no repository is reported, whatever its limit
        ({}, {"team/a": 0}, {}),
    ],
)
def test_run_census(
    runs: dict[str, tuple[int, int]], working: dict[str, int], expected: dict[str, tuple[int, int, int]]
) -> None:
    census = run_census(_runs(runs), working)
    assert census == {
        (repository, state): n
        for repository, counts in expected.items()
        for state, n in zip(("queued", "running", "waiting"), counts, strict=True)
    }
