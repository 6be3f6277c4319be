"""sync runs by webhook event: finishing a webhook run looks up its event's other runs

Partial (webhook runs only): poll runs, which a tick inserts a thousand at a time, add no
entry to it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("webhook_event_id IS NOT NULL")
    op.create_index(
        "ix_sync_runs_event",
        "sync_runs",
        ["webhook_event_id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_sync_runs_event", table_name="sync_runs")
