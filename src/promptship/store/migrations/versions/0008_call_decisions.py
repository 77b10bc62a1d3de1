"""llm_calls: what replay needs to decide and price a call again (class and how it was decided, the gate's
verdict and detector kinds — never values —, caller, price source, the policy's hash); routing_policies keeps each
policy by its hash. Rows from before 0008 keep NULLs: replay reports them as unknowable.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("task_class", sa.String(32)),
    ("class_source", sa.String(16)),
    ("class_rule", sa.String(80)),
    ("gate_verdict", sa.String(16)),
    ("gate_kinds", sa.JSON()),
    ("forced_local", sa.Boolean()),
    ("route_caller", sa.String(64)),
    ("price_source", sa.String(16)),
    ("local_rate_per_1k_usd", sa.Float()),
    ("policy_hash", sa.String(64)),
)


def upgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index("ix_llm_calls_policy_hash", ["policy_hash"])
    op.create_table(
        "routing_policies",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("policy_yaml", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("routing_policies")
    with op.batch_alter_table("llm_calls") as batch_op:
        batch_op.drop_index("ix_llm_calls_policy_hash")
        for name, _type in reversed(_COLUMNS):
            batch_op.drop_column(name)
