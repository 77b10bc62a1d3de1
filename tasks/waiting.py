"""Waiting without holding a worker: before a long wait step (CI, a human merge, the base branch's image), look
for up to ``RunLimits.suspend_after_s``; if the condition is still not met, record what the run waits for and
suspend the flow run (Prefect's ``suspend_flow_run``: its process or pod exits). Suspended (Paused), it counts
against neither its work queue's nor its work pool's limit (``tasks/queues.py``); resumed, it is Scheduled again in
its repository's queue and starts when there is room.

Whatever resumes it (the webhook receiver on the matching event, ``promptship sweep`` on a condition met without
a webhook or on the wait's deadline) makes Prefect run the flow again from the start: every finished step comes
from the step cache, and this look runs again — met now, so the wait step itself runs and answers at once.

Suspending happens in the flow body between steps, never inside a task, and only once every earlier step has
returned: no task runs while the run suspends (Prefect #20388, tasks that go on executing after a suspend, cannot
happen here). A look is not a step: it records nothing and is not cached; the step after it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from promptship.domain.request import DevRequest
from promptship.domain.results import PullRequestInfo
from promptship.domain.waits import SUSPEND_MARGIN_S, RunWait, WaitKind, wait_deadline
from promptship.errors import CodeHostError
from promptship.faults import AFTER_RESUME, BEFORE_SUSPEND, kill_point
from promptship.store import Store
from tasks.context import RunContext


def _now() -> datetime:
    return datetime.now(UTC)


def _suspend(timeout_s: int, key: str) -> None:
    from prefect.flow_runs import suspend_flow_run

    suspend_flow_run(timeout=timeout_s, key=key)


def until_ready(
    ctx: RunContext,
    *,
    label: str,
    kind: WaitKind,
    timeout_s: float,
    look: Callable[[float], bool],
    sha: str | None = None,
    pr_number: int | None = None,
    suspend: Callable[[int, str], None] = _suspend,
) -> float | None:
    """Look (``look(seconds)`` waits up to that long and says whether the condition is met) before the wait
    step ``label``; suspend the flow run when the condition is not met within the grace. Returns the timeout the
    wait step should use: None for its own (no suspension possible, or the step already finished), else what is
    left of the wait's deadline (0 once it passed: the step looks once and reports its timeout)."""
    if ctx.limits.suspend_after_s <= 0 or not ctx.from_deployment() or not isinstance(ctx.ports.sink, Store):
        return None  # in-process runs (and `suspend_after_s = 0`) wait in the step, holding their process
    if any(s.step == label for s in ctx.ports.sink.attempt_steps(ctx.attempt.id)):
        return None  # finished before a suspension: the step cache answers
    waits = ctx.ports.sink.waits()
    earlier = waits.current(ctx.holder, label)
    if earlier is not None and earlier.suspensions:
        kill_point(AFTER_RESUME)
    wait = earlier or RunWait(
        flow_run_id=ctx.holder,
        request_key=ctx.request_key,
        attempt_id=ctx.attempt.id,
        label=label,
        kind=kind,
        repository=ctx.request.repository,
        sha=sha,
        pr_number=pr_number,
        deadline=wait_deadline(_now(), timeout_s),
    )
    remaining = wait.remaining_s(_now())
    if remaining <= 0:
        waits.clear(ctx.holder)
        return 0.0
    started = time.monotonic()
    try:
        met = look(min(ctx.limits.suspend_after_s, remaining))
    except CodeHostError as exc:
        if not exc.retryable:
            raise
        met = False  # the code host hiccupped: waiting (in the step or suspended) is still right
    if met:
        waits.clear(ctx.holder)
        return max(0.0, remaining - (time.monotonic() - started))
    suspended = waits.suspending(wait)
    timeout = suspended.suspend_timeout_s(_now())
    ctx.hold_lease_while_suspended(timeout + SUSPEND_MARGIN_S)
    kill_point(BEFORE_SUSPEND)
    suspend(timeout, suspended.pause_key())
    # Prefect refused the suspension as one that already fired (cannot happen with a fresh key): wait in the step
    return wait.remaining_s(_now())


def before_ci(ctx: RunContext, request: DevRequest, sha: str, round_number: int) -> float | None:
    """``until_ready`` for ``wait_for_ci#N``: CI of ``sha`` has a final verdict."""
    host = ctx.ports.code_host
    return until_ready(
        ctx,
        label=f"wait_for_ci#{round_number}",
        kind="ci",
        timeout_s=ctx.limits.ci_timeout_s,
        sha=sha,
        look=lambda s: host.wait_for_ci(request.repository, sha, timeout_s=s).verdict != "timed_out",
    )


def before_merge(ctx: RunContext, request: DevRequest, pr: PullRequestInfo) -> float | None:
    """``until_ready`` for ``merge`` when a person merges (``auto_merge`` off): the PR is merged or closed. An
    auto-merging run never suspends here: the merge is promptship's own, done in the step."""
    if request.auto_merge:
        return None
    host = ctx.ports.code_host
    return until_ready(
        ctx,
        label="merge",
        kind="merge",
        timeout_s=ctx.limits.merge_timeout_s,
        pr_number=pr.number,
        # auto_merge=False only looks: the step is the one place a merge can happen
        look=lambda s: host.merge(request.repository, pr.number, auto_merge=False, timeout_s=s).verdict != "waiting",
    )


def before_image(ctx: RunContext, request: DevRequest, merge_sha: str) -> float | None:
    """``until_ready`` for ``wait_for_image``: the base branch's build of ``merge_sha`` has a final verdict."""
    host = ctx.ports.code_host
    return until_ready(
        ctx,
        label="wait_for_image",
        kind="image",
        timeout_s=ctx.limits.ci_timeout_s,
        sha=merge_sha,
        look=lambda s: host.wait_for_ci(request.repository, merge_sha, timeout_s=s).verdict != "timed_out",
    )
