"""The buyer's own price on each attempt, before our pricing rules, so replay re-prices it once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from routelead.records.schema import Money

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: attempts recorded before it have no value; replay falls back to their bid.
    op.add_column("attempts", sa.Column("offered", Money, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:  # SQLite drops a column through a table copy
        batch.drop_column("offered")
