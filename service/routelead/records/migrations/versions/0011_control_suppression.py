"""Suppression lists of the embedded default, kept beside the books so a restart keeps them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_suppression",
        sa.Column("list", sa.String(64), primary_key=True),
        sa.Column("buyer", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("control_suppression")
