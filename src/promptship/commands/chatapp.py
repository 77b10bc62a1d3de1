"""`promptship chatapp serve`: try the seed chat app (examples/chat-app) locally in a browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    chatapp = typer.Typer(help="The seed chat app (examples/chat-app), run locally.", no_args_is_help=True)
    app.add_typer(chatapp, name="chatapp")

    @chatapp.command("serve")
    def serve(
        port: Annotated[int, typer.Option(help="Port of the UI on 127.0.0.1 (0: a free one).")] = 0,
        llm_base_url: Annotated[
            str,
            typer.Option(
                help="An OpenAI-compatible endpoint (…/v1). Default: the LLM stand-in, which echoes. "
                "Its key, if any, is read from $LLM_API_KEY (never an option)."
            ),
        ] = "",
        model: Annotated[str, typer.Option(help="LLM_MODEL for the backend.")] = "chat-model",
    ) -> None:
        """Start the backend (`python -m app`) and the built UI with its /chat proxy; print the URL; run
        until Ctrl-C. Needs `make chatapp-deps` for the UI build."""
        import contextlib
        import os
        import tempfile

        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship chatapp serve")
        from promptship_sandbox.chatapp import FRONTEND_DIST, running_backend, serving_frontend
        from promptship_sandbox.stopping import wait_until_stopped

        if not (FRONTEND_DIST / "index.html").exists():
            typer.echo(f"chatapp serve: no UI build in {FRONTEND_DIST}; run `make chatapp-deps` first", err=True)
            raise typer.Exit(1)
        with contextlib.ExitStack() as stack:
            base = llm_base_url
            if not base:
                from promptship_sandbox.llm_server import running_llm_stand_in

                base = f"{stack.enter_context(running_llm_stand_in()).base_url}/v1"
                typer.echo(f"LLM stand-in (echoes each message): {base}")
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatapp-")))
            try:
                backend = stack.enter_context(
                    running_backend(base, logs, model=model, api_key=os.environ.get("LLM_API_KEY"))
                )
            except (OSError, TimeoutError) as exc:
                typer.echo(f"chatapp serve: the backend did not start: {exc}", err=True)
                raise typer.Exit(1) from None
            frontend = stack.enter_context(serving_frontend(backend.url, port=port))
            typer.echo(f"backend: {backend.url}  (log: {backend.log_path})")
            typer.echo(f"chat UI: {frontend.url}  — Ctrl-C stops everything")
            if not wait_until_stopped(lambda: backend.process.poll() is None):
                typer.echo(f"chatapp serve: the backend exited with {backend.process.returncode}", err=True)
