"""`promptship reliability` (the kill campaign). Dead runs are resumed by `promptship sweep` (commands/run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command()
    def reliability(
        quick: Annotated[
            bool, typer.Option(help="A subset of the kill points (≤ 3 min; part of `make test`).")
        ] = False,
        soak: Annotated[bool, typer.Option(help="Then 50 sequential and 10 concurrent requests.")] = False,
        points: Annotated[
            str | None, typer.Option(help="Comma-separated kill points to run instead of the campaign's list.")
        ] = None,
        work: Annotated[
            Path | None, typer.Option(help="Directory for the processes' logs and the fakes (default: a new temp dir).")
        ] = None,
        faults: Annotated[
            bool,
            typer.Option(
                help="Parts 3 and 3b: the fault cases at the boundaries and the whole runs under faults "
                "(the fault proxy); --no-faults skips both."
            ),
        ] = True,
    ) -> None:
        """Kill runs at every named kill point on a real Prefect server, deployment and process worker, recover
        them (resume --force, the sweeper, Prefect's retry) and compare every side effect with an
        uninterrupted run; then break each boundary (forge REST and git, the LLM behind the gateway, the gateway
        service, the health URL; in the full run also the kube-apiserver and the OpenHands agent-server) through a
        fault proxy, connection refusals and unresolvable names included. Prints one table per part and the
        summary line; exits 1 on a duplicate, a lost run, a kill point that never fired or a fault case that failed.
        """
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship reliability")
        from promptship_sandbox.reliability.campaign import run_campaign

        chosen = [p.strip() for p in points.split(",") if p.strip()] if points else None
        raise typer.Exit(run_campaign(quick=quick, soak=soak, points=chosen, echo=typer.echo, work=work, faults=faults))
