"""`promptship kpis`: the KPIs of the recorded runs, as a table or one JSON object."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command()
    def kpis(
        since: str = typer.Option("", help="Start of the period (YYYY-MM-DD, UTC); default: 30 days ago."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        from_code_host: bool = typer.Option(
            False, "--from-code-host", help="Also read merged PRs from GitHub for the agent-vs-human split."
        ),
    ) -> None:
        """KPIs and the seed's go/no-go from the runs in the store."""
        from promptship.kpi_outputs import kpis_from_store, markdown
        from promptship.settings import Settings
        from promptship.wiring import build_store

        settings = Settings()
        start = None
        if since:
            try:
                start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise typer.BadParameter("--since must be a date like 2026-11-01") from None
        code_host = None
        if from_code_host:
            from promptship.wiring import build_code_host

            code_host = build_code_host(settings)
        report, _facts = kpis_from_store(build_store(settings), settings, since=start, code_host=code_host)
        if as_json:
            typer.echo(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True))
        else:
            typer.echo(markdown(report, {}))

    @app.command("metrics")
    def metrics(
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(9464, help="Port to listen on."),
    ) -> None:
        """Serve the KPIs at /metrics in Prometheus' format (for Grafana)."""
        import uvicorn

        from promptship.servers.metrics import create_metrics_app
        from promptship.settings import Settings

        uvicorn.run(create_metrics_app(Settings()), host=host, port=port, log_level="warning")
