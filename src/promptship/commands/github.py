"""`promptship` sub-commands of the github area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    _register_webhook(app)
    _register_forge(app)


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
        from promptship.ports import Starter
        from promptship.servers.webhook import (
            PrefectDeploymentStarter,
            PrefectEventStarter,
            create_app,
            listening_socket,
        )
        from promptship.settings import Settings
        from promptship.store.webhooks import StoreCIWakeups, WebhookDeliveries, webhook_engine

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
        chosen: Starter = (
            PrefectEventStarter()
            if starter == "event"
            else PrefectDeploymentStarter(
                deployment,
                per_repository_limit=settings.runs.per_repository_limit,
                global_limit=settings.runs.global_limit,
            )
        )

        commenter = None
        try:
            from promptship.wiring import process_ports

            commenter = process_ports().code_host
        except ConfigError as exc:
            typer.echo(f"note: no code host wired ({exc}); refused requesters get no comment", err=True)

        engine = webhook_engine(settings.store_url())
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
        sock = listening_socket(host, port)  # TCP_NODELAY: answers in milliseconds, not after a delayed ACK
        uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False)).run(sockets=[sock])


def _register_forge(app: typer.Typer) -> None:
    forge = typer.Typer(help="The local GitHub forge (sandbox).", no_args_is_help=True)
    app.add_typer(forge, name="forge")

    @forge.command("serve")
    def forge_serve(
        port: int = typer.Option(8089, help="Port on 127.0.0.1 (0: a free one)."),
        root: str = typer.Option(".promptship/forge", help="Directory of the bare repositories and the registry."),
        seed: list[str] | None = typer.Option(  # noqa: B008 - typer declares options in defaults
            None,
            help="owner/name=DIR: create a repository from a directory (repeatable), e.g. "
            "demo/chat-app=examples/chat-app.",
        ),
        webhook_url: str = typer.Option(
            "", help="Send signed webhooks here (secret: PROMPTSHIP_GITHUB_WEBHOOK_SECRET)."
        ),
        no_ci: bool = typer.Option(False, help="Do not run `make test` on pushes."),
    ) -> None:
        """Serve the GitHub REST API under /api/v3 and smart-HTTP git on 127.0.0.1. The owner's token is
        PROMPTSHIP_GITHUB__TOKEN when set (so promptship can use it), else a new one written to ROOT/token."""
        import os
        from pathlib import Path

        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship forge serve")
        from promptship_sandbox.forge import Forge
        from promptship_sandbox.stopping import wait_until_stopped

        secret = os.environ.get("PROMPTSHIP_GITHUB_WEBHOOK_SECRET") or None
        if webhook_url and not secret:
            typer.echo("--webhook-url needs PROMPTSHIP_GITHUB_WEBHOOK_SECRET (the receiver's secret)", err=True)
            raise typer.Exit(2)
        root_dir = Path(root).resolve()
        f = Forge(
            root_dir,
            port=port,
            webhook_url=webhook_url or None,
            webhook_secret=secret,
            run_ci=not no_ci,
            token=os.environ.get("PROMPTSHIP_GITHUB__TOKEN") or None,
            request_log_limit=2000,
        )
        token_file = root_dir / "token"
        token_file.write_text(f.token + "\n")
        token_file.chmod(0o600)
        for item in seed or []:
            name, _, directory = item.partition("=")
            owner, _, repo = name.partition("/")
            if not (owner and repo and directory):
                typer.echo(f"--seed {item!r}: expected owner/name=DIR", err=True)
                raise typer.Exit(2)
            if f.has_repository(owner, repo):
                typer.echo(f"{owner}/{repo} exists already in {root_dir}: not seeded again")
            else:
                f.seed_repository(owner, repo, directory)
                typer.echo(f"seeded {owner}/{repo} from {directory}")
        typer.echo(f"forge API  {f.api_url}   (PROMPTSHIP_GITHUB__API_URL)")
        typer.echo(f"git        {f.web_url}/OWNER/NAME.git")
        typer.echo(f"token      in {token_file}")
        try:
            wait_until_stopped()
        finally:
            f.close()
