"""The soak's verdict for one request (``reliability.soak.judge``): no servers, a table of cases."""

from __future__ import annotations

import pytest

from promptship_sandbox.reliability.soak import ONCE, RequestCounts, judge

ALL_ONCE = dict.fromkeys(ONCE, 1) | {"charges": 3, "completions": 3}


def counted(state: str = "COMPLETED", outcome: str | None = "deployed", ended: bool = True, **counts: int):
    return RequestCounts("soak-seq-00", ended=ended, state=state, outcome=outcome, counts=ALL_ONCE | counts)


@pytest.mark.parametrize(
    ("request_counts", "verdict", "why"),
    [
        (counted(), "ok", ""),
        (counted(**{"flow runs": 2}), "duplicate", "flow runs 2"),
        (counted(prs=2), "duplicate", "prs 2"),
        (counted(merges=2), "duplicate", "merges 2"),
        (counted(conversations=2), "duplicate", "conversations 2"),
        (counted(rollouts=2), "duplicate", "rollouts 2"),
        (counted(charges=4), "duplicate", "charges 4 vs completions 3"),  # a charge without its completion
        (counted(completions=4), "duplicate", "charges 3 vs completions 4"),  # a completion never charged
        (counted(state="NONE", outcome=None, ended=False, **dict.fromkeys(ONCE, 0)), "lost", "no flow run"),
        (counted(state="RUNNING", outcome=None, ended=False), "stuck", "flow run RUNNING"),
        (counted(state="FAILED", outcome="failed"), "lost", "flow run FAILED, outcome failed"),
        (counted(merges=0), "lost", "merges 0"),
        # a duplicate is reported even when the run also ended badly: it is the worse finding
        (counted(state="FAILED", outcome="failed", prs=2), "duplicate", "prs 2"),
    ],
)
def test_judge(request_counts: RequestCounts, verdict: str, why: str) -> None:
    found, reasons = judge(request_counts)
    assert found == verdict
    assert why in "; ".join(reasons)
