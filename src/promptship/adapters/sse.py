"""Server-sent events as OpenAI-compatible chat servers send them, read without parsing every chunk.

The gateway relays a provider's stream as the provider's bytes; it only needs to know where one event ends
(``split_events``) and which few events it must look into (``classify``): the closing usage chunk, an error
sent mid-stream and ``data: [DONE]``. Everything else is passed on untouched. Pure functions, no I/O.

``Relay.feed`` takes what one network read brought and, in the common case (LF line ends, data events only,
none of the three markers), passes every complete event in it on as one piece after three substring counts —
no split, no per-event work; a read with a marker, a comment, a field other than ``data`` or a CR goes event
by event (``split_events`` + ``classify``), with the same outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# An event ends with a blank line; a line ends with CRLF, LF or CR (the SSE spec accepts all three).
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")

EventKind = Literal["chunk", "usage", "error", "done", "other"]


@dataclass(frozen=True)
class Event:
    """One SSE event: its bytes as received (terminator included), what it is, and its JSON when looked into."""

    raw: bytes
    kind: EventKind
    payload: Mapping[str, Any] | None = None


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete events at the start of ``buffer`` (each with its terminating blank line) and the rest."""
    events: list[bytes] = []
    start = 0
    for end in _EVENT_END.finditer(buffer):
        events.append(buffer[start : end.end()])
        start = end.end()
    return events, buffer[start:]


def event_data(raw: bytes) -> bytes | None:
    """The ``data`` of an event (its ``data:`` lines joined by LF, as the spec says), None if it has none."""
    lines = [line for line in _LINE.split(raw) if line.startswith(b"data:")]
    if not lines:
        return None
    values = [line[5:].removeprefix(b" ") for line in lines]
    return b"\n".join(values)


def classify(raw: bytes) -> Event:
    """What one event is. Only an event that can be the usage, an error or the end is parsed (a substring test
    first: a chunk's own text cannot contain ``"usage"`` or ``"error"`` unescaped)."""
    if b"data:" not in raw:
        return Event(raw, "other")  # a comment (``: ping``), or only ``event:``/``id:`` fields
    if b'"usage"' not in raw and b'"error"' not in raw and b"[DONE]" not in raw:
        return Event(raw, "chunk")
    data = event_data(raw)
    if data is None:
        return Event(raw, "other")
    if data.strip() == b"[DONE]":
        return Event(raw, "done")
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return Event(raw, "chunk")  # not JSON: nothing the gateway needs from it, relayed as it is
    if not isinstance(payload, dict):
        return Event(raw, "chunk")
    if payload.get("error"):
        return Event(raw, "error", payload)
    if isinstance(payload.get("usage"), dict):
        return Event(raw, "usage", payload)
    return Event(raw, "chunk", payload)


def has_choices(payload: Mapping[str, Any] | None) -> bool:
    """True when a chunk carries choices (a usage event may, on some servers: it is then also content)."""
    return bool(payload and payload.get("choices"))


def data_event(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as one SSE ``data`` event."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


class UpstreamErrorEvent(Exception):
    """The provider sent an error event in the middle of its stream (its message is the provider's)."""


class Relay:
    """What the gateway does with a provider's SSE body, one network read at a time (no I/O here).

    ``feed`` returns the bytes to send on now: every complete event as received, but the usage-only chunk and
    ``data: [DONE]``, which are kept for the end (the gateway sends its own usage chunk, then the end). An error
    event raises ``UpstreamErrorEvent``. ``chunks`` counts the events with content (for a stream without usage);
    ``usage_event`` is the provider's usage chunk, ``done`` its end event, once seen."""

    def __init__(self) -> None:
        self.chunks = 0
        self.usage_event: Mapping[str, Any] | None = None
        self.done: bytes | None = None
        self._rest = b""

    def feed(self, received: bytes) -> bytes:
        buffer = self._rest + received if self._rest else received
        if self.done is None and b"\r" not in buffer:
            end = buffer.rfind(b"\n\n") + 2  # 1: no complete event yet
            if end == 1:
                self._rest = buffer
                return b""
            complete = buffer[:end] if end < len(buffer) else buffer
            events = _plain_data_events(complete)
            if events:
                self._rest = buffer[end:]
                self.chunks += events
                return complete
        events_, self._rest = split_events(buffer)
        return self._feed_events(events_)

    def _feed_events(self, events: list[bytes]) -> bytes:
        out: list[bytes] = []
        for raw in events:
            if self.done is not None:
                break  # nothing is sent after the end
            event = classify(raw)
            if event.kind == "chunk":
                self.chunks += 1
                out.append(raw)
            elif event.kind == "other":
                out.append(raw)  # comments (keep-alives), fields without data
            elif event.kind == "usage":
                self.usage_event = event.payload
                if has_choices(event.payload):
                    self.chunks += 1
                    out.append(raw)  # content as well: relayed, the gateway's usage chunk follows
            elif event.kind == "error":
                raise UpstreamErrorEvent(_error_text(event.payload))
            else:
                self.done = raw
        return b"".join(out)

    def finish(self) -> None:
        """The provider's body ended: an event left without its blank line still counts (not its bytes)."""
        rest, self._rest = self._rest, b""
        if not rest.strip() or self.done is not None:
            return
        event = classify(rest)
        if event.kind == "error":
            raise UpstreamErrorEvent(_error_text(event.payload))
        if event.kind == "usage":
            self.usage_event = event.payload

    def usage(self) -> Mapping[str, Any] | None:
        """The provider's reported usage, if it sent one."""
        usage = self.usage_event.get("usage") if self.usage_event is not None else None
        return usage if isinstance(usage, Mapping) else None


def _plain_data_events(complete: bytes) -> int:
    """How many events ``complete`` (LF-framed complete events, no CR) holds when every one of them is a plain
    chunk — it starts with ``data:`` and holds none of the markers ``classify`` looks for (OpenAI's
    ``"usage":null`` on every chunk is not one) — else 0: the caller then takes the events one by one."""
    if b"[DONE]" in complete or b'"error"' in complete:
        return 0
    usages = complete.count(b'"usage"')
    if usages and usages != complete.count(b'"usage":null') + complete.count(b'"usage": null'):
        return 0
    events = complete.count(b"\n\n")
    # an event starts the buffer or follows a blank line; JSON text cannot hold a raw newline, so every
    # "\n\ndata:" is an event's start, and all of them being data events is the count matching
    starts = complete.count(b"\n\ndata:") + complete.startswith(b"data:")
    if starts != events or b"\n\n\n" in complete:
        return 0
    return events


def _error_text(payload: Mapping[str, Any] | None) -> str:
    error = (payload or {}).get("error")
    if isinstance(error, Mapping):
        return f"{error.get('message') or 'error'} (code {error.get('code', '-')})"
    return str(error)
