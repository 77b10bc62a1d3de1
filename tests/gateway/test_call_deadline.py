"""A call with a deadline (``LLMCall.deadline_s``, e.g. the CI-log summary): each request gets what is left of
it, and neither a retry nor a fallback starts after it. The LLM stand-in answers late on purpose."""

from __future__ import annotations

import pytest

from promptship.domain.results import LLMCall, LLMMessage
from promptship.errors import LLMError
from promptship_sandbox.llm_server import LLMStandIn
from tests.gateway.helpers import local_requests, make_gateway, make_ledger

pytestmark = pytest.mark.gateway


def _local_call(**kw: object) -> LLMCall:
    messages = (LLMMessage(role="user", content="Summarize: 1 failed"),)
    return LLMCall(run_key="run-d", step="summarize_ci_log", force_local=True, messages=messages, **kw)  # type: ignore[arg-type]


def test_a_late_answer_past_the_deadline_ends_the_call_without_retries_or_fallbacks(
    llm: LLMStandIn, scanner, tmp_path
) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    llm.slow_next(20, seconds=4.0)  # every local group answers late
    with pytest.raises(LLMError) as caught:
        gateway.complete(_local_call(deadline_s=1.0))
    assert not caught.value.retryable
    assert len(local_requests(llm)) == 1  # one request; no retry, no other local group after the deadline
    assert gateway.run_cost_usd("run-d") == 0.0


def test_without_a_deadline_the_same_late_answer_arrives(llm: LLMStandIn, scanner, tmp_path) -> None:
    gateway = make_gateway(llm, scanner, make_ledger(tmp_path))
    llm.slow_next(1, seconds=1.5)
    reply = gateway.complete(_local_call())
    assert reply.content and reply.decision.mode == "local" and len(local_requests(llm)) == 1


def test_a_deadline_is_positive() -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        _local_call(deadline_s=0)
