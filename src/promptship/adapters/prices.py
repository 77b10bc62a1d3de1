"""LiteLLM's local cost map as a ``domain.replay.Pricer`` (``LITELLM_LOCAL_MODEL_COST_MAP=True``: the map shipped
with the installed LiteLLM, never fetched)."""

from __future__ import annotations

import os


def litellm_pricer(litellm_model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for the tokens on ``litellm_model`` by LiteLLM's cost map (``litellm.cost_per_token``); None when the
    map does not know the model. A routed name the map lacks (``openrouter/openai/gpt-4o``) is looked up without
    its leading provider segments (``openai/gpt-4o``, then ``gpt-4o``): the upstream model's list price."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    parts = litellm_model.split("/")
    for start in range(len(parts)):
        name = "/".join(parts[start:])
        try:
            prompt_usd, completion_usd = litellm.cost_per_token(
                model=name, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except Exception:  # LiteLLM raises its own (or a bare) Exception for a model its map lacks
            continue
        return float(prompt_usd) + float(completion_usd)
    return None
