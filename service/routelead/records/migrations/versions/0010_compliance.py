"""Each lead's compliance checks (lookup steps) and, for a refused lead, the reason.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Leads booked before it ran no checks: NULL.
    op.add_column("leads", sa.Column("compliance", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads") as batch:  # SQLite drops a column through a table copy
        batch.drop_column("compliance")
