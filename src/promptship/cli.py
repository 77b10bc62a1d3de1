"""The ``promptship`` command. Each area registers its sub-commands from ``promptship.commands.<area>``;
imports of heavy libraries (Prefect, LiteLLM) happen inside the commands, so ``--help`` stays fast."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="promptship: from a request to a verified deployment.", no_args_is_help=True)

# One module per area; each defines ``register(app: typer.Typer) -> None``.
AREAS = ("run", "gateway", "github", "cluster", "agent", "kpis", "chatapp", "settings", "policy", "reliability")


@app.callback()
def main() -> None:
    """promptship: from a development request to a verified deployment with AI agents."""


@app.command()
def version() -> None:
    """Print promptship's version."""
    from promptship import __version__

    typer.echo(__version__)


for _area in AREAS:
    importlib.import_module(f"promptship.commands.{_area}").register(app)


if __name__ == "__main__":
    app()
