"""notification streams: ordered delivery per (app URL, connection, sync, model), and the
claim time that tells an expired send lease from a dispatched row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 04:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows recorded before this revision keep no stream: they are delivered unordered.
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("stream", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_notifications_stream", "notifications", ["stream", "state", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_stream", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("stream")
        batch.drop_column("claimed_at")
