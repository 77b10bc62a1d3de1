"""sealed_requests: requests whose prompt Prefect must not hold, kept encrypted under an id; the plain prompts
that `requests` held until now are sealed by the first process that opens the store with its key
(``Store.create_schema``: a migration has no key)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sealed_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sealed_requests_request_key", "sealed_requests", ["request_key"])


def downgrade() -> None:
    op.drop_index("ix_sealed_requests_request_key", table_name="sealed_requests")
    op.drop_table("sealed_requests")
