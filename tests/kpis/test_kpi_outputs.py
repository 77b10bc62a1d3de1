"""KPIs where people look: the CLI's JSON, Prometheus text, and the scheduled report's artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from promptship.kpi_outputs import kpis_from_store, prometheus_text
from promptship.settings import Settings
from promptship.wiring import build_store
from tests.domain.test_kpi import recorded_runs

REQUIRED = {
    "runs",
    "compile_rate",
    "first_pass_ci_rate",
    "deploy_success_rate",
    "cloud_cost_today",
    "cost_per_merged_pr",
    "lead_time_median_s",
    "go_no_go",
}


def _seed_store(home: Path, shift: timedelta) -> None:
    store = build_store(Settings(home=home))
    for report, steps in recorded_runs():
        moved = [
            s.model_copy(update={"started_at": s.started_at + shift, "ended_at": s.ended_at + shift}) for s in steps
        ]
        moved_report = report.model_copy(
            update={"started_at": report.started_at + shift, "ended_at": report.ended_at + shift, "steps": tuple(moved)}
        )
        for s in moved:
            store.record_step(s)
            store.record_step(s)  # written twice, as a retried task would: counted once
        store.record_run(moved_report)


@pytest.fixture
def seeded_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    # move the recorded runs so that the last one started "today"
    shift = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) - datetime(
        2026, 11, 21, 9, 0, tzinfo=UTC
    )
    if datetime.now(UTC).hour < 10:
        shift -= timedelta(days=1)
    _seed_store(home, shift)
    return home


def test_cli_kpis_json_has_the_contract_keys(seeded_home: Path):
    out = subprocess.run(
        [sys.executable, "-m", "promptship.cli", "kpis", "--json"],
        env={"PROMPTSHIP_HOME": str(seeded_home), "PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert REQUIRED <= set(data)
    assert data["runs"] == 4
    assert data["compile_rate"] == 0.75
    assert data["go_no_go"]["compile_rate"] == {
        "name": "code that compiles",
        "value": 0.75,
        "target": 0.8,
        "comparison": "gt",
        "unit": "ratio",
        "verdict": "no-go",
    }


def test_prometheus_text_parses(seeded_home: Path):
    settings = Settings(home=seeded_home)
    report, _ = kpis_from_store(build_store(settings), settings)
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(report).decode())}
    assert families["promptship_runs"].samples[0].value == 4
    assert families["promptship_compile_rate"].samples[0].value == 0.75
    cost = {s.labels["mode"]: s.value for s in families["promptship_llm_cost_usd"].samples}
    assert cost["cloud"] == pytest.approx(15.10)
    verdicts = {s.labels["threshold"]: s.value for s in families["promptship_go_no_go"].samples}
    assert verdicts["v2_valid_code"] == 1 and verdicts["compile_rate"] == 0


@pytest.mark.flow
def test_kpi_report_flow_publishes_an_artifact_with_charts(seeded_home: Path, prefect_harness, monkeypatch):
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.kpi_report import kpi_report

    monkeypatch.setenv("PROMPTSHIP_HOME", str(seeded_home))
    result = kpi_report(days=30)
    assert result["runs"] == 4

    async def latest() -> str:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["promptship-kpis"]))
            )
            return arts[-1].data  # type: ignore[return-value]

    data = asyncio.run(latest())
    assert "Go / no-go" in data and data.count("data:image/png;base64,") == 2
