"""`promptship` sub-commands of the agent area."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    agent = typer.Typer(help="The code agent (OpenHands agent-server) and the compile check.", no_args_is_help=True)
    app.add_typer(agent, name="agent")

    @agent.command("compile-check")
    def compile_check(
        workspace: str = typer.Argument(..., help="A checkout to check."),
        changed: Annotated[
            list[str] | None, typer.Option("--changed", help="Changed files to import; repeatable.")
        ] = None,
        timeout_s: float = typer.Option(120.0, help="Most the check may take."),
    ) -> None:
        """Byte-compile + import (or the repository's `make build`); exit 1 when it does not compile."""
        from promptship.adapters.compile_check import WorkspaceCompileChecker

        result = WorkspaceCompileChecker(timeout_s=timeout_s).check(workspace, tuple(changed or ()))
        typer.echo(result.model_dump_json(indent=2))
        raise typer.Exit(0 if result.compiled else 1)

    @agent.command("conventions")
    def conventions(workspace: str = typer.Argument(..., help="A checkout to read.")) -> None:
        """What the agent is told about a repository: test and build command, manifests, test directories."""
        from promptship.adapters.compile_check import inspect_repository

        typer.echo(inspect_repository(workspace).model_dump_json(indent=2))

    @agent.command("status")
    def status() -> None:
        """Is the agent-server at PROMPTSHIP_OPENHANDS__URL up (and does it accept our session key)?"""
        from promptship.errors import AgentError
        from promptship.settings import Settings

        settings = Settings()
        import httpx

        headers = {}
        if settings.openhands.session_api_key is not None:
            headers["X-Session-API-Key"] = settings.openhands.session_api_key.get_secret_value()
        try:
            with httpx.Client(base_url=settings.openhands.url, timeout=5, headers=headers) as http:
                health = http.get("/health")
                count = http.get("/api/conversations/count")
        except httpx.HTTPError as exc:
            raise AgentError(f"agent-server at {settings.openhands.url} unreachable: {type(exc).__name__}") from None
        auth = {200: "accepted", 401: "REFUSED (set PROMPTSHIP_OPENHANDS__SESSION_API_KEY)"}.get(
            count.status_code, f"HTTP {count.status_code}"
        )
        typer.echo(f"{settings.openhands.url}: health HTTP {health.status_code}, session key {auth}")
        if count.status_code == 200:
            typer.echo(f"conversations: {count.text.strip()}")
