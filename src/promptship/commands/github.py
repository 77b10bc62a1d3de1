"""`promptship` sub-commands of the github area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    _register_webhook(app)


def _register_webhook(app: typer.Typer) -> None:
    webhook = typer.Typer(help="The GitHub webhook receiver.", no_args_is_help=True)
    app.add_typer(webhook, name="webhook")

    @webhook.command("serve")
    def webhook_serve(
        host: str = typer.Option("127.0.0.1", help="Address to bind."),
        port: int = typer.Option(8088, help="Port to bind."),
        starter: str = typer.Option(
            "event",
            help="How a run starts: 'event' emits promptship.request (deployment trigger of prefect.yaml), "
            "'deployment' calls run_deployment with the delivery id as idempotency key.",
        ),
        deployment: str = typer.Option("dev-cycle/dev-cycle", help="Deployment started by --starter deployment."),
    ) -> None:
        """Serve POST /github/webhook. The secret comes from PROMPTSHIP_GITHUB_WEBHOOK_SECRET."""
        import logging
        import os

        import uvicorn
        from pydantic import SecretStr

        from promptship.errors import ConfigError
        from promptship.services.webhook import PrefectDeploymentStarter, PrefectEventStarter, Starter, create_app
        from promptship.settings import Settings
        from promptship.store import make_engine
        from promptship.store.webhooks import StoreCIWakeups, WebhookDeliveries

        settings = Settings()
        secret = os.environ.get("PROMPTSHIP_GITHUB_WEBHOOK_SECRET") or (
            settings.github.webhook_secret.get_secret_value() if settings.github.webhook_secret else ""
        )
        if not secret:
            typer.echo(
                "promptship webhook serve: no webhook secret. Set PROMPTSHIP_GITHUB_WEBHOOK_SECRET to the secret "
                "configured on the GitHub webhook; the receiver refuses to run without one.",
                err=True,
            )
            raise typer.Exit(2)
        if starter not in ("event", "deployment"):
            typer.echo(f"--starter must be 'event' or 'deployment', not {starter!r}", err=True)
            raise typer.Exit(2)
        settings.github.webhook_secret = SecretStr(secret)
        chosen: Starter = PrefectEventStarter() if starter == "event" else PrefectDeploymentStarter(deployment)

        commenter = None
        try:
            from promptship.wiring import services

            commenter = services().code_host
        except ConfigError as exc:
            typer.echo(f"note: no code host wired ({exc}); refused requesters get no comment", err=True)

        engine = make_engine(settings.store_url())
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:
            app = create_app(
                settings,
                chosen,
                deliveries=WebhookDeliveries(engine),
                commenter=commenter,
                wakeups=StoreCIWakeups(engine),
            )
        except ConfigError as exc:
            typer.echo(f"promptship webhook serve: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"webhook receiver on http://{host}:{port}/github/webhook (starter: {starter})")
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
