"""The real OpenHands agent-server behind the fault proxy, called by ``OpenHandsAgent`` the way generate_code
calls it (``promptship_sandbox.reliability.faults.AgentServer``: find the run key's conversation, else start it,
then read its result), its agent's LLM calls through the gateway service to the scripted stand-in.

What is counted is on the agent-server itself (not through the proxy): the conversations tagged with the run
key and the instructions they were given. A start whose answer was lost (the proxy's ``truncated``: the
conversation exists, the client saw a broken answer) must be found by the retried start, never started again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from promptship.errors import AgentError
from promptship_sandbox.agent_server import agent_server_installed
from promptship_sandbox.faultproxy import FaultKind
from promptship_sandbox.reliability.faults import CONVERSATIONS, AgentServer, AgentServerParts, LLMParts
from tests.conftest import require

pytestmark = [pytest.mark.openhands, pytest.mark.gateway]

FINISHED = "finished: change.txt"


@pytest.fixture(scope="module")
def boundary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    ok, why = agent_server_installed()
    require("openhands agent-server", ok, why)
    work = tmp_path_factory.mktemp("agent-server-faults")
    with ExitStack() as stack:
        yield AgentServer(AgentServerParts(stack, work, LLMParts(stack, work)))


def _unfaulted(boundary: AgentServer) -> dict[str, int]:
    assert boundary.request("unfaulted") == FINISHED
    effects = boundary.effects("unfaulted")
    assert effects == {"conversations": 1, "instructions": 1, "agent llm calls": 2}
    return effects


@pytest.mark.parametrize("kind", ["truncated", "slow_body"])
def test_a_start_whose_answer_was_lost_is_found_by_the_retry_not_started_again(
    boundary: AgentServer, kind: FaultKind
) -> None:
    expected = _unfaulted(boundary)
    tag = f"lost-{kind}"
    boundary.proxy.inject(kind, match=CONVERSATIONS, method="POST")
    with pytest.raises(AgentError) as failed:
        boundary.request(tag)
    assert failed.value.retryable and boundary.proxy.fired[kind] == 1
    assert boundary.effects(tag)["conversations"] == 1  # the side effect happened although the client lost it
    boundary.proxy.clear()
    assert boundary.request(tag) == FINISHED  # the step's next attempt
    assert boundary.effects(tag) == expected


@pytest.mark.parametrize("kind", ["connect_refused", "dns_failure"])
def test_an_agent_server_that_cannot_be_reached_is_a_retryable_agent_error(
    boundary: AgentServer, kind: FaultKind
) -> None:
    tag = f"outage-{kind}"
    boundary.proxy.inject(kind)
    try:
        with pytest.raises(AgentError, match="lost the connection to the agent-server") as failed:
            boundary.request(tag)
        assert failed.value.retryable
        assert boundary.effects(tag)["conversations"] == 0
    finally:
        boundary.proxy.clear()
    assert boundary.request(tag) == FINISHED
    assert boundary.effects(tag) == {"conversations": 1, "instructions": 1, "agent llm calls": 2}
