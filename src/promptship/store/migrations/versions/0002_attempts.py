"""attempts: step records, run reports and ledger runs keyed by attempt; existing rows become attempt 1

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FINISHED = ("deployed", "rolled_back", "stopped", "waiting", "already_done")
# typed facts the old rows kept in ``detail`` under the same or an older name
_FACTS = {
    "conversation_id": "conversation_id",
    "head_sha": "head_sha",
    "changed_files": "files_changed",
    "pr_number": "pr_number",
    "pr_url": "pr_url",
    "merge_sha": "merge_sha",
    "image": "image",
    "revision": "revision",
    "url": "health_url",
    "attempts": "probes",
    "restored_image": "restored_image",
    "time_to_restore_s": "time_to_restore_s",
    "gateway_cost_usd": "ledger_cost_usd",
    "failing": "failing_checks",
}


def _name_round(label: str) -> tuple[str, int | None, bool]:
    """The typed step name and round of an old label ('wait_for_ci#2', 'check_health:after_rollback')."""
    base, _, round_text = label.partition("#")
    after_rollback = base.endswith(":after_rollback")
    base = base.removesuffix(":after_rollback")
    if base == "build_image":
        base = "wait_for_image"
    number = int(round_text) if round_text.isdigit() else None
    if base == "compile_check" and number is None:
        number = 1
    return base, number, after_rollback


def _steps_table(name: str) -> sa.Table:
    return op.create_table(
        name,
        sa.Column("attempt_id", sa.String(length=80), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=True),
        sa.Column("round", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("route_reason", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("cost_missing", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", "step"),
    )


def _runs_table(name: str) -> sa.Table:
    return op.create_table(
        name,
        sa.Column("attempt_id", sa.String(length=80), nullable=False),
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("prompt_redacted", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pr_url", sa.String(length=500), nullable=True),
        sa.Column("image", sa.String(length=500), nullable=True),
        sa.Column("compiled", sa.Boolean(), nullable=True),
        sa.Column("total_cost_usd", sa.Float(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    old_steps = sa.Table("steps", meta, autoload_with=bind)
    old_runs = sa.Table("runs", meta, autoload_with=bind)

    new_steps = _steps_table("steps_v2")
    rows = []
    for r in bind.execute(sa.select(old_steps)).mappings():
        name, number, after_rollback = _name_round(r["step"])
        detail = dict(r["detail"] or {})
        facts = {new: detail[old] for old, new in _FACTS.items() if detail.get(old) is not None}
        if after_rollback:
            facts["after_rollback"] = True
        rows.append(
            {
                **{k: r[k] for k in r.keys() if k != "detail"},
                "attempt_id": f"{r['run_key']}-a1",
                "name": name,
                "round": number,
                "facts": facts,
                "detail": {k: v for k, v in detail.items() if k not in _FACTS},
            }
        )
    if rows:
        op.bulk_insert(new_steps, rows)

    new_runs = _runs_table("runs_v2")
    runs = [dict(r) for r in bind.execute(sa.select(old_runs)).mappings()]
    if runs:
        op.bulk_insert(
            new_runs,
            [{**r, "attempt_id": f"{r['run_key']}-a1", "attempt_number": 1} for r in runs],
        )

    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_repository")
        batch_op.drop_index("ix_runs_started_at")
    op.drop_table("steps")
    op.drop_table("runs")
    op.rename_table("steps_v2", "steps")
    op.rename_table("runs_v2", "runs")
    op.create_index("ix_steps_run_key", "steps", ["run_key"])
    op.create_index("ix_runs_run_key", "runs", ["run_key"])
    op.create_index("ix_runs_repository", "runs", ["repository"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    attempts = op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.String(length=80), nullable=False),
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("occurrence", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("flow_run_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id"),
    )
    op.create_index("ix_attempts_run_key", "attempts", ["run_key"])
    if runs:
        op.bulk_insert(
            attempts,
            [
                {
                    "attempt_id": f"{r['run_key']}-a1",
                    "run_key": r["run_key"],
                    "number": 1,
                    "occurrence": None,
                    "status": "ended",
                    "outcome": r["outcome"],
                    "started_at": r["started_at"],
                    "ended_at": r["ended_at"],
                    "flow_run_ids": [r["flow_run_id"]] if r["flow_run_id"] else [],
                }
                for r in runs
            ],
        )
    op.create_table(
        "request_leases",
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("attempt_id", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("run_key"),
    )

    # the ledger's runs are attempts now: a run key of the old rows (16 hex) is its attempt 1
    for table in ("llm_runs", "llm_calls", "llm_reservations", "llm_access_keys"):
        op.execute(
            sa.text(f"UPDATE {table} SET run_key = run_key || '-a1' WHERE length(run_key) = 16")  # noqa: S608
        )


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible: attempts cannot be folded back into one row per request")
