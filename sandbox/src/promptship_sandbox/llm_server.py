"""The LLM stand-in: a real HTTP server on 127.0.0.1 speaking the wire protocols promptship's LLM traffic uses.

- OpenAI-compatible (what OpenRouter and LiteLLM's ``openai/``/``openrouter/`` providers speak):
  ``POST /v1/chat/completions`` non-streaming and SSE streaming (``delta`` chunks, tool-call deltas, a final
  usage chunk, ``data: [DONE]``), ``GET /v1/models``. Models whose name holds a ``/`` (``openai/gpt-4o``) are
  "cloud" models: their ``usage`` carries ``cost`` in USD the way OpenRouter reports it. Other names are local
  models and report no cost.
- Ollama's native API (what LiteLLM's ``ollama_chat/`` provider speaks): ``POST /api/chat`` (NDJSON stream by
  default, or one JSON object with ``stream: false``), ``POST /api/show``, ``GET /api/tags``, ``GET /api/version``.

Answers are deterministic: scripted per model with ``script(model, replies)`` (a reply is a text or a list of
tool calls); when a model's script is empty the answer is an echo of the last user message. ``fail_next`` makes
the next completions fail with an HTTP status; ``break_next_stream`` breaks an SSE stream off after some events
(the connection dropped, or an error event). Every request is logged (``requests``), so tests can prove what
reached "the cloud" and what did not; ``sent_stream(id)`` is the SSE body sent for a completion, byte for byte.

In Python::

    with running_llm_stand_in() as llm:
        llm.base_url            # http://127.0.0.1:PORT (OpenAI-compatible under /v1, Ollama under /api)
        llm.script("openai/gpt-4o", ["hello", [ToolCall("finish", {"message": "done"})]])

From another process: ``python -m promptship_sandbox.llm_server --port P [--script FILE]``; the same controls
are then under ``/_stand_in/`` (``POST script``, ``POST fail_next``, ``GET requests``, ``POST reset``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_LOCAL_MODELS = ("llama3", "mistral", "codellama")
# USD per token charged to cloud-style models when no price was set (roughly GPT-4o-class on OpenRouter).
DEFAULT_CLOUD_PRICE = (2.5e-6, 1.0e-5)


@dataclass(frozen=True)
class ToolCall:
    """One tool call the stand-in answers with. ``arguments`` is sent JSON-encoded, as OpenAI does."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(dict(self.arguments))


Reply = str | Sequence[ToolCall]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as it reached the stand-in."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: str

    def contains(self, needle: str) -> bool:
        """True if ``needle`` appears in the raw body or in any string of the parsed body (JSON escapes undone)."""
        if needle in self.raw:
            return True
        return any(needle in s for s in _strings(self.body))

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers, "body": self.body}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def parse_reply(raw: Any) -> Reply:
    """A reply from JSON/YAML: a string, a list of tool calls, or ``{"tool_calls": [...]}``; a tool call is
    ``{"name", "arguments"}`` (or OpenAI's ``{"function": {"name", "arguments"}}``)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, ToolCall):
        return [raw]
    if isinstance(raw, Mapping) and ("name" in raw or "function" in raw):
        raw = [raw]
    if isinstance(raw, Mapping) and "tool_calls" in raw:
        raw = raw["tool_calls"]
    if isinstance(raw, Mapping) and "content" in raw:
        return str(raw["content"])
    if isinstance(raw, list):
        calls: list[ToolCall] = []
        for item in raw:
            if isinstance(item, ToolCall):
                calls.append(item)
                continue
            fn = item.get("function", item)
            calls.append(ToolCall(name=fn["name"], arguments=fn.get("arguments", {}), id=item.get("id")))
        return calls
    raise ValueError(f"a reply must be a text or a list of tool calls, not {type(raw).__name__}")


def _tokens(text: str) -> int:
    """A deterministic token count: about four characters a token."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    parts = [str(content or "")]
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {}) if isinstance(call, Mapping) else {}
        args = fn.get("arguments", "")
        parts.append(f"{fn.get('name', '')} {args if isinstance(args, str) else json.dumps(args)}")
    return " ".join(p for p in parts if p)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Any) -> int:
    total = sum(_tokens(_message_text(m)) + 3 for m in messages)
    if tools:
        total += _tokens(json.dumps(tools))
    return total


def is_cloud_model(model: str) -> bool:
    """Cloud-style names are OpenRouter's ``vendor/model``; local (Ollama) names have no slash."""
    return "/" in model


class LLMStandIn:
    """State and ASGI app of the stand-in. Thread-safe; start it with ``running_llm_stand_in()``."""

    def __init__(self, local_models: Sequence[str] = DEFAULT_LOCAL_MODELS):
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = {}
        self._conversations: list[tuple[str, deque[Reply]]] = []
        self._failures: deque[tuple[int, str | None]] = deque()
        self._delays: deque[tuple[float, str | None]] = deque()
        self._requests: list[LoggedRequest] = []
        self._prices: dict[str, tuple[float, float]] = {}
        self._no_cost: set[str] = set()
        self._no_stream_usage: set[str] = set()
        self._breaks: deque[tuple[int, Literal["drop", "error"], str | None]] = deque()
        self._sent_streams: dict[str, bytes] = {}
        self._seq = itertools.count(1)
        self.local_models: list[str] = list(local_models)
        self.base_url = ""
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/v1/models", self._openai_models, methods=["GET"]),
                Route("/models", self._openai_models, methods=["GET"]),
                Route("/api/chat", self._ollama_chat, methods=["POST"]),
                Route("/api/show", self._ollama_show, methods=["POST"]),
                Route("/api/tags", self._ollama_tags, methods=["GET"]),
                Route("/api/version", self._ollama_version, methods=["GET"]),
                Route("/_stand_in/script", self._admin_script, methods=["POST"]),
                Route("/_stand_in/fail_next", self._admin_fail_next, methods=["POST"]),
                Route("/_stand_in/requests", self._admin_requests, methods=["GET"]),
                Route("/_stand_in/reset", self._admin_reset, methods=["POST"]),
            ]
        )

    # ---- controls -------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far (a copy), oldest first. Control requests are not logged."""
        with self._lock:
            return list(self._requests)

    def completions(self, model: str | None = None) -> list[LoggedRequest]:
        """The chat-completion requests (both protocols), optionally only those for ``model``."""
        return [
            r
            for r in self.requests
            if r.path in ("/v1/chat/completions", "/chat/completions", "/api/chat")
            and (model is None or r.model == model)
        ]

    def script(self, model: str, replies: Sequence[Reply | Mapping[str, Any]] | Reply) -> None:
        """Queue replies for ``model`` (``"*"``: any model without its own script). A reply is a text or a list
        of ``ToolCall``."""
        items = [replies] if isinstance(replies, str) else list(replies)
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(parse_reply(r) for r in items)

    def script_conversation(self, marker: str, replies: Sequence[Reply | Mapping[str, Any]]) -> None:
        """Queue replies for the tool-using conversation whose messages contain ``marker`` (e.g. a run's work
        branch, named in its first instruction): several agents can then share the stand-in, each getting its
        own script whatever model the gateway routed it to. Asked before the per-model scripts; requests
        without ``tools`` (a PR text, a classification) never take these replies."""
        items = [parse_reply(r) for r in replies]
        with self._lock:
            self._conversations.append((marker, deque(items)))

    def fail_next(self, n: int = 1, status: int = 500, *, model: str | None = None) -> None:
        """The next ``n`` completions (of ``model`` only, if given) fail with HTTP ``status``."""
        with self._lock:
            self._failures.extend([(status, model)] * n)

    def slow_next(self, n: int = 1, seconds: float = 5.0, *, model: str | None = None) -> None:
        """The next ``n`` completions (of ``model`` only, if given) answer only after ``seconds``."""
        with self._lock:
            self._delays.extend([(seconds, model)] * n)

    def set_price(self, model: str, input_per_token: float, output_per_token: float) -> None:
        """USD per token that a cloud-style model reports as ``usage.cost``."""
        with self._lock:
            self._prices[model] = (input_per_token, output_per_token)

    def omit_cost(self, model: str) -> None:
        """Make a cloud-style model report no ``usage.cost`` (a provider that does not say what it charged)."""
        with self._lock:
            self._no_cost.add(model)

    def omit_stream_usage(self, model: str) -> None:
        """Make ``model``'s SSE streams end without a usage chunk, whatever the client asked for."""
        with self._lock:
            self._no_stream_usage.add(model)

    def break_next_stream(
        self, after_events: int, how: Literal["drop", "error"] = "drop", *, model: str | None = None
    ) -> None:
        """The next OpenAI-compatible SSE stream (of ``model`` only, if given) breaks off after ``after_events``
        events: ``drop`` closes the connection in the middle of the body; ``error`` sends an error event
        (``data: {"error": {...}}``, as OpenRouter and vLLM do) and ends the stream without ``[DONE]``."""
        with self._lock:
            self._breaks.append((after_events, how, model))

    def sent_stream(self, completion_id: str) -> bytes:
        """The SSE body sent for completion ``completion_id`` (the ``id`` of its chunks), as written."""
        with self._lock:
            return self._sent_streams[completion_id]

    def reset(self) -> None:
        """Forget scripts, failures and the request log."""
        with self._lock:
            self._scripts.clear()
            self._conversations.clear()
            self._failures.clear()
            self._breaks.clear()
            self._sent_streams.clear()
            self._delays.clear()
            self._requests.clear()

    # ---- internals ------------------------------------------------------------------------------------------
    async def _log(self, request: Request) -> tuple[Any, str]:
        raw_bytes = await request.body()
        raw = raw_bytes.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        entry = LoggedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
        )
        with self._lock:
            self._requests.append(entry)
        return body, raw

    async def _maybe_delay(self, model: str) -> None:
        delay = None
        with self._lock:
            for i, (seconds, only) in enumerate(self._delays):
                if only is None or only == model:
                    del self._delays[i]
                    delay = seconds
                    break
        if delay:
            await asyncio.sleep(delay)

    def _take_break(self, model: str) -> tuple[int, Literal["drop", "error"]] | None:
        with self._lock:
            for i, (after, how, only) in enumerate(self._breaks):
                if only is None or only == model:
                    del self._breaks[i]
                    return after, how
        return None

    def _take_failure(self, model: str) -> int | None:
        with self._lock:
            for i, (status, only) in enumerate(self._failures):
                if only is None or only == model:
                    del self._failures[i]
                    return status
        return None

    def _next_reply(self, model: str, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> Reply:
        with self._lock:
            if tools and self._conversations:
                text = "\n".join(_message_text(m) for m in messages)
                for marker, queue in self._conversations:
                    if queue and marker in text:
                        return queue.popleft()
            for key in (model, "*"):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = _message_text(last_user) if last_user else ""
        return f"[{model}] {' '.join(text.split())[:200]}"

    def _usage(self, model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if is_cloud_model(model):
            with self._lock:
                price = self._prices.get(model, DEFAULT_CLOUD_PRICE)
                omit = model in self._no_cost
            if not omit:
                usage["cost"] = round(prompt_tokens * price[0] + completion_tokens * price[1], 12)
                usage["is_byok"] = False
                usage["prompt_tokens_details"] = {"cached_tokens": 0}
                usage["completion_tokens_details"] = {"reasoning_tokens": 0}
        return usage

    def _answer(self, body: Mapping[str, Any]) -> tuple[str, Reply, int, int, list[dict[str, Any]]]:
        model = str(body.get("model", ""))
        messages = body.get("messages") or []
        reply = self._next_reply(model, messages, body.get("tools"))
        seq = next(self._seq)
        calls: list[dict[str, Any]] = []
        if isinstance(reply, str):
            completion = _tokens(reply)
        else:
            for i, call in enumerate(reply):
                calls.append(
                    {
                        "id": call.id or f"call_{seq:05d}_{i}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json()},
                    }
                )
            completion = sum(_tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls)
        return f"chatcmpl-standin-{seq:05d}", reply, _prompt_tokens(messages, body.get("tools")), completion, calls

    @staticmethod
    def _openai_error(status: int, message: str) -> JSONResponse:
        kind = {429: "rate_limit_error", 401: "authentication_error", 400: "invalid_request_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"retry-after": "0"} if status == 429 else None
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)

    # ---- OpenAI-compatible ----------------------------------------------------------------------------------
    async def _openai_chat(self, request: Request) -> Response:
        body, _ = await self._log(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return self._openai_error(400, "body must be JSON with 'model' and a 'messages' list")
        model = str(body["model"])
        await self._maybe_delay(model)
        failure = self._take_failure(model)
        if failure is not None:
            return self._openai_error(failure, f"stand-in: scripted failure {failure} for {model}")
        completion_id, reply, prompt_tokens, completion_tokens, calls = self._answer(body)
        usage = self._usage(model, prompt_tokens, completion_tokens)
        created = int(time.time())
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply if isinstance(reply, str) else None}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                }
            )
        options = body.get("stream_options") or {}
        send_usage = bool(options.get("include_usage")) or is_cloud_model(model) or bool(body.get("usage"))
        with self._lock:
            send_usage = send_usage and model not in self._no_stream_usage

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        def events() -> Iterator[str]:
            yield from _recorded(_broken(all_events(), self._take_break(model)))

        def _recorded(items: Iterator[str]) -> Iterator[str]:
            sent: list[str] = []
            try:
                for item in items:
                    sent.append(item)
                    yield item
            finally:
                with self._lock:
                    self._sent_streams[completion_id] = "".join(sent).encode()

        def all_events() -> Iterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            if isinstance(reply, str):
                for piece in _pieces(reply, 16):
                    yield chunk({"content": piece})
            for i, call in enumerate(calls):
                fn = call["function"]
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": fn["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                for piece in _pieces(fn["arguments"], 24):
                    yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            yield chunk({}, finish)
            if send_usage:
                payload = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def _openai_models(self, request: Request) -> Response:
        await self._log(request)
        with self._lock:
            names = sorted({*self.local_models, *self._scripts, *self._prices} - {"*"})
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "promptship-stand-in"} for n in names],
            }
        )

    # ---- Ollama native --------------------------------------------------------------------------------------
    def _local_known(self, model: str) -> bool:
        base = model.removesuffix(":latest")
        return base in self.local_models or model in self.local_models

    async def _ollama_chat(self, request: Request) -> Response:
        body, _ = await self._log(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return JSONResponse({"error": "body must be JSON with 'model' and a 'messages' list"}, 400)
        model = str(body["model"])
        if not self._local_known(model):
            return JSONResponse({"error": f'model "{model}" not found, try pulling it first'}, 404)
        await self._maybe_delay(model)
        failure = self._take_failure(model)
        if failure is not None:
            return JSONResponse({"error": f"stand-in: scripted failure {failure} for {model}"}, failure)
        _, reply, prompt_tokens, completion_tokens, calls = self._answer(body)
        ollama_calls = [
            {"function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"] or "{}")}}
            for c in calls
        ]
        created_at = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        done = {
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 200_000,
            "eval_count": completion_tokens,
            "eval_duration": 700_000,
        }
        text = reply if isinstance(reply, str) else ""
        if body.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if ollama_calls:
                message["tool_calls"] = ollama_calls
            return JSONResponse({"model": model, "created_at": created_at, "message": message, **done})

        def lines() -> Iterator[str]:
            for piece in _pieces(text, 16):
                msg = {"role": "assistant", "content": piece}
                yield json.dumps({"model": model, "created_at": created_at, "message": msg, "done": False}) + "\n"
            if ollama_calls:
                msg = {"role": "assistant", "content": "", "tool_calls": ollama_calls}
                yield json.dumps({"model": model, "created_at": created_at, "message": msg, "done": False}) + "\n"
            final = {"model": model, "created_at": created_at, "message": {"role": "assistant", "content": ""}}
            yield json.dumps({**final, **done}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _ollama_show(self, request: Request) -> Response:
        body, _ = await self._log(request)
        name = str((body or {}).get("model") or (body or {}).get("name") or "")
        if not self._local_known(name):
            return JSONResponse({"error": f"model '{name}' not found"}, 404)
        return JSONResponse(
            {
                "modelfile": f"FROM {name}\n",
                "parameters": "stop <|eot_id|>",
                "template": "{{ if .Tools }}tools{{ end }}{{ .Prompt }}",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "8.0B",
                    "quantization_level": "Q4_0",
                },
                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                "capabilities": ["completion", "tools"],
            }
        )

    async def _ollama_tags(self, request: Request) -> Response:
        await self._log(request)
        with self._lock:
            names = list(self.local_models)
        return JSONResponse(
            {
                "models": [
                    {
                        "name": f"{n}:latest",
                        "model": f"{n}:latest",
                        "modified_at": "2026-01-01T00:00:00Z",
                        "size": 4_700_000_000,
                        "digest": "sha256:" + hashlib.sha256(n.encode()).hexdigest(),
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B"},
                    }
                    for n in names
                ]
            }
        )

    async def _ollama_version(self, request: Request) -> Response:
        await self._log(request)
        return JSONResponse({"version": "0.3.14"})

    # ---- control endpoints (for processes outside pytest) ---------------------------------------------------
    async def _admin_script(self, request: Request) -> Response:
        body = await request.json()
        self.script(str(body["model"]), body.get("replies", []))
        return JSONResponse({"ok": True})

    async def _admin_fail_next(self, request: Request) -> Response:
        body = await request.json()
        self.fail_next(int(body.get("n", 1)), int(body.get("status", 500)), model=body.get("model"))
        return JSONResponse({"ok": True})

    async def _admin_requests(self, request: Request) -> Response:
        return JSONResponse([r.to_json() for r in self.requests])

    async def _admin_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    def load_script_file(self, path: Path) -> None:
        """Load ``{model: [reply, ...]}`` (JSON or YAML; optionally under a top-level ``models`` key)."""
        import yaml

        data = yaml.safe_load(path.read_text())
        if isinstance(data, Mapping) and isinstance(data.get("models"), Mapping):
            data = data["models"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of model name to a list of replies")
        for model, replies in data.items():
            self.script(str(model), replies if isinstance(replies, list) else [replies])


class _StreamBrokenOff(Exception):
    """Raised inside a streamed body so that the server drops the connection mid-body (``break_next_stream``)."""


def _broken(events: Iterator[str], broken: tuple[int, Literal["drop", "error"]] | None) -> Iterator[str]:
    if broken is None:
        yield from events
        return
    after, how = broken
    for _ in range(after):
        item = next(events, None)
        if item is None:
            return
        yield item
    if how == "error":
        error = {"message": "stand-in: the upstream model failed mid-stream", "type": "server_error", "code": 502}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    raise _StreamBrokenOff(f"stand-in: stream dropped after {after} events")


def _pieces(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


class _ThreadedServer:
    """An ASGI app served by uvicorn in a daemon thread on an already-bound 127.0.0.1 socket."""

    def __init__(self, app: Any, port: int = 0):
        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only then; with proto 0
        # every response waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name=f"asgi-{self.port}"
        )

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"server on 127.0.0.1:{self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def serve_asgi(app: Any, port: int = 0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port unless given) in a thread; yields its base URL; stops it after."""
    server = _ThreadedServer(app, port)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@contextmanager
def running_llm_stand_in(local_models: Sequence[str] = DEFAULT_LOCAL_MODELS, *, port: int = 0) -> Iterator[LLMStandIn]:
    """A started stand-in on 127.0.0.1 (``llm.base_url``); stopped when the block ends."""
    llm = LLMStandIn(local_models)
    with serve_asgi(llm.app, port) as base_url:
        llm.base_url = base_url
        yield llm


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m promptship_sandbox.llm_server", description="The LLM stand-in (OpenAI-compatible + Ollama)."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, printed)")
    parser.add_argument("--script", type=Path, default=None, help="JSON/YAML file {model: [reply, ...]}")
    parser.add_argument(
        "--local-models", default=",".join(DEFAULT_LOCAL_MODELS), help="comma-separated Ollama model names"
    )
    args = parser.parse_args(argv)
    import uvicorn

    llm = LLMStandIn([m for m in args.local_models.split(",") if m])
    if args.script:
        llm.load_script_file(args.script)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    llm.base_url = f"http://127.0.0.1:{port}"
    print(f"LLM stand-in listening on {llm.base_url}", flush=True)
    uvicorn.Server(uvicorn.Config(llm.app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
