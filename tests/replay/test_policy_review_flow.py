"""The policy-review flow publishes its markdown artifact (replays, outcome table, chart) under Prefect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from promptship.settings import Settings
from promptship.store.ledger import CostLedger
from promptship.wiring import build_store
from tests.replay.history import WEEKS_1_2, write_month

pytestmark = pytest.mark.flow


def test_policy_review_publishes_replays_outcomes_and_a_chart(prefect_harness, tmp_path: Path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.policy_review import policy_review

    policy = tmp_path / "in-force.yaml"
    policy.write_text(WEEKS_1_2.to_yaml(), encoding="utf-8")
    monkeypatch.setenv("PROMPTSHIP_LLM__POLICY_FILE", str(policy))
    store = build_store(Settings())
    month = write_month(store, CostLedger(store.engine))

    result = policy_review(days=3650, success_floor=0.8)
    assert result["self_check"] == "ok" and result["calls"] == len(month.calls)
    assert result["suggested_classes"]["tests"] == "mistral" and result["suggested_classes"]["complex_code"] == "gpt-4o"

    async def latest() -> str:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["promptship-policy-review"]))
            )
            return arts[-1].data  # type: ignore[return-value]

    data = asyncio.run(latest())
    assert "Replay under the recording policies (self-check)" in data and "- self-check: ok" in data
    assert "Replay under the suggestion" in data and "tests × gpt-4o → mistral" in data
    assert "| tests | mistral | 30 | 29/30 [" in data
    assert data.count("data:image/png;base64,") == 1 and "tests: mistral" in data
