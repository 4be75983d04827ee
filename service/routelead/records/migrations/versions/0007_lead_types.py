"""Lead types: each lead names the lead type its flow sold, so stats, reports and replay can be
cut by vertical. Leads booked before this migration have '' (their configuration had one type).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant server default: PostgreSQL adds the column without rewriting the table.
    op.add_column("leads", sa.Column("lead_type", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_leads_lead_type_time", "leads", ["lead_type", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_leads_lead_type_time", "leads")
    with op.batch_alter_table("leads") as batch:  # SQLite drops a column through a table copy
        batch.drop_column("lead_type")
