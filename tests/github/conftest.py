"""The local forge on 127.0.0.1, PyGithub pointed at it, and a GitHubHost with a clock that records waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from github import Github
from pydantic import SecretStr

from promptship.adapters.github import GitHubHost
from promptship.domain.ci import Backoff
from promptship_sandbox.forge import Forge, forge_github, running_forge

OWNER, NAME = "demo", "app"
REPO = f"{OWNER}/{NAME}"

# `make test` fails while a file named BROKEN exists, printing a recognisable line into the job log.
MAKEFILE = """\
test:
\t@echo "running the app's tests with $(PYTHON)"
\t@if [ -f BROKEN ]; then echo "FAILED test_chat: $$(cat BROKEN)"; exit 1; fi
\t@echo "1 passed"
"""


@dataclass
class RecordingClock:
    """Virtual time: ``sleep`` advances it at once (plus a small real pause so the forge's CI can progress)
    and records every wait."""

    real_pause_s: float = 0.02
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        time.sleep(self.real_pause_s)


def make_source(root: Path) -> Path:
    src = root / "seed-src"
    (src / "backend").mkdir(parents=True)
    (src / "Makefile").write_text(MAKEFILE)
    (src / "README.md").write_text("# app\n\nline one\nline two\n")
    (src / "backend" / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python", "-m", "app"]\n')
    (src / "backend" / "app.py").write_text("print('hello')\n")
    return src


def client(forge: Forge, token: str | None = None) -> Github:
    return forge_github(forge, token)


def make_host(forge: Forge, clock: RecordingClock, **kwargs: object) -> GitHubHost:
    return GitHubHost(
        client(forge),
        token=SecretStr(forge.token),
        clock=clock,
        backoff=Backoff(initial_s=1.0, factor=1.5, max_s=5.0),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[Forge]:
    with running_forge(tmp_path / "forge") as f:
        f.seed_repository(OWNER, NAME, make_source(tmp_path))
        assert f.wait_idle(120)
        yield f


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
def host(forge: Forge, clock: RecordingClock) -> GitHubHost:
    return make_host(forge, clock)
