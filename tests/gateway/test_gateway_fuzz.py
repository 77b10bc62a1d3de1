"""Fuzzing the gateway service's door (an OpenAI-compatible API clients point at): malformed JSON, wrong
shapes of an otherwise valid chat request, hostile nesting — a 4xx with OpenAI's error shape, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.helpers import make_gateway, make_ledger
from tests.gateway.test_gateway_service import Service, _serve

pytestmark = pytest.mark.gateway

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody", 3])},
    optional={"content": JSON, "tool_calls": JSON, "name": JSON},
)
CHAT = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=3) | JSON},
    optional={"model": st.text(max_size=20) | JSON, "stream": JSON, "max_tokens": JSON, "tools": JSON},
)


@pytest.fixture(scope="module")
def fuzz_service(scanner: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from promptship_sandbox.llm_server import running_llm_stand_in

    with running_llm_stand_in() as llm:
        tmp = tmp_path_factory.mktemp("gateway-fuzz")
        yield from _serve(make_gateway(llm, scanner, make_ledger(tmp)))


def _post(service: Service, body: bytes, content_type: str = "application/json") -> httpx.Response:
    key = service.key_for("fuzz-run")
    return httpx.post(
        f"{service.base_url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=30,
    )


def _openai_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict) and isinstance(error.get("message"), str)


@FUZZ
@given(body=st.binary(max_size=1024))
def test_random_bytes_get_a_clean_error(fuzz_service: Service, body: bytes) -> None:
    _openai_error(_post(fuzz_service, body))


@FUZZ
@given(request=CHAT)
def test_wrong_shapes_of_a_chat_request_get_no_5xx(fuzz_service: Service, request: Any) -> None:
    if isinstance(request.get("stream"), bool) and request["stream"]:
        request["stream"] = False  # a stream's errors arrive in-band; its door is the same
    _openai_error(_post(fuzz_service, json.dumps(request).encode()))


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"messages": "\xff\xfe"}', b"{}", b"[]", b"null"])
def test_hostile_bodies_get_a_clean_error(fuzz_service: Service, body: bytes) -> None:
    _openai_error(_post(fuzz_service, body))
