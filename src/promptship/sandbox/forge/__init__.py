"""The local forge: a GitHub stand-in on 127.0.0.1 (REST under ``/api/v3``, smart-HTTP git, CI, webhooks).

```python
with running_forge(tmp_path) as forge:
    forge.seed_repository("demo", "chat-app", "examples/chat-app")
    gh = Github(base_url=forge.api_url, auth=Auth.Token(forge.token))
```
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from promptship.sandbox.forge.hooks import Delivery, signature_256
from promptship.sandbox.forge.server import CI_CHECK_NAME, CI_STATUS_CONTEXT, CIRun, Forge, LoggedRequest

__all__ = [
    "CI_CHECK_NAME",
    "CI_STATUS_CONTEXT",
    "CIRun",
    "Delivery",
    "Forge",
    "LoggedRequest",
    "running_forge",
    "signature_256",
]


@contextmanager
def running_forge(
    root: str | Path,
    *,
    port: int = 0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    run_ci: bool = True,
    owner_login: str = "demo",
) -> Iterator[Forge]:
    """Start a forge on 127.0.0.1 (a free port unless ``port``), stop it when the block ends."""
    forge = Forge(
        Path(root),
        port=port,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        run_ci=run_ci,
        owner_login=owner_login,
    )
    try:
        yield forge
    finally:
        forge.close()
