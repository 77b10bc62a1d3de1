"""promptship's own HTTP services (ASGI apps): the LLM gateway and the GitHub webhook receiver."""
