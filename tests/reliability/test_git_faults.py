"""Defects the fault cases found in ``GitHubHost``'s git over HTTP, each shown against the local forge through
the fault proxy (``promptship_sandbox.reliability.faults.ForgeParts``: the forge, a proxy for its REST API and
one for its git smart-HTTP, the adapter on both).

1. A push whose connection broke mid-transfer (reset, an answer cut short, a stall) was a final error, so the
   step layer did not try it again, although docs/CONTRACTS.md says network failures of git are retryable.
2. git over HTTP has no timeout: a stalled forge held the step until the server dropped the connection. Now a
   transfer below 1 KiB/s for ``git_stall_s`` fails (retryable).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from promptship.errors import CodeHostError
from promptship_sandbox.faultproxy import FaultKind
from promptship_sandbox.reliability.faults import RECEIVE, REPO, ForgeParts

pytestmark = [pytest.mark.forge]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[ForgeParts]:
    with ExitStack() as stack:
        yield ForgeParts(stack, tmp_path)


def _workspace(parts: ForgeParts, name: str) -> tuple[Path, str]:
    ws, branch = parts.work / "ws" / name, f"promptship/{name}"
    parts.host.prepare_workspace(REPO, "main", branch, str(ws))
    (ws / "change.txt").write_text(f"{name}\n")
    return ws, branch


@pytest.mark.parametrize("kind", ["reset", "truncated"])
def test_a_push_broken_mid_transfer_is_retryable_and_the_retry_lands_once(parts: ForgeParts, kind: FaultKind) -> None:
    ws, branch = _workspace(parts, f"broken-{kind}")
    parts.git.inject(kind, match=RECEIVE)
    with pytest.raises(CodeHostError) as failed:
        parts.host.push_branch(REPO, str(ws), branch)
    assert failed.value.retryable, str(failed.value)
    assert parts.git.fired[kind] == 1
    sha = parts.host.push_branch(REPO, str(ws), branch)  # what the step layer's retry does
    assert parts.branch_head(branch) == sha


def test_a_stalled_push_fails_after_the_stall_limit_not_when_the_server_gives_up(parts: ForgeParts) -> None:
    parts.git.slow_s = 120.0  # the forge would hold the answer for two minutes
    ws, branch = _workspace(parts, "stalled")
    parts.git.inject("slow_body", match=RECEIVE)
    with pytest.raises(CodeHostError) as failed:
        parts.host.push_branch(REPO, str(ws), branch)
    # "too slow" is curl's low-speed abort (GIT_HTTP_LOW_SPEED_*): the client gave up on the stall, the forge's
    # answer was still held back; the server ending the connection reads "transfer closed" / "Empty reply"
    assert failed.value.retryable and "too slow" in str(failed.value), str(failed.value)
    assert parts.host.push_branch(REPO, str(ws), branch) == parts.branch_head(branch)
