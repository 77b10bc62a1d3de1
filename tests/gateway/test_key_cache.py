"""The gateway service remembers what a key stands for (``servers.gateway.KeyCache``) instead of asking the ledger
on every call; a key whose attempt ended must still be refused at once, by every service that remembers it.

Two services here are two apps with a ledger object (and engine) each on one SQLite file, and the attempt is
ended through a third, the pipeline's: what two service processes share is the database, and each one's cache
lives in its app, so this is the staleness two processes can have (without paying two processes' start-up).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptship.adapters.llm import LiteLLMGateway
from promptship.servers.gateway import create_gateway_app
from promptship_sandbox.llm_server import LLMStandIn, serve_asgi
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway

BODY: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Implement a retry helper"}]}
STREAM = {**BODY, "stream": True}


@pytest.fixture
def two_services(llm: LLMStandIn, scanner: Any, tmp_path: Path) -> Iterator[tuple[LiteLLMGateway, list[httpx.Client]]]:
    pipeline = make_gateway(llm, scanner, make_ledger(tmp_path))
    with ExitStack() as stack:
        clients = []
        for _ in range(2):
            service = make_gateway(llm, scanner, make_ledger(tmp_path))  # its own ledger object and engine
            base_url = stack.enter_context(serve_asgi(create_gateway_app(service, service.ledger)))
            clients.append(stack.enter_context(httpx.Client(base_url=base_url, timeout=120)))
        yield pipeline, clients


def _post(http: httpx.Client, key: str, body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def test_a_key_remembered_by_two_services_is_refused_by_both_once_its_attempt_ended(
    two_services: tuple[LiteLLMGateway, list[httpx.Client]], llm: LLMStandIn
) -> None:
    pipeline, (a, b) = two_services
    decision = pipeline.route("Implement the feature", task_class="complex_code")
    ended = pipeline.agent_access("REQ-k1", decision, 1.0).api_key.get_secret_value()
    for http in (a, b):  # both services resolve the key and remember it
        assert _post(http, ended, BODY).status_code == 200
        assert _post(http, ended, STREAM).text.rstrip().endswith("data: [DONE]")
    sent_before = len(llm.completions())
    cost_before = pipeline.run_cost_usd("REQ-k1")

    pipeline.expire_agent_access("REQ-k1")  # the attempt ended, in another process than the services
    other = pipeline.agent_access("REQ-k2", decision, 1.0).api_key.get_secret_value()

    # service a: the first late call a stream (refused by its reservation), service b: a bad body first (a
    # refusal for another reason is not what a dead key gets: its own answer comes first)
    late = [_post(a, ended, STREAM), _post(a, ended, BODY)]
    late += [_post(b, ended, {"messages": [{"role": "user"}]}), _post(b, ended, BODY), _post(b, ended, STREAM)]
    assert [r.status_code for r in late] == [401] * 5
    assert {r.json()["error"]["type"] for r in late} == {"invalid_api_key"}
    assert len(llm.completions()) == sent_before  # nothing was sent for the dead key
    assert pipeline.run_cost_usd("REQ-k1") == pytest.approx(cost_before)  # and nothing charged

    # the next attempt's key works on both, and is charged to its own run
    assert _post(a, other, BODY).status_code == 200
    assert _post(b, other, STREAM).text.rstrip().endswith("data: [DONE]")
    assert pipeline.ledger.run_usage("REQ-k2").prompt_tokens > 0


def test_an_unknown_key_is_refused_and_not_remembered(
    two_services: tuple[LiteLLMGateway, list[httpx.Client]], llm: LLMStandIn
) -> None:
    pipeline, (a, _) = two_services
    made_later = "psk-run-" + "0" * 43
    assert _post(a, made_later, BODY).status_code == 401
    # a key the ledger learns afterwards is found at once (a refusal is never cached)
    decision = pipeline.route("Implement the feature", task_class="complex_code")
    pipeline.ledger.add_access_key(made_later, "REQ-k3", decision, 1.0)
    assert _post(a, made_later, BODY).status_code == 200
    assert pipeline.ledger.run_usage("REQ-k3").prompt_tokens > 0
