"""HTTP API of the chat backend.

- `POST /chat` `{"message": "..."}` → 200 `{"response": "..."}`; errors are `{"error": "..."}` with
  400 (empty or invalid body), 502 (the LLM failed or timed out) or 500 (anything else).
- `GET /health` → 200 `{"status": "ok"}` as soon as the process listens (for liveness/readiness probes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import llm
from app.config import Config

log = logging.getLogger("app")


class ChatRequest(BaseModel):
    message: str


class ChatResponse(BaseModel):
    response: str


class ErrorResponse(BaseModel):
    error: str


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(config: Config | None = None, *, warm_up: bool = True) -> FastAPI:
    """Build the app; `config` defaults to the environment (see app.config)."""
    cfg = config or Config.from_env()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            llm.start_warmup()
        yield

    app = FastAPI(title="chat-app backend", lifespan=lifespan)
    app.state.config = cfg
    if cfg.frontend_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.frontend_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return error(400, f'Invalid request: expected JSON {{"message": "<text>"}} ({problems})')

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__)
        return error(500, "Internal server error.")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/chat",
        response_model=ChatResponse,
        responses={400: {"model": ErrorResponse}, 500: {"model": ErrorResponse}, 502: {"model": ErrorResponse}},
    )
    async def chat(body: ChatRequest) -> ChatResponse | JSONResponse:
        message = body.message.strip()
        if not message:
            return error(400, "The message is empty.")
        if len(message) > cfg.max_message_chars:
            return error(400, f"The message is too long (at most {cfg.max_message_chars} characters).")
        try:
            answer = await llm.complete(cfg, message)
        except llm.LLMUnavailable as exc:
            return error(502, str(exc))
        except llm.LLMNotConfigured as exc:
            log.error("LLM not configured: %s", exc)
            return error(500, "The server is not configured to reach a language model.")
        except Exception as exc:  # "500 otherwise", with a body the frontend can show
            log.exception("chat failed: %s", type(exc).__name__)
            return error(500, "Internal server error.")
        return ChatResponse(response=answer)

    return app
