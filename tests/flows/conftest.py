"""Flow tests: the real dev_cycle flow on a real (temporary) Prefect server, with scripted in-process fakes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from promptship.settings import Settings
from promptship.wiring import Ports, installed


@pytest.fixture
def make_services(tmp_path: Path, prefect_harness: None) -> Iterator[Callable[..., Ports]]:
    """Build and install a Ports of fakes (overridable per port) with a real SQLite store."""
    from promptship_sandbox.fakes import fake_services

    stack: list = []

    def build(**overrides: object) -> Ports:
        settings = Settings(home=tmp_path / "home")
        settings.health.url = "http://127.0.0.1:9/health"
        services = fake_services(settings, **overrides)
        cm = installed(services)
        cm.__enter__()
        stack.append(cm)
        return services

    yield build
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
