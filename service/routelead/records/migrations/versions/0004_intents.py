"""Intents: a durable row per post, written before the post leaves, so the books decide whether a
lead was offered (a retry on any replica, after any restart, is answered from them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from routelead.records.schema import Money

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "intents",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("reservation_id", sa.String(200), nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("exclusive", sa.Boolean, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("offered_at", Time, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.CheckConstraint(
            "state IN ('offered', 'sold', 'rejected', 'unsettled', 'confirmed', 'freed', 'withdrawn')",
            name="ck_intents_state",
        ),
    )
    op.create_index("ix_intents_reservation", "intents", ["buyer_id", "reservation_id"])
    op.create_index("ix_intents_state_time", "intents", ["state", "offered_at"])
    op.create_index("ix_intents_time", "intents", ["offered_at"])


def downgrade() -> None:
    op.drop_table("intents")
