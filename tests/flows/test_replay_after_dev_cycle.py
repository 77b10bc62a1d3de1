"""A real dev_cycle (fake agent, code host and cluster; the real LiteLLMGateway through LiteLLM to the LLM
stand-in; the real store) and then `promptship replay --json`: the self-check is ok, costs equal, nothing moved."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.dev_cycle import dev_cycle
from promptship.adapters.detectors import SensitiveDataScanner
from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
from promptship.cli import app
from promptship.domain.request import DevRequest
from promptship.domain.routing import RoutingPolicy
from promptship.settings import Settings
from promptship.store import make_engine
from promptship.store.ledger import CostLedger
from promptship_sandbox.llm_server import running_llm_stand_in

pytestmark = pytest.mark.flow


def test_replay_of_a_real_dev_cycle_is_exact(make_services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"  # where make_services keeps its store
    monkeypatch.setenv("PROMPTSHIP_HOME", str(home))
    with running_llm_stand_in() as llm, SensitiveDataScanner(layers=("rules",)) as scanner:
        ledger = CostLedger(make_engine(Settings(home=home).store_url()))
        ledger.create_schema()
        gateway = LiteLLMGateway(
            policy=RoutingPolicy.default(),
            scanner=scanner,
            ledger=ledger,
            endpoints=ProviderEndpoints(
                ollama_base_url=llm.base_url,
                openrouter_base_url=llm.base_url + "/v1",
                openrouter_api_key=SecretStr("sk-or-v1-" + "0" * 64),
            ),
            gateway_url="http://127.0.0.1:9",
            sleep=lambda _s: None,
        )
        make_services(llm=gateway)
        report = dev_cycle(
            DevRequest(prompt=f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})", auto_merge=True)
        )
        assert report.outcome == "deployed"
        recorded = ledger.totals("model")
        assert recorded  # the PR text went through the gateway

    result = CliRunner().invoke(app, ["replay", "--json"])
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.stdout)
    assert replayed["self_check"] == "ok", replayed["self_check_detail"]
    assert replayed["calls"] == 1 and replayed["unknowable"] == {}
    assert replayed["cost_recorded_usd"] == replayed["cost_replayed_usd"] == pytest.approx(sum(recorded.values()))
    assert (replayed["moved_to_cloud"], replayed["moved_to_local"], replayed["models_changed"]) == (0, 0, 0)
