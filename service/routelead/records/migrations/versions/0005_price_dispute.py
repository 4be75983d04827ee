"""Price disputes, request digests, and room for test leads' own keys.

- `sales.stated_price`: the price a buyer's post answer stated when the sale is booked at its bid
  (a price dispute); NULL for every other sale.
- `leads.request_digest`: keyed digests of the request's fields, so a repeat of a lead_id with
  other fields is refused even when its answer comes from the books.
- `lead_id` of leads, attempts and sales widened to 129 characters: a test lead is booked under
  "~<lead_id>", apart from a real lead with the same id (SQLite does not enforce the length).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from routelead.records.schema import Money

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEYED = ("leads", "attempts", "sales")


def upgrade() -> None:
    op.add_column("sales", sa.Column("stated_price", Money, nullable=True))
    op.add_column("leads", sa.Column("request_digest", sa.Text, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in _KEYED:  # widening a varchar is a catalogue change, no table rewrite
            op.alter_column(table, "lead_id", type_=sa.String(129), existing_type=sa.String(128))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _KEYED:
            op.alter_column(table, "lead_id", type_=sa.String(128), existing_type=sa.String(129))
    with op.batch_alter_table("leads") as batch:  # SQLite drops a column through a table copy
        batch.drop_column("request_digest")
    with op.batch_alter_table("sales") as batch:
        batch.drop_column("stated_price")
