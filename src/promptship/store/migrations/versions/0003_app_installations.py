"""app_installation_repositories: which configured repositories the GitHub App was removed from

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "app_installation_repositories" in sa.inspect(op.get_bind()).get_table_names():
        return  # created by create_schema before this migration existed
    op.create_table(
        "app_installation_repositories",
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("installed", sa.Boolean(), nullable=False),
        sa.Column("installation_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository"),
    )


def downgrade() -> None:
    op.drop_table("app_installation_repositories")
