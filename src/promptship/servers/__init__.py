"""promptship's own HTTP servers (ASGI apps): the LLM gateway, the GitHub webhook receiver and the metrics
endpoint."""
