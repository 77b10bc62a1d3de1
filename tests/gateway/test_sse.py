"""The SSE framing the pass-through relay uses: where events end and which ones it looks into. Pure tables."""

from __future__ import annotations

import pytest

from promptship.adapters.sse import Relay, UpstreamErrorEvent, classify, event_data, split_events

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


USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_the_relay_passes_events_on_as_they_complete_and_keeps_the_usage_and_the_end() -> None:
    relay = Relay()
    body = CHUNK + b": ping\n\n" + CHUNK + USAGE + DONE
    # cut at every point: whatever the network reads, the bytes passed on are the chunks and the comment
    for cut in range(1, len(body)):
        relay = Relay()
        out = relay.feed(body[:cut]) + relay.feed(body[cut:])
        relay.finish()
        assert out == CHUNK + b": ping\n\n" + CHUNK
        assert relay.chunks == 2 and relay.usage() == {"prompt_tokens": 3, "completion_tokens": 2}
        assert relay.done == DONE


def test_the_relay_sends_nothing_after_the_end_and_raises_on_an_error_event() -> None:
    relay = Relay()
    assert relay.feed(CHUNK + DONE + CHUNK) == CHUNK
    assert relay.chunks == 1 and relay.usage() is None
    broken = Relay()
    assert broken.feed(CHUNK) == CHUNK
    with pytest.raises(UpstreamErrorEvent, match="overloaded"):
        broken.feed(b'data: {"error":{"message":"overloaded","code":502}}\n\n')
    cut_off = Relay()
    cut_off.feed(b'data: {"error":{"message":"gone"}}')  # no blank line: the body ended on it
    with pytest.raises(UpstreamErrorEvent, match="gone"):
        cut_off.finish()


def test_a_usage_chunk_with_content_is_relayed_and_counted() -> None:
    both = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    relay = Relay()
    assert relay.feed(both + DONE) == both
    assert relay.chunks == 1 and relay.usage() == {"prompt_tokens": 1, "completion_tokens": 1}


def _event_by_event(body: bytes, cut: int) -> tuple[bytes, int, object, bytes | None]:
    """What the relay passed on, counted and kept when every read is taken event by event (the reference)."""
    relay = Relay()
    out = b""
    for part in (body[:cut], body[cut:]):
        events, relay._rest = split_events(relay._rest + part)
        out += relay._feed_events(events)
    relay.finish()
    return out, relay.chunks, relay.usage(), relay.done


NULL_USAGE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n'
BODIES = [
    CHUNK * 5 + USAGE + DONE,
    NULL_USAGE * 3 + USAGE + DONE,  # OpenAI's include_usage chunks: "usage":null on every one
    CHUNK + b": ping\n\n" + CHUNK + b"event: x\ndata: y\n\n" + CHUNK + USAGE + DONE,
    CHUNK + b"\n" + CHUNK + DONE,  # a stray blank line
    CHUNK.replace(b"\n", b"\r\n") * 2 + DONE,
    CHUNK * 2 + b'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}\n\n' + DONE,
]


@pytest.mark.parametrize("body", BODIES)
def test_a_read_of_plain_chunks_is_passed_on_whole_with_the_outcome_of_taking_it_event_by_event(body: bytes) -> None:
    for cut in range(1, len(body)):
        relay = Relay()
        out = relay.feed(body[:cut]) + relay.feed(body[cut:])
        relay.finish()
        assert (out, relay.chunks, relay.usage(), relay.done) == _event_by_event(body, cut), cut


def test_what_arrived_together_goes_on_as_one_piece_and_a_cut_event_waits_for_its_end() -> None:
    relay = Relay()
    assert relay.feed(CHUNK * 3 + CHUNK[:7]) == CHUNK * 3  # one piece, no per-event split
    assert relay.chunks == 3
    assert relay.feed(CHUNK[7:] + USAGE[:20]) == CHUNK
    assert relay.feed(USAGE[20:] + DONE) == b""  # the usage chunk spanning two reads is kept for the end
    relay.finish()
    assert relay.chunks == 4 and relay.usage() == {"prompt_tokens": 3, "completion_tokens": 2}
    assert relay.done == DONE
