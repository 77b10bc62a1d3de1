"""Red CI → the repair instruction carries a local model's summary of the failing log beside the raw log tail.

The real flow with scripted code host and agent, and the real ``LiteLLMGateway`` (policy
``deployments/routing-llamacpp.yaml``: caller ``summarize_ci_log`` → group ``smollm2``). The fast tests put the
LLM stand-in where llama.cpp and Ollama would be; the ``localmodel`` test uses the real model. The CI log is
a real failing pytest run's output."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from flows.dev_cycle import dev_cycle
from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
from promptship.domain.request import DevRequest
from promptship.domain.routing import RoutingPolicy
from promptship.store.ledger import LLMCallRow
from promptship_sandbox.fakes import FakeCodeHost
from promptship_sandbox.llm_server import LLMStandIn, running_llm_stand_in
from promptship_sandbox.local_model import POLICY_FILE, LocalModelServer, local_model_settings
from tests.gateway.helpers import OPENROUTER_TEST_KEY, make_ledger

pytestmark = pytest.mark.flow

ALIAS = "smollm2-135m-instruct"  # the llama.cpp server's model alias (deployments/routing-llamacpp.yaml)
SUMMARY_HEADING = "## Summary of the failure (a hint)"


@pytest.fixture(scope="module")
def pytest_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The output of a real failing pytest run."""
    work = tmp_path_factory.mktemp("red-ci")
    (work / "test_pricing.py").write_text(
        "def total_price(items):\n"
        "    return sum(price for _name, price in items) - 1\n\n\n"
        "def test_total_price_sums_the_items():\n"
        "    assert total_price([('tea', 3), ('cake', 4)]) == 7\n\n\n"
        "def test_empty_basket_costs_nothing():\n"
        "    assert total_price([]) == 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_pricing.py"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    return run.stdout


@pytest.fixture
def stand_in() -> Iterator[LLMStandIn]:
    with running_llm_stand_in() as llm:
        yield llm


@pytest.fixture(scope="module")
def scanner() -> Iterator[Any]:
    from promptship.adapters.detectors import SensitiveDataScanner

    with SensitiveDataScanner() as s:
        yield s


def _gateway(scanner: Any, tmp_path: Path, **kw: Any) -> LiteLLMGateway:
    base = kw.pop("base_url")
    return LiteLLMGateway(
        policy=RoutingPolicy.from_yaml(POLICY_FILE.read_text()),
        scanner=scanner,
        ledger=make_ledger(tmp_path),
        endpoints=ProviderEndpoints(
            ollama_base_url=kw.pop("ollama_base_url", base),
            openrouter_base_url=base + "/v1",
            openrouter_api_key=SecretStr(OPENROUTER_TEST_KEY),
            llamacpp_base_url=kw.pop("llamacpp_base_url", base + "/v1"),
        ),
        gateway_url="http://127.0.0.1:9",
        sleep=lambda _s: None,
        **kw,
    )


def _ledger_rows(gateway: LiteLLMGateway, attempt_id: str) -> list[Any]:
    with gateway.ledger.engine.connect() as conn:
        return conn.execute(select(LLMCallRow.__table__).where(LLMCallRow.run_key == attempt_id)).all()


def _red_then_green(make_services: Callable[..., Any], gateway: Any, log: str, **request: Any) -> tuple[Any, Any]:
    services = make_services(llm=gateway, code_host=FakeCodeHost(ci=["failed", "passed"], failure_log=log))
    prompt = f"Add GET /version returning the commit SHA ({uuid.uuid4().hex[:8]})"
    report = dev_cycle(DevRequest(prompt=prompt, auto_merge=True, **request))
    return services, report


def _repair_instruction(services: Any) -> str:
    [conversation] = services.agent.conversations.values()
    return conversation["instructions"][-1]


def _repair_detail(services: Any, run_key: str) -> str:
    [record] = [s for s in services.sink.steps(run_key) if s.step == "repair#1"]
    return str(record.detail["ci_summary"])


@pytest.mark.gateway
def test_the_repair_instruction_has_the_local_summary_and_the_raw_tail(
    make_services, stand_in: LLMStandIn, scanner, tmp_path: Path, pytest_log: str
) -> None:
    gateway = _gateway(scanner, tmp_path, base_url=stand_in.base_url)
    stand_in.script(ALIAS, ["test_total_price_sums_the_items failed: assert 6 == 7."])
    services, report = _red_then_green(make_services, gateway, pytest_log)

    assert report.outcome == "deployed"
    instruction = _repair_instruction(services)
    assert SUMMARY_HEADING in instruction and "(smollm2)" in instruction
    assert "test_total_price_sums_the_items failed: assert 6 == 7." in instruction
    assert "2 failed in" in instruction  # the raw tail is still there, after the summary
    assert instruction.index(SUMMARY_HEADING) < instruction.index("## Failing checks")
    [asked] = stand_in.completions(ALIAS)
    assert asked.contains("test_total_price_sums_the_items") and asked.contains("2 failed in")
    rows = [r for r in _ledger_rows(gateway, report.attempt_id) if r.step == "summarize_ci_log"]
    assert [(r.model, r.mode) for r in rows] == [("smollm2", "local")]
    assert rows[0].prompt_tokens > 0 and rows[0].completion_tokens > 0
    assert "caller summarize_ci_log's local group smollm2" in rows[0].route_reason
    assert _repair_detail(services, report.run_key) == "summarized by smollm2 (local)"


@pytest.mark.gateway
def test_a_failed_summary_call_leaves_the_raw_tail_only(
    make_services, stand_in: LLMStandIn, scanner, tmp_path: Path, pytest_log: str
) -> None:
    """No llama.cpp server and no Ollama answering: every local group fails, the repair goes on."""
    gateway = _gateway(
        scanner, tmp_path, base_url=stand_in.base_url, llamacpp_base_url=None, ollama_base_url="http://127.0.0.1:9"
    )
    services, report = _red_then_green(make_services, gateway, pytest_log)

    assert report.outcome == "deployed"
    instruction = _repair_instruction(services)
    assert SUMMARY_HEADING not in instruction
    assert "2 failed in" in instruction and "assert 6 == 7" in instruction
    assert [r.step for r in _ledger_rows(gateway, report.attempt_id) if r.step == "summarize_ci_log"] == []
    assert _repair_detail(services, report.run_key).startswith("not summarized (LLMError")


@pytest.mark.gateway
def test_a_summary_the_gateway_refuses_leaves_the_raw_tail_only(
    make_services, stand_in: LLMStandIn, scanner, tmp_path: Path, pytest_log: str
) -> None:
    """No local model is up: the always-local summary call is refused (never sent to the cloud)."""
    gateway = _gateway(scanner, tmp_path, base_url=stand_in.base_url, local_available=False)
    services, report = _red_then_green(make_services, gateway, pytest_log)

    assert report.outcome == "deployed"
    instruction = _repair_instruction(services)
    assert SUMMARY_HEADING not in instruction and "assert 6 == 7" in instruction
    assert not any(r.contains("2 failed in") for r in stand_in.completions())  # the log left nowhere
    assert _repair_detail(services, report.run_key).startswith("not summarized (SensitiveDataBlocked")


@pytest.mark.localmodel
def test_the_real_local_model_summarizes_a_real_pytest_log(
    make_services, local_model: LocalModelServer, stand_in: LLMStandIn, tmp_path: Path, pytest_log: str
) -> None:
    from promptship.settings import Settings
    from promptship.wiring import build_llm_gateway

    settings = local_model_settings(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"), local_model)
    # "the cloud" (the PR text, docs class) is the stand-in, so that the real model's time goes to the summary
    cloud = {"openrouter_base_url": stand_in.base_url + "/v1", "openrouter_api_key": SecretStr(OPENROUTER_TEST_KEY)}
    gateway = build_llm_gateway(settings.model_copy(update={"llm": settings.llm.model_copy(update=cloud)}))
    services, report = _red_then_green(make_services, gateway, pytest_log)

    assert report.outcome == "deployed"
    instruction = _repair_instruction(services)
    assert SUMMARY_HEADING in instruction and "(smollm2)" in instruction, _repair_detail(services, report.run_key)
    summary = instruction.split(SUMMARY_HEADING, 1)[1].split("## Failing checks", 1)[0]
    written = summary.split("check the summary against them.", 1)[1].strip()
    assert written, "the real model's summary is empty"
    assert "2 failed in" in instruction  # the raw tail stays beside it
    [row] = [r for r in _ledger_rows(gateway, report.attempt_id) if r.step == "summarize_ci_log"]
    assert (row.model, row.mode) == ("smollm2", "local")
    assert row.prompt_tokens > 0 and row.completion_tokens > 0 and (row.latency_ms or 0) > 0
