"""Inbound quotes: every quote (offered, won, lost, expired, no offer) for supplier stats.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from routelead.records.schema import Money

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "quotes",
        sa.Column("quote_id", sa.String(128), primary_key=True),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("quoted_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("price", Money, nullable=True),
        sa.Column("revenue", Money, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("committed_at", Time, nullable=True),
        sa.CheckConstraint(
            "state IN ('offered', 'no_offer', 'won', 'lost', 'expired')", name="ck_quotes_state"
        ),
    )
    op.create_index("ix_quotes_source_time", "quotes", ["source_id", "quoted_at"])
    op.create_index("ix_quotes_time", "quotes", ["quoted_at"])


def downgrade() -> None:
    op.drop_index("ix_quotes_time", "quotes")
    op.drop_index("ix_quotes_source_time", "quotes")
    op.drop_table("quotes")
