"""The local forge: a GitHub stand-in on 127.0.0.1 (REST under ``/api/v3``, smart-HTTP git, CI, webhooks).

```python
with running_forge(tmp_path) as forge:
    forge.seed_repository("demo", "chat-app", "examples/chat-app")
    gh = forge_github(forge)
```
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from promptship_sandbox.forge.hooks import Delivery, signature_256
from promptship_sandbox.forge.server import CI_CHECK_NAME, CI_STATUS_CONTEXT, CIRun, Forge, LoggedRequest

if TYPE_CHECKING:
    from github import Github

    from promptship.adapters.github import GitHubHost
    from promptship.ports import CIWakeups, Clock

__all__ = [
    "CI_CHECK_NAME",
    "CI_STATUS_CONTEXT",
    "CIRun",
    "Delivery",
    "Forge",
    "LoggedRequest",
    "demo_code_host",
    "forge_github",
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
    ci_workers: int = 1,
    reuse_builds: bool = False,
) -> Iterator[Forge]:
    """Start a forge on 127.0.0.1 (a free port unless ``port``), stop it when the block ends. ``reuse_builds``:
    a commit is tested once (``Forge.seed_repositories`` gives several repositories one seed commit)."""
    forge = Forge(
        Path(root),
        port=port,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        run_ci=run_ci,
        owner_login=owner_login,
        ci_workers=ci_workers,
        reuse_builds=reuse_builds,
    )
    try:
        yield forge
    finally:
        forge.close()


def forge_github(forge: Forge, token: str | None = None) -> Github:
    """PyGithub pointed at the forge (as ``token``, default the forge's admin token), with no client-side
    throttling or retries: the forge answers at once and the adapters honour Retry-After themselves."""
    from github import Auth, Github

    return Github(
        base_url=forge.api_url,
        auth=Auth.Token(token or forge.token),
        seconds_between_requests=0,
        seconds_between_writes=0,
        retry=None,
    )


def demo_code_host(
    forge: Forge,
    *,
    source_dir: str | Path | None = None,
    repository: str = "demo/chat-app",
    clock: Clock | None = None,
    wakeups: CIWakeups | None = None,
    ci_timeout_s: float = 900.0,
) -> GitHubHost:
    """Seed ``repository`` from ``examples/chat-app`` (unless it exists), wait for its first CI build (which
    publishes the initial images), and return a ``GitHubHost`` talking to the forge through PyGithub.

    ``clock`` / ``wakeups``: passed to the adapter (tests: a recording clock; demo: ``InProcessCIWakeups``
    fed by a webhook receiver the forge posts to).
    """
    from pydantic import SecretStr

    from promptship.adapters.github import GitHubHost
    from promptship.domain.ci import Backoff

    owner, name = repository.split("/", 1)
    source = Path(source_dir) if source_dir else Path(__file__).resolve().parents[4] / "examples" / "chat-app"
    if not forge.has_repository(owner, name):
        forge.seed_repository(owner, name, source)
        if not forge.wait_idle(ci_timeout_s):
            raise TimeoutError(f"the forge's first CI build of {repository} took longer than {ci_timeout_s:.0f} s")
    return GitHubHost(
        forge_github(forge),
        token=SecretStr(forge.token),
        clock=clock,
        wakeups=wakeups,
        backoff=Backoff(initial_s=0.5, factor=1.5, max_s=3.0),
    )
