"""LiteLLM's DEBUG records print whole requests and replies; with a DEBUG root logger they would put every prompt
(and the secrets in it) into the log files. Found by the leak scan (tests/reliability/test_planted_secrets.py):
the gateway keeps LiteLLM's records below INFO out of every handler."""

from __future__ import annotations

import io
import logging
import secrets
import string
from collections.abc import Iterator

import pytest

from promptship.domain.results import LLMCall, LLMMessage
from promptship_sandbox.llm_server import LLMStandIn
from tests.gateway.helpers import make_gateway, make_ledger

pytestmark = pytest.mark.gateway


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_prompt_sent_through_the_gateway_is_not_in_a_debug_log(llm: LLMStandIn, scanner, tmp_path, debug_log) -> None:
    token = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    logging.getLogger("LiteLLM").setLevel(logging.DEBUG)  # as LITELLM_LOG=DEBUG would

    reply = gateway.complete(
        LLMCall(run_key="run-1", step="open_pull_request", messages=(LLMMessage(role="user", content=f"use {token}"),))
    )

    assert reply.content and any(token in r.raw for r in llm.completions())  # the call was made, locally
    assert token not in debug_log.getvalue()
    logging.getLogger("LiteLLM").info("an INFO line still shows")
    assert "an INFO line still shows" in debug_log.getvalue()
