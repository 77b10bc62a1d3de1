"""`promptship policy export|suggest` and `promptship replay`: the routing policy in force as a file, replayed
against the ledger, and a policy suggested from recorded outcomes (``domain/replay.py``)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer


def _since(value: str) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter("--since must be a date like 2026-11-01") from None


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    policy = typer.Typer(help="The routing policy: export it, suggest one from outcomes.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @policy.command("export")
    def export(file: Annotated[Path, typer.Argument(help="Where to write the policy (YAML).", dir_okay=False)]) -> None:
        """Write the routing policy in force (seed table + PROMPTSHIP_LLM__POLICY_FILE + llm-config) as YAML, the
        format the settings and `replay --policy` read."""
        from promptship.settings import Settings
        from promptship.wiring import build_routing_policy

        current = build_routing_policy(Settings())
        file.write_text(current.to_yaml(), encoding="utf-8")
        typer.echo(f"wrote {file} (policy {current.fingerprint()[:12]})")

    @policy.command("suggest")
    def suggest(
        success_floor: Annotated[
            float, typer.Option(help="Least acceptable lower 95 % bound of a model's success rate for a class.")
        ] = 0.8,
        out: Annotated[Path, typer.Option(help="Where to write the suggested policy (YAML).", dir_okay=False)] = Path(
            "suggested-policy.yaml"
        ),
        as_json: Annotated[bool, typer.Option("--json", help="Print the choices as JSON.")] = False,
    ) -> None:
        """Per class, the cheapest model whose success lower bound meets the floor (sensitive stays local);
        writes the result as a policy file for `promptship replay --policy`."""
        from promptship.domain.replay import suggest_policy
        from promptship.errors import ConfigError
        from promptship.replay_outputs import outcomes_from_store
        from promptship.settings import Settings
        from promptship.wiring import build_routing_policy, build_store

        settings = Settings()
        rows = outcomes_from_store(build_store(settings))
        try:
            suggested, choices = suggest_policy(build_routing_policy(settings), rows, success_floor=success_floor)
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        out.write_text(suggested.to_yaml(), encoding="utf-8")
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "classes": dict(suggested.classes),
                        "choices": [c.model_dump() for c in choices],
                        "file": str(out),
                    }
                )
            )
            return
        for c in choices:
            mark = "  " if c.current == c.suggested else "→ "
            typer.echo(f"{mark}{c.task_class:<13} {c.current} → {c.suggested}   ({c.why})")
        typer.echo(f"wrote {out}")

    @app.command("replay")
    def replay_command(
        policy_file: Annotated[
            Path | None,
            typer.Option(
                "--policy", exists=True, dir_okay=False, help="Another routing policy (YAML) to replay under."
            ),
        ] = None,
        since: Annotated[str, typer.Option(help="First ledger day to replay (YYYY-MM-DD).")] = "",
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    ) -> None:
        """Replay every recorded LLM call: without --policy, each under the policy that recorded it (the
        self-check); with one, decided and priced again under it. Refuses (exit 3) a policy that would send a
        sensitive call to the cloud, naming the rule; a classifier or gate change (exit 2)."""
        from promptship.errors import ConfigError
        from promptship.replay_outputs import replay_from_store, replay_text
        from promptship.settings import Settings
        from promptship.wiring import build_store

        start = _since(since)
        text = policy_file.read_text(encoding="utf-8") if policy_file is not None else None
        try:
            report, _calls = replay_from_store(
                build_store(Settings()),
                policy_text=text,
                policy_name=str(policy_file) if policy_file else "recording",
                since=start,
            )
        except ConfigError as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps(report.model_dump(mode="json"), sort_keys=True))
        else:
            typer.echo(replay_text(report))
        if report.refused:
            for v in report.refused:
                typer.echo(f"refused: {v.rule} would send {v.calls} sensitive call(s) to the cloud", err=True)
            raise typer.Exit(3)
        if report.self_check == "failed":
            raise typer.Exit(1)
