"""The LLM gateway as a service: an OpenAI-compatible endpoint in front of the gateway's ``ChatRelay`` port.

The code agent's ``base_url`` points here, so its traffic — the pipeline's biggest LLM user — gets the same
policy, sensitive-data gate, budgets and ledger as every other call. Each request is attributed to its run
by a per-run API key (``Authorization: Bearer psk-run-…``, minted by ``AgentAccessIssuer.agent_access``;
only its hash is stored, and ``RunKeys`` — the cost ledger — resolves it). An optional ``x-promptship-step``
header names the step in the ledger (default ``agent``).

- ``POST /v1/chat/completions`` — non-streaming and SSE (``stream: true``), tool calls passed through;
- ``GET /v1/models`` — the policy's model groups;
- ``GET /health``;
- ``GET /openapi.json`` — the OpenAPI 3.1 description of all of this (``servers/gateway_openapi.py``; bearer auth).

Keys are resolved once per process and kept (``KeyCache``, by the key's SHA-256, positive answers only): the
authority is the reservation every call takes before anything is sent, which checks in its transaction that
the key still stands (``CostLedger.reserve(key_hash=…)``), so a key expired by any process is refused (401)
at its next call even while a cache still knows it; ``/v1/models`` (no reservation) always asks the ledger.

Errors use OpenAI's error shape: 401 unknown key, 400 bad body, 403 sensitive data with no local model,
402 over budget (not 429: clients would retry), 502/503/504 provider failures.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from promptship.domain.gate import chat_request_problem
from promptship.domain.results import RunAccess
from promptship.errors import AccessKeyRevoked, BudgetExceeded, LLMError, SensitiveDataBlocked
from promptship.ports import ChatRelay, RunKeys
from promptship.servers.gateway_openapi import gateway_openapi

COST_HEADER = "x-litellm-response-cost"
STEP_HEADER = "x-promptship-step"


UNKNOWN_KEY = "unknown or missing per-run API key (Authorization: Bearer …)"


class KeyCache:
    """What the keys this service saw stand for, by the key's SHA-256 (never the key), at most ``size`` of them,
    the least recently used dropped first. Only positive answers that the reservation can check again (an access
    with its ``key_hash``) are kept; used on the event loop only (no lock).

    Why a stale entry is safe: it only saves the door's lookup. Every chat call takes a reservation before it
    sends anything, and the reservation refuses a key that no longer stands (``AccessKeyRevoked`` → 401, the
    entry dropped); any other refusal of a call whose key came from here is checked against the ledger before it
    is answered, so an expired key gets 401, never 400/402/403."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._entries: OrderedDict[str, RunAccess] = OrderedDict()

    def get(self, digest: str) -> RunAccess | None:
        access = self._entries.get(digest)
        if access is not None:
            self._entries.move_to_end(digest)
        return access

    def put(self, digest: str, access: RunAccess) -> None:
        if access.key_hash is None:
            return  # nothing could check it again: always ask
        self._entries[digest] = access
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def __len__(self) -> int:
        return len(self._entries)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": kind}}, status_code=status)


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, AccessKeyRevoked):
        return _error(401, "invalid_api_key", UNKNOWN_KEY)
    if isinstance(exc, SensitiveDataBlocked):
        return _error(403, "sensitive_data_blocked", str(exc))
    if isinstance(exc, BudgetExceeded):
        return _error(402, "budget_exceeded", str(exc))
    if isinstance(exc, LLMError):
        if exc.status == 408:
            return _error(504, "upstream_timeout", str(exc))
        return _error(503 if exc.retryable else 502, "upstream_error", str(exc))
    if isinstance(exc, ValueError):
        return _error(400, "invalid_request_error", str(exc))
    raise exc


def uvicorn_stack() -> str:
    """What uvicorn's ``loop="auto"``/``http="auto"`` serve with in this environment: uvloop and httptools when
    they are installed (``uvicorn[standard]``; per streamed event they cost less CPU than asyncio + h11), else
    asyncio and h11."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def _bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def create_gateway_app(gateway: ChatRelay, keys: RunKeys, *, key_cache: KeyCache | None = None) -> Starlette:
    """The ASGI app of the gateway service: ``gateway`` answers the chats (``LiteLLMGateway``), ``keys``
    resolves the per-run API keys (its ``CostLedger``), remembered in ``key_cache`` (default: one of its own)."""
    cache = key_cache if key_cache is not None else KeyCache()

    async def authorize(request: Request) -> RunAccess | None:
        key = _bearer(request)
        return None if key is None else await run_in_threadpool(keys.access_for, key)

    async def chat_completions(request: Request) -> Response:
        key = _bearer(request)
        if key is None:
            return _error(401, "invalid_api_key", UNKNOWN_KEY)
        digest = hashlib.sha256(key.encode()).hexdigest()
        access = cache.get(digest)
        cached = access is not None
        if access is None:
            access = await run_in_threadpool(keys.access_for, key)
            if access is None:
                return _error(401, "invalid_api_key", UNKNOWN_KEY)
            cache.put(digest, access)
        response = await answer(request, access)
        if cached and response.status_code >= 400 and response.status_code != 401:
            # refused for another reason with a remembered key: the key's own answer comes first
            if await run_in_threadpool(keys.access_for, key) is None:
                response = _error(401, "invalid_api_key", UNKNOWN_KEY)
        if response.status_code == 401:
            cache.drop(digest)
        return response

    async def answer(request: Request, access: RunAccess) -> Response:
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return _error(400, "invalid_request_error", "the body must be JSON (and not nested absurdly deep)")
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "the body must be a JSON object")
        problem = chat_request_problem(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        step = request.headers.get(STEP_HEADER, "agent")[:64]
        try:
            if not body.get("stream"):
                result = await run_in_threadpool(gateway.chat, access, body, step=step)
                # LiteLLM proxy's convention: LiteLLM-based clients (the OpenHands SDK) take the cost from here.
                cost = str(result.get("usage", {}).get("cost", 0.0))
                return JSONResponse(result, headers={COST_HEADER: cost})
            events = await gateway.stream_chat(access, body, step=step)
        except (AccessKeyRevoked, SensitiveDataBlocked, BudgetExceeded, LLMError, ValueError) as exc:
            return _error_response(exc)
        return StreamingResponse(_sse(events), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def models(request: Request) -> Response:
        access = await authorize(request)  # never the cache: no reservation checks this answer again
        if access is None:
            return _error(401, "invalid_api_key", UNKNOWN_KEY)
        data = [
            {"id": spec.name, "object": "model", "created": 0, "owned_by": f"promptship-{spec.mode}"}
            for spec in gateway.model_groups()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    description = gateway_openapi()

    async def openapi(request: Request) -> Response:
        return JSONResponse(description)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]
    )


async def _sse(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The relay's SSE body as it comes; a failure after the headers were sent ends it with an error event."""
    try:
        async for chunk in body:
            yield chunk
    except (LLMError, BudgetExceeded, SensitiveDataBlocked) as exc:
        # Headers are gone already: report the failure in the stream, as OpenAI-compatible servers do.
        kind = "upstream_error" if isinstance(exc, LLMError) else type(exc).__name__
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': kind}})}\n\n".encode()
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()  # a client that went away: the relay records what the call cost
