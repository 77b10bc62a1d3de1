"""requests: the request behind each request key and where it came from (for /promptship stop and retry)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("issue_number", sa.Integer(), nullable=True),
        sa.Column("source_pr", sa.Integer(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_key"),
    )
    op.create_index("ix_requests_issue_number", "requests", ["issue_number"])
    op.create_index("ix_requests_source_pr", "requests", ["source_pr"])


def downgrade() -> None:
    op.drop_index("ix_requests_source_pr", table_name="requests")
    op.drop_index("ix_requests_issue_number", table_name="requests")
    op.drop_table("requests")
