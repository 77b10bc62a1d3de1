"""The one check before product code imports the sandbox (``promptship_sandbox``, distribution
``promptship-sandbox``): it is an extra, absent from the product wheel and image, so a command that needs it
says so and names the fix instead of failing with a ModuleNotFoundError."""

from __future__ import annotations

import importlib

import typer

from promptship.errors import ConfigError

SANDBOX_MODULE = "promptship_sandbox"
INSTALL_HINT = "in a checkout run `make install`; elsewhere `pip install 'promptship[sandbox]'`"


def require_sandbox(what: str) -> None:
    """Raise ``ConfigError`` naming ``what`` and the extra when ``promptship_sandbox`` cannot be imported.

    Only the missing package itself is translated: an import error inside the sandbox propagates as is.
    """
    try:
        importlib.import_module(SANDBOX_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != SANDBOX_MODULE:
            raise
        raise ConfigError(
            f"{what} needs the sandbox (package promptship-sandbox, extra 'sandbox'), which is not installed: "
            f"{INSTALL_HINT}"
        ) from None


def sandbox_or_exit(command: str) -> None:
    """``require_sandbox`` for a CLI command: the message on stderr and exit status 2, not a traceback."""
    try:
        require_sandbox(command)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
