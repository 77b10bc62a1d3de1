"""Configuration from the environment, read once when the app is created.

| variable            | meaning                                                         | default        |
|---------------------|-----------------------------------------------------------------|----------------|
| LLM_API_BASE        | base URL of the OpenAI-compatible endpoint (e.g. https://x/v1)  | (provider's)   |
| LLM_API_KEY         | its API key; never logged, never returned                       | (none)         |
| LLM_MODEL           | model name; without a "provider/" prefix it is sent as openai/… | (required)     |
| LLM_TIMEOUT_SECONDS | per-request timeout of the LLM call                             | 30             |
| LLM_MAX_RETRIES     | retries of a failed LLM call                                    | 1              |
| LLM_MAX_TOKENS      | longest answer asked of the model, in tokens                    | (model's)      |
| FRONTEND_ORIGIN     | comma-separated origins allowed by CORS                         | (none: no CORS)|
| MAX_MESSAGE_CHARS   | longest accepted message                                        | 8000           |
| HOST / PORT         | where `python -m app` listens                                   | 0.0.0.0 / 8000 |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A variable of the environment has a value the app cannot use."""


@dataclass(frozen=True)
class Config:
    llm_model: str | None
    llm_api_base: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)  # repr=False: never printed by accident
    llm_timeout_seconds: float = 30.0
    llm_max_retries: int = 1
    llm_max_tokens: int | None = None
    frontend_origins: tuple[str, ...] = ()
    max_message_chars: int = 8000
    host: str = "0.0.0.0"
    port: int = 8000

    @property
    def litellm_model(self) -> str | None:
        """The model name as LiteLLM expects it: a bare name means an OpenAI-compatible endpoint."""
        if not self.llm_model:
            return None
        return self.llm_model if "/" in self.llm_model else f"openai/{self.llm_model}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: float, kind: type[int] | type[float]) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None
            if value < 0:
                raise ConfigError(f"{name} must not be negative (got {raw})")
            return value

        max_tokens = int(number("LLM_MAX_TOKENS", 0, int)) or None
        origins = tuple(o.strip().rstrip("/") for o in (text("FRONTEND_ORIGIN") or "").split(",") if o.strip())
        return cls(
            llm_model=text("LLM_MODEL"),
            llm_api_base=text("LLM_API_BASE"),
            llm_api_key=text("LLM_API_KEY"),
            llm_timeout_seconds=float(number("LLM_TIMEOUT_SECONDS", 30.0, float)),
            llm_max_retries=int(number("LLM_MAX_RETRIES", 1, int)),
            llm_max_tokens=max_tokens,
            frontend_origins=origins,
            max_message_chars=int(number("MAX_MESSAGE_CHARS", 8000, int)),
            host=text("HOST") or "0.0.0.0",
            port=int(number("PORT", 8000, int)),
        )
