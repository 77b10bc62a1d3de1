"""The scheduled KPI report: a markdown artifact with the KPI table, the go/no-go and embedded charts."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from promptship.settings import Settings


@task(name="publish_kpis")
def publish_kpis(days: int) -> dict:
    """Compute the KPIs of the last ``days`` days from the store and publish them as an artifact."""
    from datetime import UTC, datetime, timedelta

    from promptship.kpi_outputs import charts, kpis_from_store, markdown
    from promptship.wiring import build_store

    settings = Settings()
    now = datetime.now(UTC)
    report, facts = kpis_from_store(build_store(settings), settings, since=now - timedelta(days=days), now=now)
    create_markdown_artifact(
        markdown=markdown(report, charts(report, facts)),
        key="promptship-kpis",
        description=f"promptship KPIs, last {days} days",
    )
    return report.model_dump(mode="json")


@flow(name="kpi-report")
def kpi_report(days: int = 30) -> dict:
    """Publish the KPI report (table, go/no-go, cost and success-rate charts) of the last ``days`` days."""
    return publish_kpis(days)
