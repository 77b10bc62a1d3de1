"""The SSE framing the pass-through relay uses: where events end and which ones it looks into. Pure tables."""

from __future__ import annotations

import pytest

from promptship.adapters.sse import classify, event_data, split_events

CHUNK = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


@pytest.mark.parametrize(
    ("buffer", "events", "rest"),
    [
        (b"", [], b""),
        (CHUNK, [CHUNK], b""),
        (CHUNK + CHUNK[:10], [CHUNK], CHUNK[:10]),  # an event cut by the network read waits for its end
        (CHUNK[:-1], [], CHUNK[:-1]),
        (b"data: a\r\n\r\ndata: b\n\n", [b"data: a\r\n\r\n", b"data: b\n\n"], b""),  # CRLF and LF line ends
        (b"data: a\r\rdata: b", [b"data: a\r\r"], b"data: b"),  # CR line ends
        (b": ping\n\n" + CHUNK, [b": ping\n\n", CHUNK], b""),
    ],
)
def test_split_events(buffer: bytes, events: list[bytes], rest: bytes) -> None:
    assert split_events(buffer) == (events, rest)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (CHUNK, "chunk"),
        (b": OPENROUTER PROCESSING\n\n", "other"),
        (b"event: ping\n\n", "other"),
        (b"data: [DONE]\n\n", "done"),
        (b"data:[DONE]\r\n\r\n", "done"),
        (b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n', "usage"),
        (b'data: {"id":"c1","choices":[{"delta":{}}],"usage":null}\n\n', "chunk"),  # OpenAI's usage: null chunks
        (b'data: {"error":{"message":"overloaded","code":502}}\n\n', "error"),
        (b'data: {"id":"c1","choices":[{"delta":{"content":"the \\"usage\\" of \\"error\\": [DONE]"}}]}\n\n', "chunk"),
        (b'data: {"choices":[{"delta":{"content":"x"}}],\ndata: "usage":{"prompt_tokens":1}}\n\n', "usage"),
        (b"data: not json, [DONE] later\n\n", "chunk"),
    ],
)
def test_classify(raw: bytes, kind: str) -> None:
    assert classify(raw).kind == kind


def test_a_usage_or_error_event_carries_its_json() -> None:
    usage = classify(b'data: {"choices":[],"usage":{"prompt_tokens":3,"cost":0.5}}\n\n')
    assert usage.payload == {"choices": [], "usage": {"prompt_tokens": 3, "cost": 0.5}}
    assert classify(CHUNK).payload is None  # a plain chunk is never parsed
    assert event_data(b"id: 7\ndata: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b": comment\n\n") is None
