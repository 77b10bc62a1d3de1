"""llm_calls: whether the policy or the exploration setting chose the call's model (``decided_by``), the policy's
own choice of an explored call and the call's number in the exploration draw's key; llm_reservations: which
reservations are for explored calls (the exploration budget counts them). Older rows: NULL (decided by policy).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("decided_by", sa.String(16)),
    ("explored_from", sa.String(200)),
    ("explore_seq", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("llm_reservations") as batch_op:
        batch_op.add_column(sa.Column("exploration", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llm_reservations") as batch_op:
        batch_op.drop_column("exploration")
    with op.batch_alter_table("llm_calls") as batch_op:
        for name, _type in reversed(_COLUMNS):
            batch_op.drop_column(name)
