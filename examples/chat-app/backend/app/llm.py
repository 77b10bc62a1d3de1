"""The one place that talks to the LLM, through LiteLLM.

LiteLLM is imported lazily (it costs seconds of CPU), in a background thread started with the app, so that
`GET /health` answers at once and the first chat does not pay the whole import.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from types import ModuleType
from typing import Any

from app.config import Config

log = logging.getLogger("app.llm")


class LLMUnavailable(Exception):
    """The LLM failed, was unreachable, or did not answer in time (HTTP 502 for the client)."""


class LLMNotConfigured(Exception):
    """The server lacks the configuration to call an LLM (HTTP 500 for the client)."""


@functools.cache
def load_litellm() -> ModuleType:
    # Without this LiteLLM fetches its price map from the internet at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def start_warmup() -> threading.Thread:
    """Import LiteLLM in the background so that the first request does not wait for all of it."""
    thread = threading.Thread(target=load_litellm, name="litellm-warmup", daemon=True)
    thread.start()
    return thread


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _is_llm_failure(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    try:
        import httpx
        import openai
    except ImportError:  # pragma: no cover - both come with litellm
        return False
    # LiteLLM maps every provider error onto the openai exception classes.
    return isinstance(exc, openai.OpenAIError | httpx.HTTPError)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _describe(exc: BaseException) -> str:
    chain = _chain(exc)
    names = " ".join(type(e).__name__ for e in chain)
    # LiteLLM reports a refused connection as InternalServerError("... Connection error."), status 500.
    if any(isinstance(e, TimeoutError) for e in chain) or "Timeout" in names:
        return "The language model did not answer in time."
    if any(isinstance(e, ConnectionError) for e in chain) or "Connect" in names or "Connection error" in str(exc):
        return "Could not reach the language model."
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"The language model failed (HTTP {status})."
    return "The language model failed."


async def complete(config: Config, message: str) -> str:
    """Send one user message and return the model's text answer."""
    model = config.litellm_model
    if model is None:
        raise LLMNotConfigured("LLM_MODEL is not set")
    litellm = await asyncio.to_thread(load_litellm)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "timeout": config.llm_timeout_seconds,
        "max_retries": config.llm_max_retries,
    }
    if config.llm_max_tokens:
        kwargs["max_tokens"] = config.llm_max_tokens
    if config.llm_api_base:
        kwargs["api_base"] = config.llm_api_base
    # An OpenAI-compatible endpoint without auth still needs some key for the client library.
    kwargs["api_key"] = config.llm_api_key or "none"
    try:
        # The outer bound covers retries and anything the client's own timeout misses.
        bound = config.llm_timeout_seconds * (config.llm_max_retries + 1) + 5
        response = await asyncio.wait_for(litellm.acompletion(**kwargs), timeout=bound)
    except Exception as exc:
        if not _is_llm_failure(exc):
            raise
        log.warning(
            "LLM call failed: %s: %s",
            type(exc).__name__,
            redact(str(exc), config.llm_api_key)[:500],
        )
        raise LLMUnavailable(_describe(exc)) from None
    try:
        text = response.choices[0].message.content
    except (AttributeError, IndexError):
        text = None
    if not isinstance(text, str) or not text.strip():
        log.warning("LLM answered without text (model %s)", model)
        raise LLMUnavailable("The language model returned an empty answer.")
    return text
