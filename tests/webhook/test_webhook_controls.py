"""`/promptship stop` and `/promptship retry` on GitHub: the receiver finds the request behind the issue or PR
in the store, cancels its active flow run in Prefect, or starts it again. Real HTTP, a real Prefect server."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Running

from flows.dev_cycle import dev_cycle
from promptship.domain.request import DevRequest
from promptship.store import Store, make_engine
from promptship.store.sealing import prompt_cipher
from tests.webhook.conftest import REPO

pytestmark = pytest.mark.webhook


def _remember(store_url: str, request: DevRequest, *, running: bool) -> tuple[Store, str | None]:
    """The store as a run of ``request`` leaves it: its request, and (``running``) an attempt in a flow run that
    Prefect shows Running."""
    store = Store(make_engine(store_url), cipher=prompt_cipher(store_url, None))
    store.create_schema()
    store.remember_request(request.run_key, request)
    if not running:
        return store, None
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(dev_cycle, parameters={"request": request.model_dump(mode="json")})
        client.set_flow_run_state(run.id, Running(), force=True)
    store.begin_attempt(request.run_key, flow_run_id=str(run.id))
    return store, str(run.id)


def _command(payload: dict[str, Any], text: str, issue_number: int) -> dict[str, Any]:
    payload["comment"]["body"] = text
    payload["issue"]["number"] = issue_number
    return payload


def test_stop_cancels_the_active_attempt_of_the_issues_request(receiver, store_url, command_comment, prefect_harness):
    request = DevRequest(prompt="Add a /health endpoint that answers 200", repository=REPO, issue_number=31)
    _, flow_run_id = _remember(store_url, request, running=True)

    response = receiver.post("issue_comment", _command(command_comment, "/promptship stop", 31))

    assert response.status_code == 202 and response.json()["outcome"] == "control"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
    assert state is not None and state.name == "Cancelling"
    ((repository, number, said),) = receiver.commenter.comments
    assert (repository, number) == (REPO, 31) and flow_run_id in said
    assert receiver.starter.triggers == []  # stop starts nothing


def test_stop_with_nothing_running_says_so_and_cancels_nothing(receiver, store_url, command_comment):
    request = DevRequest(prompt="Add a /health endpoint that answers 200", repository=REPO, issue_number=32)
    _remember(store_url, request, running=False)

    receiver.post("issue_comment", _command(command_comment, "/promptship stop", 32))

    ((_, number, said),) = receiver.commenter.comments
    assert number == 32 and "nothing of request" in said and request.run_key in said


def test_retry_starts_the_last_request_of_the_issue_again(receiver, store_url, command_comment):
    request = DevRequest(prompt="Add a /health endpoint that answers 200", repository=REPO, issue_number=33)
    _remember(store_url, request, running=False)

    receiver.post("issue_comment", _command(command_comment, "/promptship retry", 33))

    (trigger,) = receiver.starter.triggers
    assert trigger.to_request().run_key == request.run_key  # the same request: a new attempt of it
    ((_, number, said),) = receiver.commenter.comments
    assert number == 33 and "retrying request" in said


def test_stop_by_someone_without_write_access_is_refused(receiver, store_url, command_comment, prefect_harness):
    request = DevRequest(prompt="Add a /health endpoint that answers 200", repository=REPO, issue_number=34)
    _, flow_run_id = _remember(store_url, request, running=True)
    payload = _command(command_comment, "/promptship stop", 34)
    payload["comment"]["author_association"] = "NONE"

    response = receiver.post("issue_comment", payload)

    assert response.json()["outcome"] == "refused"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
    assert state is not None and state.name == "Running"
