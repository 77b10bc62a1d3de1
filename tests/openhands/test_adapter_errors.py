"""``OpenHandsAgent``'s error translation and polling, against a small real HTTP server that answers the way the
agent-server does in the cases the real one will not produce on demand (429, 5xx, garbage, a stuck run).

Fast and unmarked: no agent-server needed. Polling uses an injected clock, so no test waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from promptship.adapters.openhands import OpenHandsAgent, conversation_verdict, usage_from_stats
from promptship.domain.results import AgentHandle, AgentTask
from promptship.errors import AgentError
from promptship.ports import AgentLLMAccess
from promptship_sandbox.llm_server import serve_asgi

CID = "0e995d1e-b74a-460d-aaae-d163e36f51aa"
LLM_KEY = "psk-run-secret-must-not-show-0000"


@dataclass
class Server:
    """Scripted answers: ``answers[(method, route)]`` is a list consumed in order (the last one repeats)."""

    answers: dict[tuple[str, str], list[Response]] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    def on(self, method: str, route: str, *responses: Response) -> None:
        self.answers[(method, route)] = list(responses)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        route = path.replace(CID, "{id}")
        self.log.append((request.method, route))
        queue = self.answers.get((request.method, route))
        if not queue:
            return JSONResponse({"detail": "Not Found"}, 404)
        return queue.pop(0) if len(queue) > 1 else queue[0]


def conversation(status: str, cost: float = 0.0, budget: str | None = None) -> JSONResponse:
    tags = {"basesha": "b" * 40, **({"budgetusd": budget} if budget else {})}
    return JSONResponse(
        {
            "id": CID,
            "execution_status": status,
            "workspace": {"kind": "LocalWorkspace", "working_dir": "/nonexistent/ws"},
            "tags": tags,
            "stats": {
                "usage_to_metrics": {
                    "agent": {
                        "accumulated_cost": cost,
                        "accumulated_token_usage": {"prompt_tokens": 100, "completion_tokens": 10},
                    }
                }
            },
        }
    )


@pytest.fixture
def server() -> Iterator[tuple[Server, str]]:
    state = Server()
    app = Starlette(routes=[Route("/{path:path}", state.handle, methods=["GET", "POST", "DELETE"])])
    with serve_asgi(app) as url:
        yield state, url


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_agent(url: str, clock: FakeClock | None = None) -> tuple[OpenHandsAgent, httpx.Client]:
    http = httpx.Client(base_url=url, timeout=5)
    clock = clock or FakeClock()
    return OpenHandsAgent(http, session_api_key=SecretStr("sess-k"), clock=clock, sleep=clock.sleep), http


TASK = AgentTask(run_key="r1", conversation_id=CID, instruction="do", workspace="/nonexistent/ws", model="m")
ACCESS = AgentLLMAccess(base_url="http://127.0.0.1:9/v1", api_key=SecretStr(LLM_KEY), model="openai/m")
HANDLE = AgentHandle(conversation_id=CID, created=True)


@pytest.mark.parametrize(
    ("response", "retryable", "status", "retry_after", "words"),
    [
        (JSONResponse({"detail": "busy"}, 429, headers={"Retry-After": "7"}), True, 429, 7.0, "capacity"),
        (JSONResponse({"detail": "Internal Server Error"}, 503), True, 503, None, "failed"),
        (JSONResponse({"detail": "exists"}, 409), False, 409, None, "conflict"),
        (
            JSONResponse(
                {"detail": [{"loc": ["body", "agent", "llm"], "msg": "bad llm", "input": {"api_key": LLM_KEY}}]},
                422,
            ),
            False,
            422,
            None,
            "body.agent.llm: bad llm",
        ),
        (JSONResponse({"detail": "no"}, 401), False, 401, None, "SESSION_API_KEY"),
    ],
)
def test_start_errors_are_translated_once(
    server: tuple[Server, str],
    response: Response,
    retryable: bool,
    status: int,
    retry_after: float | None,
    words: str,
) -> None:
    state, url = server
    state.on("POST", "/api/conversations", response)
    agent, http = make_agent(url)
    with http, pytest.raises(AgentError) as caught:
        agent.start(TASK, ACCESS)
    err = caught.value
    assert (err.retryable, err.status, err.retry_after_s) == (retryable, status, retry_after)
    assert words in str(err)
    assert LLM_KEY not in str(err) and "sess-k" not in str(err)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("7", 7.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 0.0),  # an HTTP-date (long past): read by domain.retrying
        ("in a while", None),  # neither seconds nor a date: the server did not say how long
    ],
)
def test_retry_after_is_read_by_the_shared_helper(
    server: tuple[Server, str], retry_after: str, expected: float | None
) -> None:
    state, url = server
    state.on("POST", "/api/conversations", JSONResponse({"detail": "busy"}, 429, headers={"Retry-After": retry_after}))
    agent, http = make_agent(url)
    with http, pytest.raises(AgentError) as caught:
        agent.start(TASK, ACCESS)
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after_s) == (True, 429, expected)


def test_a_poll_refused_with_retry_after_waits_that_long(server: tuple[Server, str]) -> None:
    state, url = server
    state.on(
        "GET",
        "/api/conversations/{id}",
        JSONResponse({"detail": "x"}, 503, headers={"Retry-After": "4"}),
        conversation("finished", cost=0.25),
    )
    state.on("GET", "/api/conversations/{id}/agent_final_response", JSONResponse({"response": "ok"}))
    clock = FakeClock()
    agent, http = make_agent(url, clock)
    with http:
        result = agent.result(HANDLE, timeout_s=60)
    assert result.verdict == "finished"
    assert clock.now == pytest.approx(4.0)  # not the first poll interval (0.25 s): the server asked for 4 s


def test_a_malformed_body_is_an_agent_error(server: tuple[Server, str]) -> None:
    state, url = server
    state.on("GET", "/api/conversations/{id}", PlainTextResponse("<html>proxy error</html>"))
    agent, http = make_agent(url)
    with http, pytest.raises(AgentError, match="malformed"):
        agent.start(TASK, ACCESS)


def test_a_lost_connection_is_retryable() -> None:
    agent, http = make_agent("http://127.0.0.1:9")
    with http, pytest.raises(AgentError) as caught:
        agent.result(HANDLE, timeout_s=1)
    assert caught.value.retryable and "lost the connection" in str(caught.value)


def test_the_timeout_interrupts_and_deletes(server: tuple[Server, str]) -> None:
    state, url = server
    state.on("GET", "/api/conversations/{id}", conversation("running"))
    state.on("POST", "/api/conversations/{id}/interrupt", JSONResponse({"success": True}))
    state.on("DELETE", "/api/conversations/{id}", JSONResponse({"success": True}))
    clock = FakeClock()
    agent, http = make_agent(url, clock)
    with http:
        result = agent.result(HANDLE, timeout_s=30)
    assert result.verdict == "timed_out"
    assert clock.now == pytest.approx(30)
    assert ("POST", "/api/conversations/{id}/interrupt") in state.log
    assert state.log[-1] == ("DELETE", "/api/conversations/{id}")
    polls = state.log.count(("GET", "/api/conversations/{id}"))
    assert 5 < polls < 30  # backoff: far fewer polls than one per second


def test_transient_poll_failures_are_tolerated(server: tuple[Server, str]) -> None:
    state, url = server
    state.on(
        "GET",
        "/api/conversations/{id}",
        JSONResponse({"detail": "x"}, 502),
        conversation("running"),
        JSONResponse({"detail": "x"}, 503),
        conversation("finished", cost=0.25),
    )
    state.on("GET", "/api/conversations/{id}/agent_final_response", JSONResponse({"response": "ok"}))
    agent, http = make_agent(url)
    with http:
        result = agent.result(HANDLE, timeout_s=60)
    assert (result.verdict, result.final_message, result.usage.cost_usd) == ("finished", "ok", 0.25)


def test_a_run_over_its_budget_is_interrupted(server: tuple[Server, str]) -> None:
    state, url = server
    state.on("GET", "/api/conversations/{id}", conversation("running", cost=0.6, budget="0.5"))
    state.on("POST", "/api/conversations/{id}/interrupt", JSONResponse({"success": True}))
    agent, http = make_agent(url)
    with http:
        result = agent.result(HANDLE, timeout_s=60)
    assert result.verdict == "error" and result.error is not None and "MaxBudgetReached" in result.error
    assert ("POST", "/api/conversations/{id}/interrupt") in state.log


def test_the_error_reason_is_the_servers(server: tuple[Server, str]) -> None:
    state, url = server
    state.on("GET", "/api/conversations/{id}", conversation("error"))
    event = {"kind": "ConversationErrorEvent", "code": "LLMBadRequestError", "detail": "model not found"}
    state.on("GET", "/api/conversations/{id}/events/search", JSONResponse({"items": [event], "next_page_id": None}))
    agent, http = make_agent(url)
    with http:
        result = agent.result(HANDLE, timeout_s=60)
    assert (result.verdict, result.error) == ("error", "LLMBadRequestError: model not found")


def test_a_message_refused_for_capacity_is_run_later_not_resent(server: tuple[Server, str]) -> None:
    state, url = server
    state.on("POST", "/api/conversations/{id}/events", JSONResponse({"detail": "full"}, 429))
    state.on("POST", "/api/conversations/{id}/run", JSONResponse({"success": True}))
    agent, http = make_agent(url)
    with http:
        agent.send(HANDLE, "fix it")
    assert state.log.count(("POST", "/api/conversations/{id}/events")) == 1
    assert ("POST", "/api/conversations/{id}/run") in state.log


@pytest.mark.parametrize(
    ("status", "verdict"),
    [("finished", "finished"), ("error", "error"), ("stuck", "stuck"), ("running", None), ("paused", None)],
)
def test_conversation_verdict(status: str, verdict: str | None) -> None:
    assert conversation_verdict(status) == verdict


def test_an_unknown_status_and_malformed_stats_are_errors() -> None:
    with pytest.raises(AgentError):
        conversation_verdict("exploded")
    with pytest.raises(AgentError):
        usage_from_stats({"usage_to_metrics": {"agent": {"accumulated_token_usage": {"prompt_tokens": "many"}}}})
    both: dict[str, Any] = {
        "usage_to_metrics": {
            "agent": {"accumulated_cost": 0.1, "accumulated_token_usage": {"prompt_tokens": 5, "completion_tokens": 1}},
            "condenser": {"accumulated_cost": 0.2, "accumulated_token_usage": {"prompt_tokens": 7}},
        }
    }
    usage = usage_from_stats(both)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cost_usd) == (12, 1, pytest.approx(0.3))


@pytest.mark.parametrize("stalled", ["idle", "paused"])
def test_a_conversation_that_is_not_running_is_started_once(server: tuple[Server, str], stalled: str) -> None:
    state, url = server
    state.on("GET", "/api/conversations/{id}", *([conversation(stalled)] * 40), conversation("finished"))
    state.on("POST", "/api/conversations/{id}/run", JSONResponse({"success": True}))
    agent, http = make_agent(url)
    with http:
        result = agent.result(HANDLE, timeout_s=600)
    assert result.verdict == "finished"
    assert state.log.count(("POST", "/api/conversations/{id}/run")) == 1
    assert state.log.count(("POST", "/api/conversations/{id}/events")) == 0
