"""The request's one status comment on its GitHub issue, edited in place as the attempt goes on.

Not a step (it records nothing and changes nothing the pipeline depends on): a notification rendered from the
store — every attempt of the request, a section each — and written where the request came from. A failure to
comment never fails the run.
"""

from __future__ import annotations

import logging

from prefect import task
from prefect.cache_policies import NO_CACHE

from promptship.domain.request import DevRequest
from promptship.domain.writeback import render_status, status_marker, status_target
from promptship.errors import PromptshipError
from promptship.wiring import Ports
from tasks.context import RunContext


def _write_status(ports: Ports, request: DevRequest, request_key: str, note: str = "") -> bool:
    """Render the status comment from the store and write it where the request came from (False: nowhere to
    write, or the code host refused — the comment is a courtesy, the run goes on without it)."""
    number = status_target(request)
    if number is None:
        return False
    sink = ports.sink
    sections = [(a, sink.attempt_steps(a.id)) for a in sink.attempts(request_key)]
    body = render_status(request_key, sections, note=note)
    try:
        ports.code_host.upsert_comment(request.repository, number, status_marker(request_key), body)
    except PromptshipError as exc:
        logging.getLogger("promptship.status").warning("status comment on #%s not written: %s", number, exc)
        return False
    return True


@task(name="status", cache_policy=NO_CACHE, retries=0)
def publish_status(ctx: RunContext, note: str = "") -> bool:
    """Edit (or create) the status comment of the request on its issue (or the PR a follow-up came from);
    False when there is nowhere to write."""
    return _write_status(ctx.ports, ctx.request, ctx.request_key, note)


def note_queued(ports: Ports, request: DevRequest, request_key: str, message: str) -> None:
    """Say in the request's status comment that a follow-up waits behind its active attempt."""
    _write_status(ports, request, request_key, note=f"A follow-up is queued behind the active attempt: {message}")
