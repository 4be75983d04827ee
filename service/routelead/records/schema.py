"""One schema for PostgreSQL and SQLite (SQLAlchemy Core); Alembic migrations create it.

Money is exact everywhere: NUMERIC(14, 2) on PostgreSQL; on SQLite, whose NUMERIC affinity is
floating point, INTEGER cents, so sums stay exact too. Both read back as Decimal.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

_CENT = Decimal("0.01")


class Money(TypeDecorator[Decimal]):
    impl = sa.Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(14, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        cents = Decimal(value).quantize(_CENT)
        if dialect.name == "sqlite":
            return int(cents * 100)
        return cents

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / 100).quantize(_CENT)
        return Decimal(value).quantize(_CENT)


# Times are UTC; SQLite gives them back naive, which `ledger` re-labels as UTC.
Time = sa.DateTime(timezone=True)

metadata = sa.MetaData()

# A test lead is booked under "~<lead_id>" (outcome.answer_key), so a real lead with the same id
# has its own rows: hence 129 characters on PostgreSQL (SQLite does not enforce a length, and
# migration 0005 leaves its tables uncopied).
LEAD_KEY = sa.String(128).with_variant(sa.String(129), "postgresql")

leads = sa.Table(
    "leads",
    metadata,
    sa.Column("lead_id", LEAD_KEY, primary_key=True),
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
    # The non-PII ping view, enough to replay the auction.
    sa.Column("ping_fields", sa.JSON, nullable=False),
    # Keyed digests of the request's fields: a repeat of the lead_id with other fields is refused.
    sa.Column("request_digest", sa.Text, nullable=True),
    # The lead type its flow sold (migration 0007; '' for leads booked before it).
    sa.Column("lead_type", sa.String(64), nullable=False, server_default=""),
    # The compliance checks run before any ping, and a refusal's reason (migration 0010).
    sa.Column("compliance", sa.JSON, nullable=True),
    sa.Index("ix_leads_source_time", "source_id", "received_at"),
    sa.Index("ix_leads_flow_time", "flow", "received_at"),
    sa.Index("ix_leads_time", "received_at"),
    sa.Index("ix_leads_lead_type_time", "lead_type", "received_at"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("lead_id", LEAD_KEY, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("buyer_id", sa.String(64), nullable=False),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("bid", Money, nullable=True),
    sa.Column("ping_ms", sa.Float, nullable=False),
    sa.Column("post_ms", sa.Float, nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # The buyer's own price before our buyer pricing rules (`bid` is after them): replay re-prices it.
    sa.Column("offered", Money, nullable=True),
    # The bid asked for an exclusive sale (replay allocates it as the live auction did).
    sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_attempts_buyer", "buyer_id", "status"),
)

# No foreign key to leads: from the Redis outbox a sale may reach the books before its lead.
sales = sa.Table(
    "sales",
    metadata,
    sa.Column("lead_id", LEAD_KEY, primary_key=True),
    sa.Column("buyer_id", sa.String(64), primary_key=True),
    sa.Column("price", Money, nullable=False),
    # This sale's share of the lead's cost, so each sale carries its own margin.
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
    # A price dispute: what the buyer's post answer stated, when the sale is booked at its bid.
    sa.Column("stated_price", Money, nullable=True),
    sa.CheckConstraint("settlement IN ('sold', 'unsettled', 'rejected')", name="ck_sales_settlement"),
    sa.Index("ix_sales_buyer_time", "buyer_id", "sold_at"),
    sa.Index("ix_sales_source_time", "source_id", "sold_at"),
    sa.Index("ix_sales_flow_time", "flow", "sold_at"),
)

# The money journal: append-only. A return or a settlement adds entries; nothing is edited.
# `kind` is cost / revenue / revenue_reversal / cost_reversal; reversals carry negative amounts.
entries = sa.Table(
    "entries",
    metadata,
    sa.Column("lead_id", sa.String(128), primary_key=True),
    sa.Column("buyer_id", sa.String(64), primary_key=True),  # '' for the source's cost
    sa.Column("kind", sa.String(24), primary_key=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Index("ix_entries_time", "at"),
    sa.Index("ix_entries_buyer_time", "buyer_id", "at"),
    sa.Index("ix_entries_source_time", "source_id", "at"),
    sa.Index("ix_entries_flow_time", "flow", "at"),
)

returns = sa.Table(
    "returns",
    metadata,
    sa.Column("lead_id", sa.String(128), primary_key=True),
    sa.Column("buyer_id", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("returned_at", Time, nullable=False),
    sa.Column("revenue_reversed", Money, nullable=False),
    sa.Column("cost_reversed", Money, nullable=False),
    sa.Index("ix_returns_buyer_time", "buyer_id", "returned_at"),
)

# Live configuration: append-only; the highest version is the live one. `document` is the YAML as
# written, with ${VAR} references unexpanded, so no secret from the environment is ever stored.
config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("document", sa.Text, nullable=False),
)

# The embedded default's controls (memory hot state, no Redis), kept beside the books so that a
# restart keeps them: see records/controls.py. Times are epoch seconds; NULL: never expires.
# `kind` is count (a cap or budget counter, "buyer|n:day:2026-11-22"), balance (cents) or turn.
control_values = sa.Table(
    "control_values",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Index("ix_control_values_expiry", "expires_at"),
)

# Duplicate-check windows: keyed digests ("lead|solar|<hmac>"), never the consumer's data.
control_dedupe = sa.Table(
    "control_dedupe",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_control_dedupe_expiry", "expires_at"),
)

# Suppression lists of the embedded default (no Redis): keyed digests, never the values, so a
# restart keeps every do-not-contact entry an operator loaded. `buyer` '' is a global list.
control_suppression = sa.Table(
    "control_suppression",
    metadata,
    sa.Column("list", sa.String(64), primary_key=True),
    sa.Column("buyer", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
)

# Reservations still open: posting now, unsettled (outcome unknown), or left by a stopped process.
control_reservations = sa.Table(
    "control_reservations",
    metadata,
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

# The books decide whether a lead was offered: one row per post, written (and committed) before
# the post leaves the process. Row `seq` 0 is the lead's first post: its primary key is the guard
# between processes and replicas (a second writer of seq 0 learns at once that the lead was
# offered, and answers from the books instead of posting). `state`: offered (the post may have
# left; nothing known yet) → sold / rejected / unsettled when the lead's record is written;
# unsettled or offered → confirmed / freed by reconciliation; withdrawn: the write was not
# confirmed in time, so the post never left.
intents = sa.Table(
    "intents",
    metadata,
    sa.Column("lead_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("buyer_id", sa.String(64), nullable=False),
    sa.Column("reservation_id", sa.String(200), nullable=False),
    sa.Column("price", Money, nullable=False),
    # The lead's cost if this post is its only sale: what a late confirmation books.
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
    sa.Index("ix_intents_reservation", "buyer_id", "reservation_id"),
    sa.Index("ix_intents_state_time", "state", "offered_at"),
    sa.Index("ix_intents_time", "offered_at"),
)

# Inbound quotes (Quote / Commit): one row per quote, offered or not, so stats show each supplier's
# win rate and ping:post ratio. `state`: offered (open until `expires_at`; past it, counted as
# expired) → won (committed and sold) / lost (committed, not sold) / expired (a commit came too
# late); no_offer: no acceptable bid. `revenue`: what the bids backing the offer pay.
quotes = sa.Table(
    "quotes",
    metadata,
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
    sa.CheckConstraint("state IN ('offered', 'no_offer', 'won', 'lost', 'expired')", name="ck_quotes_state"),
    sa.Index("ix_quotes_source_time", "source_id", "quoted_at"),
    sa.Index("ix_quotes_time", "quoted_at"),
)
