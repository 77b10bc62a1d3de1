"""`promptship` sub-commands of the gateway area."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    _register_routing_commands(app)
    _register_service_commands(app)


def _register_service_commands(app: typer.Typer) -> None:
    """B2's commands: ``promptship gateway serve`` (the OpenAI-compatible gateway service)."""
    gateway_app = typer.Typer(help="The LLM gateway service (policy, gate, budgets, ledger).", no_args_is_help=True)
    app.add_typer(gateway_app, name="gateway")

    @gateway_app.command("serve")
    def serve(
        host: Annotated[
            str, typer.Option(help="Address to bind (keep 127.0.0.1 unless behind a proxy).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 4000,
    ) -> None:
        """Serve /v1/chat/completions (SSE, tool calls) and /v1/models; every request needs a per-run key."""
        import uvicorn

        from promptship.servers.gateway import create_gateway_app, uvicorn_stack
        from promptship.settings import Settings
        from promptship.wiring import build_llm_gateway

        gateway = build_llm_gateway(Settings())
        import litellm  # noqa: F401  # now (3-6 s), not during the first request

        from promptship.servers.webhook import listening_socket

        sock = listening_socket(host, port)  # TCP_NODELAY: no ~40 ms delayed-ACK wait per response
        typer.echo(f"LLM gateway listening on http://{host}:{port}/v1 (uvicorn on {uvicorn_stack()})", err=True)
        config = uvicorn.Config(create_gateway_app(gateway, gateway.ledger), log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])

    @gateway_app.command("key")
    def key(
        caller: Annotated[
            str, typer.Option(help="The caller the key speaks for, as the policy's `callers` names it (e.g. chat).")
        ],
        run_key: Annotated[
            str | None, typer.Option(help="Ledger run its calls are recorded under (default app-<caller>).")
        ] = None,
        budget_usd: Annotated[
            float | None, typer.Option(min=0, help="Cap on what the key may spend in all (default: none).")
        ] = None,
    ) -> None:
        """Mint an app's key for the gateway service (e.g. the chat app's LLM_API_KEY): each of its calls is
        routed by the policy for CALLER and recorded under it. Prints the key once on stdout; only its hash is
        stored."""
        from promptship.errors import ConfigError
        from promptship.settings import Settings
        from promptship.wiring import build_llm_gateway

        settings = Settings()
        gateway = build_llm_gateway(settings)
        try:
            access = gateway.app_access(caller, run_key=run_key, budget_usd=budget_usd)
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        finally:
            close = getattr(gateway.scanner, "close", None)
            if close is not None:
                close()
        group = gateway.policy.callers.get(caller)
        where = f"its local calls go to {group}" if group else "the policy has no `callers` entry for it"
        typer.echo(
            f"key for caller {caller} (ledger run {access.run_key}; {where}); base URL {access.base_url}", err=True
        )
        typer.echo(access.api_key.get_secret_value())

    @gateway_app.command("costs")
    def costs(
        by: Annotated[str, typer.Option(help="Group by step|run|day|repository|model|mode.")] = "day",
        run: Annotated[str | None, typer.Option(help="Only this run key.")] = None,
        day: Annotated[str | None, typer.Option(help="Only this ledger day (YYYY-MM-DD).")] = None,
    ) -> None:
        """What the ledger recorded, in USD and the display currency, and today's cloud spend against its cap."""
        from typing import cast

        from promptship.settings import Settings
        from promptship.store import make_engine
        from promptship.store.ledger import CostLedger, GroupBy

        if by not in ("step", "run", "day", "repository", "model", "mode"):
            typer.echo("--by must be one of step, run, day, repository, model, mode", err=True)
            raise typer.Exit(2)
        settings = Settings()
        ledger = CostLedger(
            make_engine(settings.store_url()),
            timezone=settings.llm.timezone,
            cloud_daily_usd=settings.budget.cloud_daily_usd,
            display_currency=settings.llm.display_currency,
            usd_to_display_rate=settings.llm.usd_to_display_rate,
        )
        ledger.create_schema()
        for key, usd in sorted(ledger.totals(cast(GroupBy, by), run_key=run, day=day).items()):
            typer.echo(f"{key:<40} {usd:>12.6f} USD  {ledger.in_display(usd):>12}")
        missing = ledger.missing_cost_calls(run)
        if missing:
            typer.echo(f"{missing} cloud call(s) reported no cost: counted at list price")
        spent = ledger.day_spend_usd()
        typer.echo(
            f"today ({ledger.today()}, {settings.llm.timezone}): cloud {spent:.4f} USD of "
            f"{settings.budget.cloud_daily_usd:.2f} USD ({ledger.in_display(spent)})"
        )


def _register_routing_commands(app: typer.Typer) -> None:
    """B1's commands: ``promptship classify`` and ``promptship route`` (routing policy + sensitive-data gate)."""

    @app.command()
    def classify(
        jsonl: Annotated[
            Path, typer.Option("--jsonl", exists=True, dir_okay=False, help="JSON Lines with id and text.")
        ],
        rules_only: Annotated[
            bool, typer.Option(help="Only promptship's own rules (fast; no detect-secrets/presidio).")
        ] = False,
    ) -> None:
        """Route every prompt of a JSON Lines file: one JSON line per input on stdout
        ({"id", "sensitive", "task_class", "mode", "model", "reasons"}). Never prints the sensitive data."""
        import json

        from promptship.adapters.detectors import SensitiveDataScanner
        from promptship.domain.routing import decide_route
        from promptship.errors import SensitiveDataBlocked
        from promptship.settings import Settings
        from promptship.wiring import build_routing_policy

        policy = build_routing_policy(Settings())
        scanner = SensitiveDataScanner(layers=("rules",)) if rules_only else SensitiveDataScanner()
        with jsonl.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = str(row["text"])
                except (ValueError, KeyError, TypeError):
                    typer.echo(f"{jsonl}:{number}: not a JSON object with a 'text' field", err=True)
                    raise typer.Exit(2) from None
                gate = scanner.scan(text)
                try:
                    d = decide_route(text, policy=policy, findings=gate)
                    out = {
                        "id": row.get("id", number),
                        "sensitive": d.sensitive,
                        "task_class": d.task_class,
                        "mode": d.mode,
                        "model": d.model,
                        "reasons": [d.reason, *d.findings],
                    }
                except SensitiveDataBlocked as exc:
                    out = {
                        "id": row.get("id", number),
                        "sensitive": True,
                        "task_class": "sensitive",
                        "mode": "local",
                        "model": None,
                        "reasons": [str(exc), *exc.reasons],
                    }
                typer.echo(json.dumps(out, ensure_ascii=False))
        scanner.close()

    @app.command()
    def route(
        prompt: Annotated[str, typer.Argument(help="The prompt to route.")],
        task_class: Annotated[
            str | None, typer.Option(help="State the class: sensitive|complex_code|tests|docs|default.")
        ] = None,
        force_local: Annotated[
            bool, typer.Option(help="Local models only, as for a request marked sensitive.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
        explain: Annotated[
            bool, typer.Option("--explain", help="Also show the outcome evidence (per class × model) behind it.")
        ] = False,
    ) -> None:
        """Explain the routing decision for one prompt: class and rule, findings, model, local/cloud, fallbacks
        (with --explain: the recorded outcomes of this class on each model)."""
        import json
        from typing import cast

        from promptship.adapters.detectors import SensitiveDataScanner
        from promptship.domain.redaction import redact
        from promptship.domain.request import TaskClass
        from promptship.domain.routing import TASK_CLASSES, allowed_fallbacks, decide_route
        from promptship.errors import SensitiveDataBlocked
        from promptship.settings import Settings
        from promptship.wiring import build_routing_policy

        if task_class is not None and task_class not in TASK_CLASSES:
            typer.echo(f"--task-class must be one of {', '.join(TASK_CLASSES)}", err=True)
            raise typer.Exit(2)
        policy = build_routing_policy(Settings())
        with SensitiveDataScanner() as scanner:
            gate = scanner.scan(prompt)
        try:
            d = decide_route(
                prompt,
                policy=policy,
                findings=gate,
                task_class=cast(TaskClass | None, task_class),
                force_local=force_local,
            )
        except SensitiveDataBlocked as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(3) from None
        spec = policy.spec(d.model)
        fallbacks = allowed_fallbacks(policy, d.model, sensitive=d.sensitive)
        evidence: list[dict[str, object]] = []
        if explain:
            from promptship.replay_outputs import outcomes_from_store
            from promptship.wiring import build_store

            rows = outcomes_from_store(build_store(Settings()))
            evidence = [r.model_dump(mode="json") for r in rows if r.task_class == d.task_class]
        if as_json:
            out = {**d.model_dump(), "litellm_model": spec.litellm_model, "fallbacks": fallbacks}
            if explain:
                out["evidence"] = evidence
            typer.echo(json.dumps(out))
            return
        typer.echo(f"class:     {d.task_class}")
        typer.echo(f"model:     {d.model} ({spec.litellm_model})")
        typer.echo(f"mode:      {d.mode}")
        typer.echo(f"sensitive: {d.sensitive}" + (f"  [{', '.join(d.findings)}]" if d.findings else ""))
        for f in gate.findings:
            typer.echo(f"  - {f.label} at {f.start}-{f.end} (by {f.detector})")
        if gate.findings:
            typer.echo(f"redacted:  {redact(prompt, gate.spans())[:300]}")
        typer.echo(f"fallbacks: {', '.join(fallbacks) or '(none)'}")
        typer.echo(f"reason:    {d.reason}")
        if explain:
            rule = d.class_rule if d.class_source == "rule" else "stated by the caller"
            typer.echo(f"rule:      {rule}")
            typer.echo(
                f"gate:      {'sensitive' if d.findings else 'clean'}" + (" (local only)" if d.sensitive else "")
            )
            if not evidence:
                typer.echo(f"evidence:  no recorded attempts of class {d.task_class} yet")
            for e in evidence:
                s = e["success"]
                assert isinstance(s, dict)
                chosen = " ← chosen" if e["model"] == d.model else ""
                typer.echo(
                    f"evidence:  {e['model']}: {s['successes']}/{s['n']} succeeded, 95 % [{s['low']:.2f}, "
                    f"{s['high']:.2f}], {e['cost_usd']:.4f} USD"
                    + (" (too little data)" if e["too_little_data"] else "")
                    + chosen
                )
