"""The request's one status comment on its GitHub issue, edited in place as the attempt goes on.

Not a step (it records nothing and changes nothing the pipeline depends on): a notification rendered from the
store — every attempt of the request, a section each — and written where the request came from. A failure to
comment never fails the run.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from promptship.domain.writeback import render_status, status_marker
from promptship.errors import PromptshipError
from tasks.context import RunContext


@task(name="status", cache_policy=NO_CACHE, retries=0)
def publish_status(ctx: RunContext, note: str = "") -> bool:
    """Edit (or create) the status comment of the request on its issue; False when there is nowhere to write."""
    request = ctx.request
    if request.issue_number is None:
        return False
    sink = ctx.ports.sink
    sections = [(a, sink.attempt_steps(a.id)) for a in sink.attempts(ctx.request_key)]
    body = render_status(ctx.request_key, sections, note=note)
    try:
        ctx.ports.code_host.upsert_comment(
            request.repository, request.issue_number, status_marker(ctx.request_key), body
        )
    except PromptshipError as exc:  # the comment is a courtesy: the run goes on without it
        get_run_logger().warning("status comment on #%s not written: %s", request.issue_number, exc)
        return False
    return True
