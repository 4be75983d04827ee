"""The ledger over SQL: apply records idempotently, answer "who got it and why", report by period."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from routelead.domain.outcome import RoutingResult
from routelead.records import intents as offers
from routelead.records import quotes as quote_rows
from routelead.records.answers import past_answer
from routelead.records.codec import LeadRecord, Record, SaleRecord, lead_record
from routelead.records.db import create_engine, migrate, sqlite_writer
from routelead.records.intents import Intent, Withdrawal
from routelead.records.returns import ReturnPolicy, ReturnRefused, check_return
from routelead.records.schema import Money, attempts, entries, intents, leads, returns, sales
from routelead.records.wal import Checkpointer

log = structlog.get_logger("routelead.records")
ZERO = Decimal("0.00")
# Leads committed together at most (group commit).
_GROUP_MAX = 256
GroupBy = Literal["source", "buyer", "flow", "lead_type"]
# A lead id prefix shorter than this is not looked up (git's minimum for an abbreviated id).
MIN_PREFIX = 4
_AMBIGUOUS_SHOWN = 5
# What the group-committed writer takes: a lead's record, an intent to post, a withdrawn intent,
# an inbound quote and a quote's outcome.
_Item = LeadRecord | Intent | Withdrawal | quote_rows.QuoteRecord | quote_rows.QuoteOutcome
# The journal and the sales carry no lead type: it is the lead's (a lead not yet booked: '').
_LEAD_TYPE = sa.func.coalesce(leads.c.lead_type, "")
_GROUP_COLUMN = {
    "source": entries.c.source_id,
    "buyer": entries.c.buyer_id,
    "flow": entries.c.flow,
    "lead_type": _LEAD_TYPE,
}
_SALES_COLUMN = {
    "source": sales.c.source_id,
    "buyer": sales.c.buyer_id,
    "flow": sales.c.flow,
    "lead_type": _LEAD_TYPE,
}


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _utc(value: Any) -> Any:
    # SQLite hands datetimes back naive; they were written as UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(row: sa.Row[Any]) -> dict[str, Any]:
    return {k: _utc(v) for k, v in row._mapping.items()}


@dataclass(frozen=True, slots=True)
class LeadStory:
    """Everything the books hold about one lead: the "who got it and why" view."""

    lead: dict[str, Any] | None
    attempts: list[dict[str, Any]]
    sales: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    returns: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Totals:
    key: str
    sales: int
    returns: int
    gross_revenue: Decimal
    net_revenue: Decimal
    gross_cost: Decimal
    net_cost: Decimal
    # Sales booked at the bid while the buyer's post answer stated another price.
    disputes: int = 0

    @property
    def gross_margin(self) -> Decimal:
        return self.gross_revenue - self.gross_cost

    @property
    def net_margin(self) -> Decimal:
        return self.net_revenue - self.net_cost


class Ledger:
    """One per process. `record` is the router's hook; `apply` is the outbox sink's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time: queue writers here rather than spin on the file lock.
        # PostgreSQL takes concurrent writers as they come.
        self._queue: list[tuple[_Item, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        # Built once: constructing an insert ... on conflict costs more CPU than executing it
        # (about 0.15 ms per statement, four per write).
        self._writes = {t.name: self._idempotent(t) for t in (leads, attempts, sales, entries)}
        # SQLite: the record path's transactions run whole in one thread of their own.
        self._sync_writer = sqlite_writer(engine)
        self._writer_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="ledger-writer") if self._sync_writer else None
        )
        self._checkpointer = Checkpointer(str(self._sync_writer.url.database)) if self._sync_writer else None
        # Rows written in the same transaction as each batch of records (see attach).
        self._companion: Companion | None = None

    @classmethod
    async def open(cls, url: str) -> Ledger:
        """Connect (`database_url(settings)` for the configured books) and migrate to the newest schema."""
        engine = create_engine(url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Queued leads reach the books before the connections close, unless the database has
        stopped taking writes: then, after `timeout_s`, they are left (the router's BooksGuard
        has held and spooled every lead whose write it did not see succeed)."""
        try:
            async with asyncio.timeout(timeout_s):
                if self._flusher is not None:
                    await asyncio.shield(self._flusher)
                if self._checkpointer is not None:
                    await self._checkpointer.close()
        except TimeoutError:
            log.error("ledger.close_abandoned", queued=len(self._queue), waited_s=timeout_s)
            if self._writer_thread is not None:
                self._writer_thread.shutdown(wait=False, cancel_futures=True)
            return
        if self._writer_thread is not None and self._sync_writer is not None:
            self._writer_thread.shutdown(wait=True)
            self._sync_writer.dispose()
        await self.engine.dispose()

    # --- writing -------------------------------------------------------------------------------

    def attach(self, companion: Companion | None) -> None:
        """Write `companion`'s pending rows in every write transaction from now on: the embedded
        controls (records/controls.py) reach the disk with the leads that changed them."""
        self._companion = companion
        if companion is not None and not isinstance(self._write_lock, asyncio.Lock):
            # What is taken first must be written first: one write transaction at a time.
            self._write_lock = asyncio.Lock()

    async def write_companion(self) -> None:
        """Write what the companion holds now, in a transaction of its own (no records)."""
        await self._write({t.name: [] for t in (leads, attempts, sales, entries)})

    async def record(
        self,
        result: RoutingResult,
        ping_fields: Mapping[str, str],
        received_at: float,
        config_version: str,
    ) -> bool:
        """The router's write before it answers: the lead, its attempts, sales and money. False
        when the books already answer this lead_id (an earlier call, here or on another replica,
        answered or offered it): nothing is written and the books' answer is the answer."""
        record = lead_record(result, ping_fields, received_at, time.time(), config_version)
        return await self._enqueue(record)

    async def offer(self, intent: Intent) -> bool:
        """Before a post leaves: the intent, committed. False when the lead is already offered or
        answered elsewhere (only a first post, `seq` 0, can be refused): do not post."""
        return await self._enqueue(intent)

    def withdraw(self, lead_id: str, seq: int) -> None:
        """An intent whose commit the router stopped waiting for: its post never left. Queued
        behind the intent itself, so it lands after it whenever that lands."""
        self._queue_item(Withdrawal(lead_id, seq))

    async def answer(self, lead_id: str) -> RoutingResult | None:
        """What the books say about a lead_id: its recorded answer, or what its intents say."""
        return await past_answer(self.engine, lead_id)

    async def quote(self, item: quote_rows.QuoteRecord | quote_rows.QuoteOutcome) -> None:
        """An inbound quote, or what became of it (records/quotes.py), group-committed."""
        await self._enqueue(item)

    async def find_quote(self, quote_id: str) -> quote_rows.BookedQuote | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: quote_rows.find(c, quote_id))

    def _queue_item(self, item: _Item) -> asyncio.Future[bool]:
        # Group commit: items arriving while a transaction commits share the next one (one fsync,
        # one round trip per table), on SQLite and PostgreSQL alike.
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a caller that gave up is told by the BooksGuard
        self._queue.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return done

    async def _enqueue(self, item: _Item) -> bool:
        # Shielded: a caller that gives up does not take the write of its item with it.
        return await asyncio.shield(self._queue_item(item))

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_GROUP_MAX], self._queue[_GROUP_MAX:]
            items = [r for r, _ in batch]
            try:
                refused = await self._commit(items)
                outcomes: list[BaseException | bool] = [i not in refused for i in range(len(items))]
            except Exception:
                # Alone, each item gets its own answer: one bad record fails only its own lead.
                outcomes = []
                for item in items:
                    try:
                        outcomes.append(not await self._commit([item]))
                    except Exception as exc:
                        outcomes.append(exc)
            for (_, fut), got in zip(batch, outcomes, strict=True):
                if not fut.done():
                    if isinstance(got, BaseException):
                        fut.set_exception(got)
                    else:
                        fut.set_result(got)

    async def _commit(self, items: Sequence[_Item]) -> set[int]:
        """One transaction for a batch of intents and records, with the embedded controls changed
        meanwhile (records/controls.py); the positions of the items refused."""
        async with self._write_lock:
            # Taken under the lock, on the event loop: batches reach the disk in the order taken.
            extra = self._companion.take() if self._companion is not None else None
            try:
                if self._writer_thread is not None:
                    loop = asyncio.get_running_loop()
                    refused = await loop.run_in_executor(self._writer_thread, self._commit_sync, items, extra)
                else:
                    async with self.engine.begin() as conn:
                        refused = await conn.run_sync(self._write_batch, items, extra)
            except BaseException:
                if extra is not None and self._companion is not None:
                    self._companion.put_back(extra)
                raise
        if self._checkpointer is not None:
            self._checkpointer.wrote()
        return refused

    def _commit_sync(self, items: Sequence[_Item], extra: Any = None) -> set[int]:
        assert self._sync_writer is not None
        with self._sync_writer.begin() as conn:
            return self._write_batch(conn, items, extra)

    def _write_batch(self, conn: sa.Connection, items: Sequence[_Item], extra: Any = None) -> set[int]:
        """Intents first (a first post refused when its lead is taken), then withdrawals, then the
        records (one answered or offered elsewhere is refused), then the intents they close."""
        firsts = [i for i in items if isinstance(i, Intent) and i.seq == 0]
        later = [i for i in items if isinstance(i, Intent) and i.seq > 0]
        taken = offers.write_intents(conn, firsts, later)
        offers.withdraw(conn, [i for i in items if isinstance(i, Withdrawal)])
        records = [r for r in items if isinstance(r, LeadRecord)]
        booked = offers.already_booked(conn, [r.lead_id for r in records if not offers.posted(r)])
        written = [r for r in records if offers.posted(r) or r.lead_id not in booked]
        rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (leads, attempts, sales, entries)}
        for r in written:
            self._lead_rows(r, rows)
        for table in (leads, attempts, sales, entries):
            if rows[table.name]:
                conn.execute(self._writes[table.name], rows[table.name])
        offers.close_intents(conn, written)
        quote_rows.write(
            conn,
            [i for i in items if isinstance(i, quote_rows.QuoteRecord)],
            [i for i in items if isinstance(i, quote_rows.QuoteOutcome)],
        )
        if extra is not None and self._companion is not None:
            self._companion.write(conn, extra)
        kept = {id(r) for r in written}

        def refuse(item: _Item) -> bool:
            if isinstance(item, Intent):
                return item.seq == 0 and item.lead_id in taken
            return isinstance(item, LeadRecord) and id(item) not in kept

        return {n for n, item in enumerate(items) if refuse(item)}

    async def apply(self, records: Sequence[Record]) -> None:
        """Apply records in one transaction, one multi-row insert per table; a record applied twice
        changes nothing (every insert is ON CONFLICT DO NOTHING on the natural key)."""
        if not records:
            return
        rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (leads, attempts, sales, entries)}
        for r in records:
            if isinstance(r, LeadRecord):
                self._lead_rows(r, rows)
            else:
                self._sale_rows(r, rows)
        await self._write(rows)

    async def _write(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        async with self._write_lock:
            # Taken under the lock, on the event loop: batches reach the disk in the order taken.
            extra = self._companion.take() if self._companion is not None else None
            try:
                if self._writer_thread is not None:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._writer_thread, self._write_rows, rows, extra)
                else:
                    async with self.engine.begin() as conn:
                        await conn.run_sync(self._write_rows_in, rows, extra)
            except BaseException:
                if extra is not None and self._companion is not None:
                    self._companion.put_back(extra)
                raise
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    def _write_rows(self, rows: dict[str, list[dict[str, Any]]], extra: Any = None) -> None:
        assert self._sync_writer is not None
        with self._sync_writer.begin() as conn:
            self._write_rows_in(conn, rows, extra)

    def _write_rows_in(self, conn: sa.Connection, rows: dict[str, list[dict[str, Any]]], extra: Any) -> None:
        for table in (leads, attempts, sales, entries):
            if rows[table.name]:
                # executemany form: one cached statement shape, batched by the driver adapter.
                conn.execute(self._writes[table.name], rows[table.name])
        if extra is not None and self._companion is not None:
            self._companion.write(conn, extra)

    def _idempotent(self, table: sa.Table) -> Any:
        stmt = self._insert(table)
        if table is not sales:
            return stmt.on_conflict_do_nothing()
        # A sale can arrive twice: from the cap commit's outbox (cost share not yet known) and
        # from the router's write. The second fills in the cost share; nothing else changes.
        return stmt.on_conflict_do_update(
            index_elements=[sales.c.lead_id, sales.c.buyer_id],
            set_={"cost": stmt.excluded.cost},
            where=(sales.c.cost == 0) & (stmt.excluded.cost != 0),
        )

    def _insert(self, table: sa.Table) -> Any:
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return insert(table)

    async def _put(self, conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            await conn.execute(self._insert(table).values(rows).on_conflict_do_nothing())

    def _lead_rows(self, r: LeadRecord, rows: dict[str, list[dict[str, Any]]]) -> None:
        received = _at(r.received_at)
        rows["leads"].append(
            {
                "lead_id": r.lead_id,
                "flow": r.flow,
                "source_id": r.source_id,
                "config_version": r.config_version,
                "received_at": received,
                "answered_at": _at(r.answered_at),
                "outcome": r.outcome,
                "test": r.test,
                "cost": r.cost,
                "revenue": r.revenue,
                "margin": r.margin,
                "elapsed_ms": r.elapsed_ms,
                "trace_id": r.trace_id,
                "ping_fields": dict(r.ping_fields),
                "request_digest": r.request_digest or None,
                "lead_type": r.lead_type,
                "compliance": dict(r.compliance) if r.compliance else None,
            }
        )
        rows["attempts"].extend(
            {
                "lead_id": r.lead_id,
                "seq": a.seq,
                "buyer_id": a.buyer_id,
                "tier": a.tier,
                "status": a.status,
                "bid": a.bid,
                "ping_ms": a.ping_ms,
                "post_ms": a.post_ms,
                "http_status": a.http_status,
                "reason": a.reason,
                "offered": a.offered,
                "exclusive": a.exclusive,
            }
            for a in r.attempts
        )
        for s in r.sales:
            self._sale_rows(s, rows)
        if not r.test and r.cost:
            rows["entries"].append(self._entry(r.lead_id, "", "cost", r.cost, received, r))

    def _sale_rows(self, s: SaleRecord, rows: dict[str, list[dict[str, Any]]]) -> None:
        rows["sales"].append(
            {
                "lead_id": s.lead_id,
                "buyer_id": s.buyer_id,
                "price": s.price,
                "cost": s.cost,
                "buyer_lead_id": s.buyer_lead_id,
                "exclusive": s.exclusive,
                "tier": s.tier,
                "settlement": s.settlement,
                "sold_at": _at(s.at),
                "flow": s.flow,
                "source_id": s.source_id,
                "test": s.test,
                "config_version": s.config_version,
                "stated_price": s.stated_price,
            }
        )
        if s.settlement == "sold" and not s.test:
            rows["entries"].append(self._entry(s.lead_id, s.buyer_id, "revenue", s.price, _at(s.at), s))

    @staticmethod
    def _entry(
        lead_id: str, buyer_id: str, kind: str, amount: Decimal, at: datetime, r: LeadRecord | SaleRecord
    ) -> dict[str, Any]:
        return {
            "lead_id": lead_id,
            "buyer_id": buyer_id,
            "kind": kind,
            "amount": amount,
            "at": at,
            "flow": r.flow,
            "source_id": r.source_id,
        }

    async def settle(self, lead_id: str, buyer_id: str, sold: bool, now: float | None = None) -> str:
        """Resolve a post whose outcome was unknown as sold or rejected (`records/intents.py`):
        a confirmed one is booked as a sale at its intent's price; revenue is a new entry."""
        at = time.time() if now is None else now
        async with self._write_lock, self.engine.begin() as conn:
            return await conn.run_sync(lambda c: offers.settle(c, lead_id, buyer_id, sold=sold, now=at))

    async def settle_reservation(
        self, buyer_id: str, reservation_id: str, sold: bool, lead_id: str = ""
    ) -> tuple[str, str]:
        """Settle in the books the post a cap reservation was made for (found by its intent, or
        by `lead_id` when the hot state still knows it): (lead_id, settlement). LookupError when
        the books hold no post for it (it never left: nothing to book)."""
        async with self.engine.connect() as conn:
            found = await conn.run_sync(lambda c: offers.lead_of_reservation(c, buyer_id, reservation_id))
        lead_id = found or lead_id
        if not lead_id:
            raise LookupError(f"no post for reservation {reservation_id!r} of {buyer_id!r} in the books")
        return lead_id, await self.settle(lead_id, buyer_id, sold)

    async def open_intents(self, older_than_s: float = 0.0) -> list[dict[str, Any]]:
        """Posts whose outcome is unknown, no sale booked for them: what reconciliation settles."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: offers.open_intents(c, older_than_s))

    async def return_sale(
        self, lead_id: str, buyer_id: str, reason: str, policy: ReturnPolicy, now: float | None = None
    ) -> dict[str, Any]:
        """Book a buyer's return as reversing journal entries; the sale itself is never edited.

        Returning the same sale again answers the first return (`booked` False) and changes
        nothing; `booked` is True when this call booked the return."""
        if not reason.strip():
            raise ReturnRefused("a return needs a reason")
        now_s = time.time() if now is None else now
        at = _at(now_s)
        async with self._write_lock, self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # One return decision per buyer at a time, so the rate check sees every earlier one.
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(buyer_id))))
            done = (
                await conn.execute(
                    sa.select(returns).where(returns.c.lead_id == lead_id, returns.c.buyer_id == buyer_id)
                )
            ).first()
            if done is not None:
                return {**_row(done), "booked": False}
            sale = (
                await conn.execute(
                    sa.select(sales).where(sales.c.lead_id == lead_id, sales.c.buyer_id == buyer_id)
                )
            ).first()
            if sale is None:
                raise ReturnRefused(f"no sale of lead {lead_id!r} to buyer {buyer_id!r}")
            since = _at(now_s - policy.rate_window_s)
            sold_n = await conn.scalar(
                sa.select(sa.func.count()).where(
                    sales.c.buyer_id == buyer_id,
                    sales.c.settlement == "sold",
                    sales.c.test.is_(False),
                    sales.c.sold_at >= since,
                )
            )
            returned_n = await conn.scalar(
                sa.select(sa.func.count()).where(
                    returns.c.buyer_id == buyer_id, returns.c.returned_at >= since
                )
            )
            check_return(
                policy,
                settlement=str(sale.settlement),
                test=bool(sale.test),
                sold_at=_utc(sale.sold_at).timestamp(),
                now=now_s,
                sales_in_window=int(sold_n or 0),
                returns_in_window=int(returned_n or 0),
            )
            cost = ZERO
            if policy.refund_cost:
                cost_entry = await conn.scalar(
                    sa.select(entries.c.amount).where(
                        entries.c.lead_id == lead_id, entries.c.buyer_id == "", entries.c.kind == "cost"
                    )
                )
                cost = cost_entry or ZERO
            reversal = {"at": at, "flow": sale.flow, "source_id": sale.source_id, "lead_id": lead_id}
            await self._put(
                conn,
                entries,
                [{**reversal, "buyer_id": buyer_id, "kind": "revenue_reversal", "amount": -sale.price}],
            )
            if cost:
                # At most once per lead (the key is the lead), however many of its buyers return it.
                await self._put(
                    conn, entries, [{**reversal, "buyer_id": "", "kind": "cost_reversal", "amount": -cost}]
                )
            row = {
                "lead_id": lead_id,
                "buyer_id": buyer_id,
                "reason": reason.strip()[:500],
                "returned_at": at,
                "revenue_reversed": sale.price,
                "cost_reversed": cost,
            }
            await self._put(conn, returns, [row])
            return {**row, "booked": True}

    # --- reading -------------------------------------------------------------------------------

    async def resolve(self, lead_id: str) -> str:
        """The full lead id for `lead_id` or a unique prefix of it (at least MIN_PREFIX characters),
        as git resolves commits. Raises LookupError: no such lead, or an ambiguous prefix (with
        the ids it matches)."""
        async with self.engine.connect() as conn:
            # A sale can reach the books before its lead (outbox); a post's intent before both.
            for table in (leads, sales, intents):
                if await conn.scalar(sa.select(table.c.lead_id).where(table.c.lead_id == lead_id).limit(1)):
                    return lead_id
            if len(lead_id) < MIN_PREFIX:
                raise LookupError(f"no lead {lead_id!r} in the books")
            found: set[str] = set()
            for table in (leads, sales, intents):
                q = (
                    sa.select(table.c.lead_id)
                    .where(table.c.lead_id.startswith(lead_id, autoescape=True))
                    .distinct()
                    .order_by(table.c.lead_id)
                    .limit(_AMBIGUOUS_SHOWN + 1)
                )
                found.update(str(x) for x in await conn.scalars(q))
        if not found:
            raise LookupError(f"no lead {lead_id!r} in the books")
        if len(found) > 1:
            shown = sorted(found)[:_AMBIGUOUS_SHOWN]
            more = ", …" if len(found) > _AMBIGUOUS_SHOWN else ""
            raise LookupError(
                f"lead id prefix {lead_id!r} is ambiguous: it matches {', '.join(shown)}{more}; "
                "give more characters"
            )
        return found.pop()

    async def lead(self, lead_id: str) -> LeadStory:
        async with self.engine.connect() as conn:

            async def rows(table: sa.Table, *order: Any) -> list[dict[str, Any]]:
                q = sa.select(table).where(table.c.lead_id == lead_id).order_by(*order)
                return [_row(r) for r in await conn.execute(q)]

            head = await rows(leads)
            return LeadStory(
                lead=head[0] if head else None,
                attempts=await rows(attempts, attempts.c.seq),
                sales=await rows(sales, sales.c.sold_at, sales.c.buyer_id),
                entries=await rows(entries, entries.c.at, entries.c.kind, entries.c.buyer_id),
                returns=await rows(returns, returns.c.returned_at),
            )

    async def totals(
        self, by: GroupBy, since: datetime, until: datetime, key: str | None = None
    ) -> list[Totals]:
        """Gross and net money per source / buyer / flow / lead type over [since, until), from the
        journal."""
        col = _GROUP_COLUMN[by]
        typed = by == "lead_type"

        def total(*kinds: str) -> Any:
            amount = sa.case((entries.c.kind.in_(kinds), entries.c.amount), else_=None)
            return sa.type_coerce(sa.func.coalesce(sa.func.sum(amount), 0), Money)

        def count(kind: str) -> Any:
            return sa.func.count(sa.case((entries.c.kind == kind, 1), else_=None))

        q = (
            sa.select(
                col,
                count("revenue"),
                count("revenue_reversal"),
                total("revenue"),
                total("revenue", "revenue_reversal"),
                total("cost"),
                total("cost", "cost_reversal"),
            )
            .select_from(entries.outerjoin(leads, leads.c.lead_id == entries.c.lead_id) if typed else entries)
            .where(entries.c.at >= since, entries.c.at < until)
            .group_by(col)
            .order_by(col)
        )
        if by == "buyer":
            q = q.where(entries.c.buyer_id != "")
        disputed = (
            sa.select(_SALES_COLUMN[by], sa.func.count())
            .select_from(sales.outerjoin(leads, leads.c.lead_id == sales.c.lead_id) if typed else sales)
            .where(
                sales.c.sold_at >= since,
                sales.c.sold_at < until,
                sales.c.stated_price.is_not(None),
                sales.c.settlement == "sold",
                sales.c.test.is_(False),
            )
            .group_by(_SALES_COLUMN[by])
        )
        if key is not None:
            disputed = disputed.where(_SALES_COLUMN[by] == key)
        async with self.engine.connect() as conn:
            disputes = {str(k): int(n) for k, n in await conn.execute(disputed)}
        if by == "buyer":
            return await self._buyer_totals(q, since, until, key, disputes)
        if key is not None:
            q = q.where(col == key)
        async with self.engine.connect() as conn:
            out = (await conn.execute(q)).all()
            return [
                Totals(
                    str(k),
                    int(n),
                    int(rn),
                    g or ZERO,
                    net or ZERO,
                    c or ZERO,
                    nc or ZERO,
                    disputes.get(str(k), 0),
                )
                for k, n, rn, g, net, c, nc in out
            ]

    async def _buyer_totals(
        self, q: Any, since: datetime, until: datetime, key: str | None, disputes: dict[str, int]
    ) -> list[Totals]:
        """Per buyer, the cost is each sale's cost share (the lead's cost split in proportion to
        revenue, as booked on the sale), counted with the sale's revenue; a source's refund of a
        returned lead's cost reverses every share of that lead, each on its own buyer."""
        q = q.where(entries.c.buyer_id != "")
        share = sa.type_coerce(
            sa.func.coalesce(
                sa.func.sum(sa.case((entries.c.kind == "revenue", sales.c.cost), else_=None)), 0
            ),
            Money,
        )
        booked = (
            sa.select(entries.c.buyer_id, share)
            .select_from(
                entries.join(
                    sales, (sales.c.lead_id == entries.c.lead_id) & (sales.c.buyer_id == entries.c.buyer_id)
                )
            )
            .where(entries.c.at >= since, entries.c.at < until, entries.c.kind == "revenue")
            .group_by(entries.c.buyer_id)
        )
        refunded = (
            sa.select(sales.c.buyer_id, sa.type_coerce(sa.func.coalesce(sa.func.sum(sales.c.cost), 0), Money))
            .select_from(entries.join(sales, sales.c.lead_id == entries.c.lead_id))
            .where(
                entries.c.at >= since,
                entries.c.at < until,
                entries.c.kind == "cost_reversal",
                sales.c.settlement == "sold",
            )
            .group_by(sales.c.buyer_id)
        )
        if key is not None:
            q = q.where(entries.c.buyer_id == key)
            booked = booked.where(entries.c.buyer_id == key)
            refunded = refunded.where(sales.c.buyer_id == key)
        async with self.engine.connect() as conn:
            out = (await conn.execute(q)).all()
            costs = {str(b): c or ZERO for b, c in await conn.execute(booked)}
            refunds = {str(b): c or ZERO for b, c in await conn.execute(refunded)}
        rows = []
        for k, n, rn, g, net, _, _ in out:
            cost = costs.get(str(k), ZERO)
            rows.append(
                Totals(
                    str(k),
                    int(n),
                    int(rn),
                    g or ZERO,
                    net or ZERO,
                    cost,
                    cost - refunds.get(str(k), ZERO),
                    disputes.get(str(k), 0),
                )
            )
        # A shared lead's cost refunded in the window, whose own sale was booked before it.
        seen = {t.key for t in rows}
        rows += [Totals(b, 0, 0, ZERO, ZERO, ZERO, -r) for b, r in refunds.items() if b not in seen]
        return sorted(rows, key=lambda t: t.key)


class Companion(Protocol):
    """Rows that go to the disk inside the ledger's write transactions."""

    def take(self) -> Any:
        """What to write now (None: nothing); called on the event loop, under the write lock."""

    def write(self, conn: sa.Connection, taken: Any) -> None:
        """Write `taken` in the open transaction (on the writer thread for SQLite)."""

    def put_back(self, taken: Any) -> None:
        """The transaction failed: keep `taken` for the next one."""


def _retrieved(f: asyncio.Future[bool]) -> None:
    if not f.cancelled():
        f.exception()
