"""Where GitHub's own descriptions live once ``scripts/specs.sh`` (``make specs``) has installed them.

- ``github_openapi_path()``: the REST API (``@octokit/openapi``, ``generated/api.github.com.json``).
- ``webhooks_openapi_path()``: webhook payloads and headers (``@octokit/openapi-webhooks``).
- ``webhook_examples()``: real payloads per event (``@octokit/webhooks-examples``, unsigned).

Each path function returns a path whether or not it exists; ``specs_available()`` says whether all are there
(tests pass that to ``require``). No I/O happens at import.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

OPENAPI_PACKAGE = "@octokit/openapi"
WEBHOOKS_PACKAGE = "@octokit/openapi-webhooks"
EXAMPLES_PACKAGE = "@octokit/webhooks-examples"


def cache_dir() -> Path:
    """``$PROMPTSHIP_CACHE`` or ``~/.cache/promptship`` (the same rule as scripts/*.sh)."""
    return Path(os.environ.get("PROMPTSHIP_CACHE") or Path.home() / ".cache" / "promptship")


def npm_root() -> Path:
    """The ``node_modules`` directory scripts/specs.sh installs into."""
    return cache_dir() / "npm" / "node_modules"


def github_openapi_path(variant: str = "api.github.com") -> Path:
    """GitHub's REST API description (13 MB, OpenAPI 3.0.3). ``variant``: api.github.com, ghec, ghes-3.19…"""
    return npm_root() / OPENAPI_PACKAGE / "generated" / f"{variant}.json"


def webhooks_openapi_path(variant: str = "api.github.com") -> Path:
    """GitHub's webhook description: ``webhooks`` (per event-action, headers incl. X-Hub-Signature-256) and
    ``components.schemas`` (``webhook-issues-labeled`` …)."""
    return npm_root() / WEBHOOKS_PACKAGE / "generated" / f"{variant}.json"


def webhook_examples_path(variant: str = "api.github.com") -> Path:
    """Index of real webhook payloads: a list of ``{"name": event, "examples": [payload, ...]}``."""
    return npm_root() / EXAMPLES_PACKAGE / variant / "index.json"


def specs_available() -> bool:
    """True when all three files are installed (run ``make specs`` otherwise)."""
    return all(p.is_file() for p in (github_openapi_path(), webhooks_openapi_path(), webhook_examples_path()))


@lru_cache(maxsize=4)
def _examples_index(path: Path) -> dict[str, list[dict[str, Any]]]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    return {entry["name"]: entry["examples"] for entry in entries}


def webhook_examples(event: str, action: str | None = None) -> list[dict[str, Any]]:
    """Real payloads of ``event`` (e.g. ``issues``), optionally only those with ``action`` (e.g. ``labeled``).

    Fresh copies: callers may change them. Raises FileNotFoundError when ``make specs`` has not run.
    """
    examples = _examples_index(webhook_examples_path()).get(event, [])
    chosen = [e for e in examples if action is None or e.get("action") == action]
    return json.loads(json.dumps(chosen))


@lru_cache(maxsize=2)
def load_webhooks_openapi(variant: str = "api.github.com") -> dict[str, Any]:
    """The parsed webhook description (about 5 MB). Cached."""
    return json.loads(webhooks_openapi_path(variant).read_text(encoding="utf-8"))


def json_schema_of(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema (for jsonschema): ``nullable: true`` becomes ``anyOf: [null, …]``."""
    if isinstance(node, list):
        return [json_schema_of(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: json_schema_of(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, converted]}
    return converted
