"""`promptship settings-reference`: write, or check, the generated settings reference (docs/SETTINGS.md);
`promptship store-key`: a new key for the prompts the store keeps sealed (PROMPTSHIP_STORE_KEY)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command("settings-reference")
    def settings_reference(
        check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the file is stale.")] = False,
        path: Annotated[Path, typer.Option("--path", help="The reference file.")] = Path("docs/SETTINGS.md"),
    ) -> None:
        """Every setting with its environment variable, old names, type, default and description."""
        from promptship.settings import reference_markdown

        text = reference_markdown()
        if check:
            current = path.read_text(encoding="utf-8") if path.is_file() else None
            if current != text:
                typer.echo(f"{path} is stale: regenerate it with `promptship settings-reference`", err=True)
                raise typer.Exit(1)
            typer.echo(f"{path} is up to date")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {path}")

    @app.command("store-key")
    def store_key() -> None:
        """Print a new key for PROMPTSHIP_STORE_KEY (Fernet): the same value goes to every component of one store."""
        from promptship.store.sealing import PromptCipher

        typer.echo(PromptCipher.new_key())
