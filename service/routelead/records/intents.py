"""The books decide whether a lead was offered: intents, the answers they give, and settlement.

Before a post leaves the process, the router writes one `intents` row (lead, buyer, reservation,
price) through the ledger's group-committed writer and waits for the commit. Row `seq` 0 (the
lead's first post) is unique on the lead: a second process or replica that reaches the post
step for the same lead_id finds it taken, or finds the lead already answered, and answers from
the books instead of posting. A retry after a crash is therefore answered from what the intents
and the ledger say — the sale, or the unsettled post — never routed to a second buyer.

Reconciliation closes the loop: `settle` books a confirmed post as a sale (sale row, revenue
entry, the lead's outcome SOLD, at the intent's price and buyer), or records that it was freed.
The Redis `routelead settle`, the StateAdmin `Settle` RPC and `routelead settle-sale` all end here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.codec import LeadRecord
from routelead.records.schema import entries, intents, leads, sales

# The states in which nobody knows yet whether the buyer took the post.
OPEN = ("offered", "unsettled")
UNKNOWN_REASON = (
    "the process routing this lead stopped during its post; outcome unknown, held until settled "
    "(routelead settle / settle-sale)"
)


@dataclass(frozen=True, slots=True)
class Intent:
    """One post about to leave the process. Written before the post; `seq` 0 guards the lead."""

    lead_id: str
    seq: int
    buyer_id: str
    reservation_id: str
    price: Decimal
    cost: Decimal
    exclusive: bool
    tier: str
    flow: str
    source_id: str
    config_version: str
    at: float


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """An intent whose write was not confirmed in time: its post never left."""

    lead_id: str
    seq: int


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _insert(dialect: str, table: sa.Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _intent_row(i: Intent) -> dict[str, Any]:
    return {
        "lead_id": i.lead_id,
        "seq": i.seq,
        "buyer_id": i.buyer_id,
        "reservation_id": i.reservation_id,
        "price": i.price,
        "cost": i.cost,
        "exclusive": i.exclusive,
        "tier": i.tier,
        "flow": i.flow,
        "source_id": i.source_id,
        "config_version": i.config_version,
        "offered_at": _at(i.at),
        "state": "offered",
    }


class _Statements:
    """The hot path's statements, built once per dialect. Building an insert ... on conflict
    (its `excluded` alias, its cache key) cost more CPU than running it: about 2 ms per lead in
    the books' writer thread when every transaction built its own."""

    def __init__(self, dialect: str) -> None:
        first = _insert(dialect, intents)
        # A withdrawn first intent (its post never left) is taken over; any other is the guard.
        self.first = first.on_conflict_do_update(
            index_elements=[intents.c.lead_id, intents.c.seq],
            set_={c: first.excluded[c] for c in sorted(_ROW_COLUMNS - {"lead_id", "seq"})},
            where=intents.c.state == "withdrawn",
        ).returning(intents.c.lead_id)
        self.later = _insert(dialect, intents).on_conflict_do_nothing()
        ids: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
        self.answered = sa.select(leads.c.lead_id).where(leads.c.lead_id.in_(ids))
        live = intents.c.state != "withdrawn"
        self.offered = sa.select(intents.c.lead_id).where(intents.c.lead_id.in_(ids), live)
        self.withdraw = (
            sa.update(intents)
            .where(
                intents.c.lead_id == sa.bindparam("w_lead"),
                intents.c.seq == sa.bindparam("w_seq"),
                intents.c.state == "offered",
            )
            .values(state="withdrawn")
        )
        self.close = (
            sa.update(intents)
            .where(
                intents.c.lead_id == sa.bindparam("c_lead"),
                intents.c.buyer_id == sa.bindparam("c_buyer"),
                intents.c.state == "offered",
            )
            .values(state=sa.bindparam("c_state"))
        )


_ROW_COLUMNS = frozenset(
    _intent_row(Intent("", 0, "", "", Decimal(0), Decimal(0), False, "", "", "", "", 0.0))
)
_STATEMENTS: dict[str, _Statements] = {}


def _statements(conn: sa.Connection) -> _Statements:
    dialect = conn.dialect.name
    if (built := _STATEMENTS.get(dialect)) is None:
        built = _STATEMENTS[dialect] = _Statements(dialect)
    return built


def write_intents(conn: sa.Connection, firsts: Sequence[Intent], later: Sequence[Intent]) -> set[str]:
    """Insert intents inside the caller's transaction; the lead_ids of first posts refused because
    the lead is already offered (a live seq-0 row) or already answered (a `leads` row)."""
    refused: set[str] = set()
    run = _statements(conn)
    if firsts:
        ids = [i.lead_id for i in firsts]
        answered = set(conn.scalars(run.answered, {"ids": ids}))
        wanted = [_intent_row(i) for i in firsts if i.lead_id not in answered]
        # One statement for the batch (many-row VALUES on both dialects); RETURNING names the
        # first posts this transaction won.
        got = set(conn.scalars(run.first, wanted)) if wanted else set()
        refused = {i for i in ids if i not in got}
    if later:
        conn.execute(run.later, [_intent_row(i) for i in later])
    return refused


def withdraw(conn: sa.Connection, gone: Sequence[Withdrawal]) -> None:
    if gone:
        conn.execute(_statements(conn).withdraw, [{"w_lead": w.lead_id, "w_seq": w.seq} for w in gone])


def posted(record: LeadRecord) -> bool:
    """The routing that made this record posted the lead (and so holds its seq-0 intent)."""
    return any(a.status in _POSTED for a in record.attempts)


_POSTED = {Status.POST_ACCEPTED.value, Status.POST_REJECTED.value, Status.POST_ERROR.value}


def already_booked(conn: sa.Connection, lead_ids: Sequence[str]) -> set[str]:
    """Of leads routed here without a post, those the books already answer (a `leads` row) or
    another process offered (a live intent): their record is not written; the books answer."""
    if not lead_ids:
        return set()
    run = _statements(conn)
    ids = {"ids": list(lead_ids)}
    return set(conn.scalars(run.answered, ids)) | set(conn.scalars(run.offered, ids))


def close_intents(conn: sa.Connection, records: Sequence[LeadRecord]) -> None:
    """The lead's record is written: each of its offered intents says what became of the post."""
    rows = []
    for r in records:
        if not posted(r):
            continue
        settled = {s.buyer_id: s.settlement for s in r.sales}
        for a in r.attempts:
            if a.status in _POSTED:
                state = {"sold": "sold", "unsettled": "unsettled"}.get(
                    settled.get(a.buyer_id, ""), "rejected"
                )
                rows.append({"c_lead": r.lead_id, "c_buyer": a.buyer_id, "c_state": state})
    if rows:
        conn.execute(_statements(conn).close, rows)


# --- answers -----------------------------------------------------------------------------------


def answer_from_intents(
    lead_id: str, offered: Sequence[Mapping[str, Any]], sold: Sequence[Mapping[str, Any]]
) -> RoutingResult | None:
    """A lead offered by a process that never wrote its record: the sales the books hold (from a
    buyer's outbox, or confirmed by reconciliation), and every other post as unsettled."""
    live = [i for i in offered if i["state"] != "withdrawn"]
    if not live:
        return None
    first = live[0]
    booked = {s["buyer_id"]: s for s in sold if s["settlement"] == "sold"}
    attempts = []
    for i in live:
        a = Attempt(i["buyer_id"], i["tier"], Status.POST_ERROR, i["price"], exclusive=bool(i["exclusive"]))
        if i["buyer_id"] in booked or i["state"] in ("sold", "confirmed"):
            a.status, a.reason = Status.POST_ACCEPTED, f"sold at {i['price']} (booked by reconciliation)"
        elif i["state"] in ("rejected", "freed"):
            a.status, a.reason = Status.POST_REJECTED, "not taken by the buyer (settled as freed)"
        else:
            a.unsettled, a.reason = True, UNKNOWN_REASON
        attempts.append(a)
    sales_ = [
        Sale(s["buyer_id"], s["price"], s["buyer_lead_id"], bool(s["exclusive"]), s["tier"], s["cost"])
        for s in booked.values()
    ]
    return RoutingResult(
        lead_id=lead_id,
        flow=first["flow"],
        source_id=first["source_id"],
        test=False,
        # A post whose outcome nobody settled yet: a buyer may hold the lead.
        outcome=Outcome.SOLD
        if sales_
        else (Outcome.UNSETTLED if any(a.unsettled for a in attempts) else Outcome.UNSOLD),
        cost=sum((s.cost for s in sales_), Decimal("0.00")),
        sales=sales_,
        attempts=attempts,
        replayed=True,
        config_version=first["config_version"],
    )


def open_intents(conn: sa.Connection, older_than_s: float = 0.0) -> list[dict[str, Any]]:
    """Posts whose outcome nobody knows (the process died, or the post's answer was lost), with
    no sale booked for them: what reconciliation settles."""
    cutoff = _at(time.time() - older_than_s)
    q = (
        sa.select(intents)
        .where(intents.c.state.in_(OPEN), intents.c.offered_at <= cutoff)
        .order_by(intents.c.offered_at, intents.c.lead_id, intents.c.seq)
    )
    found = []
    for row in conn.execute(q):
        sale = conn.execute(
            sa.select(sales.c.settlement).where(
                sales.c.lead_id == row.lead_id, sales.c.buyer_id == row.buyer_id
            )
        ).scalar()
        if sale in ("sold", "rejected"):
            continue
        found.append(
            {
                k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
                for k, v in row._mapping.items()
            }
        )
    return found


# --- settlement --------------------------------------------------------------------------------


def settle(conn: sa.Connection, lead_id: str, buyer_id: str, *, sold: bool, now: float) -> str:
    """Resolve a post whose outcome was unknown, in the caller's transaction: "sold" books the
    sale (sale row, revenue entry, the lead SOLD) at the price and buyer its intent or unsettled
    sale names; "rejected" records that it was freed. A decided one answers its decision."""
    at = _at(now)
    dialect = conn.dialect.name
    sale = conn.execute(
        sa.select(sales).where(sales.c.lead_id == lead_id, sales.c.buyer_id == buyer_id)
    ).first()
    intent = conn.execute(
        sa.select(intents)
        .where(intents.c.lead_id == lead_id, intents.c.buyer_id == buyer_id, intents.c.state != "withdrawn")
        .order_by(intents.c.seq.desc())
    ).first()
    if sale is None and intent is None:
        raise LookupError(f"no sale or post of lead {lead_id!r} to buyer {buyer_id!r} in the books")
    lead = conn.execute(sa.select(leads).where(leads.c.lead_id == lead_id)).first()
    settlement = "sold" if sold else "rejected"
    if sale is not None and sale.settlement != "unsettled":
        _close_intent(conn, lead_id, buyer_id, "confirmed" if sale.settlement == "sold" else "freed")
        return str(sale.settlement)
    if sale is None:
        assert intent is not None
        if intent.state not in OPEN:
            return "sold" if intent.state in ("sold", "confirmed") else "rejected"
    src = sale if sale is not None else intent
    assert src is not None
    price: Decimal = src.price
    test = bool(sale.test) if sale is not None else False
    # The lead's cost, when no record of the lead carries it yet: the intent knows it.
    cost = intent.cost if intent is not None and lead is None else Decimal("0.00")
    if sale is not None:
        conn.execute(
            sa.update(sales)
            .where(
                sales.c.lead_id == lead_id, sales.c.buyer_id == buyer_id, sales.c.settlement == "unsettled"
            )
            .values(settlement=settlement)
        )
    elif sold:
        assert intent is not None
        conn.execute(
            _insert(dialect, sales).on_conflict_do_nothing(),
            [
                {
                    "lead_id": lead_id,
                    "buyer_id": buyer_id,
                    "price": price,
                    "cost": cost,
                    "buyer_lead_id": "",
                    "exclusive": intent.exclusive,
                    "tier": intent.tier,
                    "settlement": "sold",
                    "sold_at": at,
                    "flow": intent.flow,
                    "source_id": intent.source_id,
                    "test": False,
                    "config_version": intent.config_version,
                }
            ],
        )
    where = {"lead_id": lead_id, "at": at, "flow": src.flow, "source_id": src.source_id}
    if sold and not test:
        conn.execute(
            _insert(dialect, entries).on_conflict_do_nothing(),
            [{**where, "buyer_id": buyer_id, "kind": "revenue", "amount": price}],
        )
        if cost:
            conn.execute(
                _insert(dialect, entries).on_conflict_do_nothing(),
                [{**where, "buyer_id": "", "kind": "cost", "amount": cost}],
            )
    if lead is None and intent is not None:
        revenue = price if sold else Decimal("0.00")
        booked_cost = cost if sold else Decimal("0.00")
        conn.execute(
            _insert(dialect, leads).on_conflict_do_nothing(),
            [
                {
                    "lead_id": lead_id,
                    "flow": intent.flow,
                    "source_id": intent.source_id,
                    "config_version": intent.config_version,
                    "received_at": intent.offered_at,
                    "answered_at": at,
                    "outcome": Outcome.SOLD.value if sold else Outcome.UNSOLD.value,
                    "test": False,
                    "cost": booked_cost,
                    "revenue": revenue,
                    "margin": revenue - booked_cost,
                    "elapsed_ms": 0.0,
                    "trace_id": "",
                    "ping_fields": {},
                }
            ],
        )
    elif lead is not None and sold and not test:
        revenue = lead.revenue + price
        conn.execute(
            sa.update(leads)
            .where(leads.c.lead_id == lead_id)
            .values(outcome=Outcome.SOLD.value, revenue=revenue, margin=revenue - lead.cost)
        )
    _close_intent(conn, lead_id, buyer_id, "confirmed" if sold else "freed")
    return settlement


def _close_intent(conn: sa.Connection, lead_id: str, buyer_id: str, state: str) -> None:
    conn.execute(
        sa.update(intents)
        .where(intents.c.lead_id == lead_id, intents.c.buyer_id == buyer_id, intents.c.state.in_(OPEN))
        .values(state=state)
    )


def lead_of_reservation(conn: sa.Connection, buyer_id: str, reservation_id: str) -> str | None:
    return conn.execute(
        sa.select(intents.c.lead_id).where(
            intents.c.buyer_id == buyer_id, intents.c.reservation_id == reservation_id
        )
    ).scalar()
