"""``PROMPTSHIP_BENCH_FLOW_ONLY`` picks the parts of ``python -m promptship.bench flow``; a wrong name is refused."""

from __future__ import annotations

import pytest

from promptship.bench.flow import PARTS, _parts


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        (None, set(PARTS)),
        ("", set(PARTS)),
        ("burst", {"burst"}),
        (" burst , suspend ", {"burst", "suspend"}),
    ],
)
def test_parts(value: str | None, parts: set[str]) -> None:
    assert _parts(value) == parts


def test_an_unknown_part_names_the_setting_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"PROMPTSHIP_BENCH_FLOW_ONLY: unknown part\(s\) \['bursts'\].*burst"):
        _parts("bursts")
