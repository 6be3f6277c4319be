"""connection state: a connection whose token refresh was refused stops polling

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing connections keep working: they start out active.
    with op.batch_alter_table("connections") as batch:
        batch.add_column(
            sa.Column("state", sa.String(length=32), nullable=False, server_default="active")
        )
        batch.add_column(sa.Column("state_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("state_error")
        batch.drop_column("state")
