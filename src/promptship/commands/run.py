"""`promptship run`, `promptship resume`, `promptship sweep` (waits that are over, then dead runs), `promptship
worker` (the process worker that reports a crash once) and `promptship demo`: the dev cycle from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

# Outcomes that are verdicts; a run that ended "failed" or "cancelled" exits non-zero.
_OK_OUTCOMES = ("deployed", "rolled_back", "stopped", "waiting", "already_done")


def _real_services() -> object:
    """Every port built from settings (PROMPTSHIP_* variables); a ConfigError ends the command with its message."""
    from promptship.errors import ConfigError
    from promptship.settings import Settings
    from promptship.wiring import build_services, install, process_ports

    try:
        settings = Settings()
        # a worker configured with a services factory (the sandbox, the stand-ins) runs its flows on that
        # factory's ports: resuming one of its runs must use the same ports, not real adapters
        services = process_ports() if settings.services_factory else build_services(settings)
    except ConfigError as exc:
        typer.echo(f"configuration: {exc}", err=True)
        raise typer.Exit(2) from exc
    install(services)
    return services


def _print_report(report: object) -> None:
    from promptship.domain.report import RunReport, render_markdown

    assert isinstance(report, RunReport)
    typer.echo(render_markdown(report))
    if report.outcome not in _OK_OUTCOMES:
        raise typer.Exit(1)


def _apply_global_limit(pool: str) -> None:
    """The worker's PROMPTSHIP_RUNS__GLOBAL_LIMIT becomes its pool's concurrency limit (docs/PIPELINE.md "Fair
    under load"); a pool that does not exist yet gets it from the first run a starter routes to it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from promptship.adapters.prefect_queues import apply_pool_limit
    from promptship.settings import Settings

    global_limit = Settings().runs.global_limit
    if global_limit <= 0:
        return
    try:
        with get_client(sync_client=True) as client:
            apply_pool_limit(client, pool, global_limit)
    except ObjectNotFound:
        typer.echo(f"note: work pool {pool!r} does not exist yet; a run routed to it sets its limit", err=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command()
    def run(
        prompt: Annotated[str, typer.Option(help="What the agent should build or change.")],
        repository: Annotated[str, typer.Option(help="owner/name on the configured code host.")] = "demo/chat-app",
        base_branch: Annotated[str, typer.Option(help="Branch to start from and merge into.")] = "main",
        requester: Annotated[str, typer.Option(help="Who asked.")] = "promptship-cli",
        auto_merge: Annotated[bool, typer.Option(help="Squash-merge when CI is green.")] = False,
        budget_usd: Annotated[float, typer.Option(help="Most this run may spend on LLM calls.")] = 2.0,
        sensitive: Annotated[bool, typer.Option(help="Use local models only.")] = False,
        health_url: Annotated[str | None, typer.Option(help="Health URL of the deployed service.")] = None,
        namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "demo",
        deployment: Annotated[str, typer.Option(help="Deployment to roll out.")] = "chat-backend",
        container: Annotated[str, typer.Option(help="Container (and build context) whose image changes.")] = "backend",
    ) -> None:
        """Run one dev cycle (route → code → PR → CI → merge → roll out → health → report) with real services.

        Ports come from PROMPTSHIP_* settings; the run is a Prefect flow run on PREFECT_API_URL (or an
        ephemeral server). Running the same request again finds its earlier work instead of repeating it.
        """
        from pydantic import ValidationError

        from promptship.domain.request import DeployTarget, DevRequest

        try:
            request = DevRequest(
                prompt=prompt,
                repository=repository,
                base_branch=base_branch,
                requester=requester,
                auto_merge=auto_merge,
                budget_usd=budget_usd,
                sensitive=sensitive,
                deploy=DeployTarget(
                    namespace=namespace, deployment=deployment, container=container, health_url=health_url
                ),
            )
        except ValidationError as exc:
            for err in exc.errors():
                typer.echo(f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}", err=True)
            raise typer.Exit(2) from exc
        _real_services()
        from flows.dev_cycle import dev_cycle
        from promptship.wiring import process_ports

        limits = process_ports().limits()
        if limits.per_repository_limit > 0 or limits.global_limit > 0:
            # never silently unlimited: this run is in this process, not in a work queue (docs/PIPELINE.md)
            typer.echo(
                "note: `promptship run` works in this process, outside the work queues: PROMPTSHIP_RUNS__"
                "PER_REPOSITORY_LIMIT / GLOBAL_LIMIT do not hold it back. To have it wait its turn, start it through "
                "the deployment: `prefect deployment run dev-cycle/dev-cycle --param request=...`.",
                err=True,
            )

        # the prompt goes into the store, encrypted; the flow run's parameter is its sealed form
        state = dev_cycle(process_ports().sink.seal(request), return_state=True)
        if not state.is_completed():
            typer.echo(f"run {request.run_key} ended {state.name}: {state.message}", err=True)
            raise typer.Exit(1)
        _print_report(state.result())

    @app.command()
    def resume(
        flow_run_id: Annotated[str, typer.Argument(help="Id of the dev-cycle flow run to continue.")],
        force: Annotated[
            bool, typer.Option(help="Take over a run still marked Running whose process is known to be dead.")
        ] = False,
    ) -> None:
        """Continue a crashed, failed or killed dev-cycle run after its last completed step.

        Reads the run's request from the Prefect API and runs the flow again: finished steps come from the
        result cache (keyed by run key + step), so no branch, PR or rollout is repeated.
        """
        from promptship.errors import InvalidRequest

        _real_services()
        from flows.dev_cycle import resume_dev_cycle

        try:
            report = resume_dev_cycle(flow_run_id, force=force)
        except InvalidRequest as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        _print_report(report)

    @app.command()
    def sweep(
        every: Annotated[
            float, typer.Option(help="Sweep again every this many seconds (0: one round, then exit).", min=0)
        ] = 0.0,
        passes: Annotated[
            int, typer.Option(help="With --every, stop after this many rounds (0: until interrupted).", min=0)
        ] = 0,
    ) -> None:
        """The sweeper: each round resumes, first, suspended dev-cycle runs whose wait is over without a webhook
        (CI final, PR merged or closed, or the wait's deadline passed: the run then ends its wait as timed out),
        then dead runs — Prefect shows them Running, Pending or Crashed, their request's lease expired (the
        process died) — each the way `promptship resume --force` does (flows/sweep.py). Run it next to the
        worker, with the worker's configuration — e.g. `promptship sweep --every 60`; with a webhook receiver the
        first pass only catches what no event announced.

        Exits 2 on a configuration error (or a sink that is not promptship's store), 1 when a dead run could not
        be resumed (after the last round); a suspended run that could not be resumed is reported and tried again
        next round.
        """
        import time

        from promptship.servers.resumer import PrefectRunResumer, sweep_waits
        from promptship.store import Store
        from promptship.wiring import process_ports

        _real_services()
        ports = process_ports()
        store = ports.sink
        if not isinstance(store, Store):
            typer.echo("promptship sweep: the configured sink is not promptship's store", err=True)
            raise typer.Exit(2)
        from flows.sweep import sweep as sweep_dead

        waits = store.waits()
        resumer = PrefectRunResumer(waits)
        failed, rounds = False, 0
        while True:
            result = sweep_waits(waits, resumer, ports.code_host)
            for run_id, why in result.resumed.items():
                typer.echo(f"resumed {run_id} ({why})")
            for run_id, error in result.errors.items():
                typer.echo(f"could not sweep {run_id}: {error}", err=True)
            dead = [s for s in sweep_dead() if s.action not in ("alive", "not_started", "taken_over", "over")]
            for s in dead:
                line = f"{s.flow_run_id} {s.name}: {s.action}" + (f" → {s.outcome}" if s.outcome else "")
                typer.echo(line + (f" ({s.detail})" if s.detail else ""))
            failed = failed or any(s.action == "failed" for s in dead)
            typer.echo(
                f"sweep: {len(result.resumed)} resumed, {len(result.still_waiting)} waiting, "
                f"{len(result.cleared)} cleared; dead runs: {sum(s.action == 'resumed' for s in dead)} resumed, "
                f"{sum(s.action == 'closed' for s in dead)} closed, {sum(s.action == 'failed' for s in dead)} failed"
            )
            rounds += 1
            if not every or (passes and rounds >= passes):
                break
            time.sleep(every)
        if failed:
            raise typer.Exit(1)

    @app.command()
    def worker(
        pool: Annotated[str, typer.Option(help="The work pool (of type process) to run flow runs from.")] = (
            "local-process"
        ),
        name: Annotated[str | None, typer.Option(help="The worker's name (default: a random one).")] = None,
        limit: Annotated[
            int | None, typer.Option(help="Flow runs this worker runs at once (default: no limit).", min=1)
        ] = None,
        run_once: Annotated[bool, typer.Option(help="Take the scheduled runs once, then stop.")] = False,
    ) -> None:
        """`prefect worker start --pool POOL --type process`, with one fix: a crashed flow run is reported
        Crashed once (by Prefect's runner), not a second time onto a retry made in between (docs/RELIABILITY.md,
        finding 3). Run it from the checkout `prefect deploy` was run in."""
        import asyncio
        import os

        from prefect.utilities.processutils import setup_signal_handlers_worker

        from promptship.prefect_worker import serve

        setup_signal_handlers_worker(os.getpid(), "the promptship process worker", typer.echo)
        _apply_global_limit(pool)
        try:
            asyncio.run(serve(pool, name=name, limit=limit, run_once=run_once))
        except (KeyboardInterrupt, asyncio.CancelledError):
            typer.echo("promptship worker stopped")

    @app.command()
    def demo(
        serve: Annotated[
            bool, typer.Option(help="Keep the Prefect server up afterwards and print its UI address.")
        ] = False,
        scenario: Annotated[
            list[str] | None,
            typer.Option(
                help="Run only this scenario (repeatable): deploy, repair, rollback, private, webhook. "
                "Default: all five, concurrently."
            ),
        ] = None,
    ) -> None:
        """The demo's scenarios on 127.0.0.1 with the sandbox, each a request through the `dev-cycle` deployment
        (or the webhook) run by a real process worker; prints each report, a summary table and one
        `scenario=NAME expected=OUTCOME outcome=OUTCOME` line per scenario.

        Exits 0 only when every scenario reached its expected outcome on real adapters.
        """
        from promptship.commands._sandbox import sandbox_or_exit
        from promptship.errors import ConfigError

        sandbox_or_exit("promptship demo")
        from promptship_sandbox.demo import run_demo

        try:
            code = run_demo(serve=serve, echo=typer.echo, scenarios=scenario)
        except ConfigError as exc:
            typer.echo(f"promptship demo: {exc}", err=True)
            raise typer.Exit(2) from exc
        raise typer.Exit(code)
