"""Whether each bid asked for an exclusive sale, so replay allocates it as the live auction did.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Attempts recorded before it read as shared bids, as replay treated every bid then.
    op.add_column("attempts", sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:  # SQLite drops a column through a table copy
        batch.drop_column("exclusive")
