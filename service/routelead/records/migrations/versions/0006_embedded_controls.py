"""The embedded default's controls (caps, budgets, balances, dedupe windows, rotation, open
reservations) kept beside the books, so a restart without Redis keeps them.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_values",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
    )
    op.create_index("ix_control_values_expiry", "control_values", ["expires_at"])
    op.create_table(
        "control_dedupe",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_control_dedupe_expiry", "control_dedupe", ["expires_at"])
    op.create_table(
        "control_reservations",
        sa.Column("buyer_id", sa.String(64), primary_key=True),
        sa.Column("reservation_id", sa.String(200), primary_key=True),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("cents", sa.BigInteger, nullable=False),
        sa.Column("counters", sa.JSON, nullable=False),
        sa.Column("budget_counters", sa.JSON, nullable=False),
        sa.Column("prepaid", sa.Boolean, nullable=False),
        sa.Column("reserved_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("control_reservations")
    op.drop_index("ix_control_dedupe_expiry", "control_dedupe")
    op.drop_table("control_dedupe")
    op.drop_index("ix_control_values_expiry", "control_values")
    op.drop_table("control_values")
