"""run_waits: what a suspended flow run waits for (CI of a commit, a human merge, the base branch's image), so the
webhook receiver and ``promptship sweep`` can resume it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_waits",
        sa.Column("flow_run_id", sa.String(64), primary_key=True),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("attempt_id", sa.String(80), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("repository", sa.String(200), nullable=False),
        sa.Column("sha", sa.String(64), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suspensions", sa.Integer(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed_by", sa.String(32), nullable=True),
    )
    op.create_index("ix_run_waits_repository", "run_waits", ["repository"])
    op.create_index("ix_run_waits_sha", "run_waits", ["sha"])


def downgrade() -> None:
    op.drop_index("ix_run_waits_sha", table_name="run_waits")
    op.drop_index("ix_run_waits_repository", table_name="run_waits")
    op.drop_table("run_waits")
