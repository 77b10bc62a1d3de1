"""Server-sent events as OpenAI-compatible chat servers send them, read without parsing every chunk.

The gateway relays a provider's stream as the provider's bytes; it only needs to know where one event ends
(``split_events``) and which few events it must look into (``classify``): the closing usage chunk, an error
sent mid-stream and ``data: [DONE]``. Everything else is passed on untouched. Pure functions, no I/O.
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
