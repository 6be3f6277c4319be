"""app endpoints: a 410 stops delivery to that URL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_endpoints",
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("gone_at", sa.DateTime(), nullable=True),
        sa.Column("gone_status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_app_endpoints")),
    )


def downgrade() -> None:
    op.drop_table("app_endpoints")
