"""Fuzzing the receiver's door with hypothesis, over real HTTP: whatever arrives — random bytes, random JSON,
wrong content types, wrong or duplicated signatures, invalid UTF-8, deep nesting — it never answers 5xx and
never starts a run unless the delivery is signed and asks for one."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptship.domain.webhooks import sign
from tests.webhook.conftest import SECRET, Receiver, github_headers

pytestmark = pytest.mark.webhook

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EVENTS = st.sampled_from(["issues", "issue_comment", "check_run", "status", "ping", "push", "x" * 300, ""])
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain", ""]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=30,
)


def _send(r: Receiver, body: bytes, *, event: str, content_type: str, signed: bool, **extra: str) -> httpx.Response:
    headers = github_headers(event, str(uuid.uuid4()))
    headers["Content-Type"] = content_type
    if signed:
        headers["X-Hub-Signature-256"] = sign(SECRET.encode(), body)
    headers.update(extra)
    response = r.http.post(f"{r.url}/github/webhook", content=body, headers=headers)
    assert r.receiver.wait_idle(10)
    return response


@FUZZ
@given(body=st.binary(max_size=2048), event=EVENTS, content_type=CONTENT_TYPES, signed=st.booleans())
def test_random_bytes_never_get_a_5xx_or_start_a_run(receiver: Receiver, body, event, content_type, signed) -> None:
    response = _send(receiver, body, event=event, content_type=content_type, signed=signed)
    assert response.status_code < 500, response.text
    assert receiver.starter.triggers == []


@FUZZ
@given(payload=JSON, event=EVENTS, signed=st.booleans())
def test_random_json_never_gets_a_5xx_or_starts_a_run(receiver: Receiver, payload: Any, event, signed) -> None:
    body = json.dumps(payload).encode()
    response = _send(receiver, body, event=event, content_type="application/json", signed=signed)
    assert response.status_code < 500, response.text
    assert receiver.starter.triggers == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # deeper than Python's JSON parser can recurse
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        b'{"action": "labeled", "x": "\xff\xfe invalid utf-8"}',
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b'{"a": 1, "a": 2}',  # duplicated keys
    ],
)
def test_hostile_json_shapes_are_refused_cleanly(start_receiver, body: bytes) -> None:
    from tests.webhook.conftest import make_settings

    r = start_receiver(make_settings(webhook_max_body_bytes=256 * 1024))
    response = _send(r, body, event="issues", content_type="application/json", signed=True)
    assert response.status_code < 500, response.text
    assert r.starter.triggers == []


def test_a_valid_request_with_a_wrong_or_duplicated_signature_starts_nothing(receiver: Receiver, labeled) -> None:
    body = json.dumps(labeled).encode()
    good = sign(SECRET.encode(), body)
    for signature in ("sha256=" + "0" * 64, good.upper(), "sha1=" + good[7:], ""):
        headers = github_headers("issues", str(uuid.uuid4()))
        headers.update({"Content-Type": "application/json", "X-Hub-Signature-256": signature})
        assert receiver.http.post(f"{receiver.url}/github/webhook", content=body, headers=headers).status_code == 401
    # two signature headers, one of them right: httpx sends both; the receiver must not start on a mix
    headers = [(k, v) for k, v in github_headers("issues", str(uuid.uuid4())).items()]
    headers += [("Content-Type", "application/json"), ("X-Hub-Signature-256", "sha256=" + "0" * 64)]
    headers += [("X-Hub-Signature-256", good)]
    response = receiver.http.post(f"{receiver.url}/github/webhook", content=body, headers=headers)
    assert receiver.receiver.wait_idle(10)
    assert response.status_code < 500
    assert len(receiver.starter.triggers) <= 1


def test_huge_headers_get_no_5xx(receiver: Receiver, labeled) -> None:
    body = json.dumps(labeled).encode()
    response = _send(
        receiver, body, event="issues", content_type="application/json", signed=True, **{"X-Padding": "p" * 60_000}
    )
    assert response.status_code < 500 or response.status_code == 431
