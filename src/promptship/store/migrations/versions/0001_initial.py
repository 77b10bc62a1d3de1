"""initial schema: steps, runs, LLM ledger, webhook deliveries

Revision ID: 0001
Revises:
Create Date: 2026-11-22 21:52:03.208370
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    """Databases made before migrations existed already have some tables: create only what is missing."""
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("ci_events"):
        op.create_table(
            "ci_events",
            sa.Column("repository", sa.String(length=200), nullable=False),
            sa.Column("sha", sa.String(length=64), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("repository", "sha"),
        )

    if _missing("llm_access_keys"):
        op.create_table(
            "llm_access_keys",
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("run_key", sa.String(length=64), nullable=False),
            sa.Column("decision", sa.JSON(), nullable=False),
            sa.Column("budget_usd", sa.Float(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("key_hash"),
        )
        with op.batch_alter_table("llm_access_keys", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_llm_access_keys_run_key"), ["run_key"], unique=False)

    if _missing("llm_budget_lock"):
        op.create_table(
            "llm_budget_lock", sa.Column("name", sa.String(length=32), nullable=False), sa.PrimaryKeyConstraint("name")
        )

    if _missing("llm_calls"):
        op.create_table(
            "llm_calls",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("run_key", sa.String(length=64), nullable=False),
            sa.Column("step", sa.String(length=64), nullable=False),
            sa.Column("repository", sa.String(length=200), nullable=True),
            sa.Column("day", sa.String(length=10), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            sa.Column("mode", sa.String(length=16), nullable=False),
            sa.Column("prompt_tokens", sa.Integer(), nullable=False),
            sa.Column("completion_tokens", sa.Integer(), nullable=False),
            sa.Column("cost_usd", sa.Float(), nullable=False),
            sa.Column("cost_missing", sa.Boolean(), nullable=False),
            sa.Column("fallback_used", sa.Boolean(), nullable=False),
            sa.Column("route_reason", sa.String(length=500), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("llm_calls", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_llm_calls_day"), ["day"], unique=False)
            batch_op.create_index(batch_op.f("ix_llm_calls_repository"), ["repository"], unique=False)
            batch_op.create_index(batch_op.f("ix_llm_calls_run_key"), ["run_key"], unique=False)

    if _missing("llm_reservations"):
        op.create_table(
            "llm_reservations",
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("run_key", sa.String(length=64), nullable=False),
            sa.Column("day", sa.String(length=10), nullable=False),
            sa.Column("mode", sa.String(length=16), nullable=False),
            sa.Column("amount_usd", sa.Float(), nullable=False),
            sa.Column("created_epoch", sa.Float(), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("llm_reservations", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_llm_reservations_created_epoch"), ["created_epoch"], unique=False)
            batch_op.create_index(batch_op.f("ix_llm_reservations_day"), ["day"], unique=False)
            batch_op.create_index(batch_op.f("ix_llm_reservations_run_key"), ["run_key"], unique=False)
            batch_op.create_index(batch_op.f("ix_llm_reservations_state"), ["state"], unique=False)

    if _missing("llm_runs"):
        op.create_table(
            "llm_runs",
            sa.Column("run_key", sa.String(length=64), nullable=False),
            sa.Column("repository", sa.String(length=200), nullable=True),
            sa.Column("budget_usd", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("run_key"),
        )

    if _missing("runs"):
        op.create_table(
            "runs",
            sa.Column("run_key", sa.String(length=64), nullable=False),
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
            sa.PrimaryKeyConstraint("run_key"),
        )
        with op.batch_alter_table("runs", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_runs_repository"), ["repository"], unique=False)
            batch_op.create_index(batch_op.f("ix_runs_started_at"), ["started_at"], unique=False)

    if _missing("steps"):
        op.create_table(
            "steps",
            sa.Column("run_key", sa.String(length=64), nullable=False),
            sa.Column("step", sa.String(length=64), nullable=False),
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
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("run_key", "step"),
        )

    if _missing("webhook_deliveries"):
        op.create_table(
            "webhook_deliveries",
            sa.Column("delivery_id", sa.String(length=100), nullable=False),
            sa.Column("event", sa.String(length=64), nullable=False),
            sa.Column("repository", sa.String(length=200), nullable=True),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("outcome", sa.String(length=32), nullable=False),
            sa.Column("detail", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("delivery_id"),
        )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("steps")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_started_at"))
        batch_op.drop_index(batch_op.f("ix_runs_repository"))

    op.drop_table("runs")
    op.drop_table("llm_runs")
    with op.batch_alter_table("llm_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_reservations_state"))
        batch_op.drop_index(batch_op.f("ix_llm_reservations_run_key"))
        batch_op.drop_index(batch_op.f("ix_llm_reservations_day"))
        batch_op.drop_index(batch_op.f("ix_llm_reservations_created_epoch"))

    op.drop_table("llm_reservations")
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_calls_run_key"))
        batch_op.drop_index(batch_op.f("ix_llm_calls_repository"))
        batch_op.drop_index(batch_op.f("ix_llm_calls_day"))

    op.drop_table("llm_calls")
    op.drop_table("llm_budget_lock")
    with op.batch_alter_table("llm_access_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_access_keys_run_key"))

    op.drop_table("llm_access_keys")
    op.drop_table("ci_events")
