from __future__ import annotations

from collections.abc import Iterator

import pytest

from promptship_sandbox.llm_server import LLMStandIn, running_llm_stand_in


@pytest.fixture(scope="session")
def scanner():
    """The real sensitive-data scanner (rules + detect-secrets + presidio), built once (~1 s)."""
    from promptship.adapters.detectors import SensitiveDataScanner

    with SensitiveDataScanner() as s:
        yield s


@pytest.fixture
def llm() -> Iterator[LLMStandIn]:
    with running_llm_stand_in() as stand_in:
        yield stand_in
