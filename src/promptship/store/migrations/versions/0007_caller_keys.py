"""llm_access_keys.caller: an app's key of the gateway service (e.g. the chat app's `chat`), routed by the
policy per call; its `decision` is NULL (a run's key keeps its pinned decision and no caller)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("llm_access_keys") as batch_op:
        batch_op.add_column(sa.Column("caller", sa.String(64), nullable=True))
        batch_op.alter_column("decision", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM llm_access_keys WHERE caller IS NOT NULL")
    with op.batch_alter_table("llm_access_keys") as batch_op:
        batch_op.alter_column("decision", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("caller")
