"""The chat application's backend: FastAPI in front of an OpenAI-compatible LLM, called through LiteLLM."""

from app.main import create_app

__all__ = ["create_app"]
