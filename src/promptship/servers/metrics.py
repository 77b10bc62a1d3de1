"""`/metrics`: the KPIs in Prometheus' text format, computed from the store on each scrape."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promptship.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_endpoint(settings: Settings):  # type: ignore[no-untyped-def]
    """An endpoint function serving the KPIs (mountable on any Starlette/FastAPI app)."""
    from promptship.kpi_outputs import kpis_from_store, prometheus_text
    from promptship.wiring import build_store

    store = build_store(settings)

    async def endpoint(_request: Request) -> Response:
        report, _ = kpis_from_store(store, settings)
        return Response(prometheus_text(report), media_type=CONTENT_TYPE)

    return endpoint


def create_metrics_app(settings: Settings) -> Starlette:
    """A small app with only ``GET /metrics``."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(settings), methods=["GET"])])
