"""The ledger: leads, attempts, sales, the money journal and returns.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from routelead.records.schema import Money

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("received_at", Time, nullable=False),
        sa.Column("answered_at", Time, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("test", sa.Boolean, nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("revenue", Money, nullable=False),
        sa.Column("margin", Money, nullable=False),
        sa.Column("elapsed_ms", sa.Float, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("ping_fields", sa.JSON, nullable=False),
    )
    op.create_index("ix_leads_source_time", "leads", ["source_id", "received_at"])
    op.create_index("ix_leads_flow_time", "leads", ["flow", "received_at"])
    op.create_index("ix_leads_time", "leads", ["received_at"])

    op.create_table(
        "attempts",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("bid", Money, nullable=True),
        sa.Column("ping_ms", sa.Float, nullable=False),
        sa.Column("post_ms", sa.Float, nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_attempts_buyer", "attempts", ["buyer_id", "status"])

    op.create_table(
        "sales",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("buyer_id", sa.String(64), primary_key=True),
        sa.Column("price", Money, nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("buyer_lead_id", sa.String(256), nullable=False),
        sa.Column("exclusive", sa.Boolean, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("settlement", sa.String(16), nullable=False),
        sa.Column("sold_at", Time, nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("test", sa.Boolean, nullable=False),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.CheckConstraint("settlement IN ('sold', 'unsettled', 'rejected')", name="ck_sales_settlement"),
    )
    op.create_index("ix_sales_buyer_time", "sales", ["buyer_id", "sold_at"])
    op.create_index("ix_sales_source_time", "sales", ["source_id", "sold_at"])
    op.create_index("ix_sales_flow_time", "sales", ["flow", "sold_at"])

    op.create_table(
        "entries",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("buyer_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(24), primary_key=True),
        sa.Column("amount", Money, nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_entries_time", "entries", ["at"])
    op.create_index("ix_entries_buyer_time", "entries", ["buyer_id", "at"])
    op.create_index("ix_entries_source_time", "entries", ["source_id", "at"])
    op.create_index("ix_entries_flow_time", "entries", ["flow", "at"])

    op.create_table(
        "returns",
        sa.Column("lead_id", sa.String(128), primary_key=True),
        sa.Column("buyer_id", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("returned_at", Time, nullable=False),
        sa.Column("revenue_reversed", Money, nullable=False),
        sa.Column("cost_reversed", Money, nullable=False),
    )
    op.create_index("ix_returns_buyer_time", "returns", ["buyer_id", "returned_at"])


def downgrade() -> None:
    for table in ("returns", "entries", "sales", "attempts", "leads"):
        op.drop_table(table)
