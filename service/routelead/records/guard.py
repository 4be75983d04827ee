"""Fail closed on the books: a routed lead whose record cannot be written is held, not lost, and no
new lead is routed while the books refuse writes.

Without this, a failed write after a sale answered INTERNAL, the sale was never booked, and the
caller's retry with the same lead_id routed the lead again: a second sale to the buyers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
import structlog

from routelead.domain.outcome import RoutingResult
from routelead.records.codec import lead_record
from routelead.records.intents import Intent
from routelead.records.port import BooksUnavailable, IntentWriter, LedgerWriter, Unbooked
from routelead.records.spool import write_spool

log = structlog.get_logger("routelead.records")


def is_outage(exc: BaseException) -> bool:
    """The database is away (connection, lock, timeout), as opposed to refusing this one record:
    only an outage stops routing, so one record the database rejects cannot stop the service."""
    rejected = (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError)
    return not isinstance(exc, (*rejected, ValueError, TypeError, ArithmeticError))


class BooksCounters(Protocol):
    """Where the guard counts records held, booked late and leads refused: the composition root
    injects the Prometheus one (telemetry/metrics.py)."""

    def held(self) -> None: ...
    def booked_late(self) -> None: ...
    def refused(self) -> None: ...


class NoBooksCounters:
    def held(self) -> None:
        pass

    def booked_late(self) -> None:
        pass

    def refused(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Held:
    result: RoutingResult
    ping_fields: Mapping[str, str]
    received_at: float
    config_version: str


class BooksGuard:
    """Wraps the router's LedgerWriter. `check` before routing; `record` after; `answer` for a
    retried lead_id. A background task retries held records, with backoff, until they are booked."""

    def __init__(
        self,
        writer: LedgerWriter,
        *,
        intents: IntentWriter | None = None,
        on_booked: Callable[[RoutingResult], Awaitable[None]] | None = None,
        on_writable: Callable[[bool], Awaitable[None]] | None = None,
        retry_s: float = 0.2,
        max_retry_s: float = 5.0,
        keep: int = 10_000,
        # A write slower than this counts as an outage: without it a hung database connection
        # (or a SQLite file locked by another process) holds every answer until it gives up.
        write_timeout_s: float = 1.0,
        spool: Path | None = None,
        counters: BooksCounters | None = None,
    ) -> None:
        self._writer = writer
        self._counters = counters if counters is not None else NoBooksCounters()
        # Books that record intents (the composition root passes the ledger): a lead is posted
        # only after its intent is committed.
        self.intents = intents
        # Where records still unwritten at shutdown go, for the next start to apply.
        self.spool = spool
        self._write_timeout = write_timeout_s
        # Tells the idempotency store (and through it other replicas) the answer of a late-booked lead.
        self.on_booked = on_booked
        # Tells health checks: not writable → not ready for new leads.
        self.on_writable = on_writable
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._held: dict[str, _Held] = {}
        # Answers of leads booked after being held, for a retry that arrives after the background
        # task booked them. Few: while the books are down no new lead is routed.
        self._booked: OrderedDict[str, RoutingResult] = OrderedDict()
        self._keep = keep
        self._down_since: float | None = None
        self._retrier: asyncio.Task[None] | None = None

    @property
    def writable(self) -> bool:
        return self._down_since is None

    @property
    def held(self) -> int:
        return len(self._held)

    def check(self) -> None:
        """Before any buyer is asked: refuse the lead while the books refuse writes."""
        if self._down_since is not None:
            self._counters.refused()
            raise BooksUnavailable(
                f"the books refuse writes (for {time.monotonic() - self._down_since:.1f} s); "
                "nothing was routed: retry later"
            )

    async def record(
        self,
        result: RoutingResult,
        ping_fields: Mapping[str, str],
        received_at: float,
        config_version: str,
    ) -> bool:
        """True: booked. False: the books already answer this lead_id (see `books_answer`)."""
        held = _Held(result, ping_fields, received_at, config_version)
        try:
            return await self._put(held)
        except Exception as exc:
            await self._hold(held, exc)
            raise Unbooked(_unbooked_message(result.lead_id)) from exc

    async def offer(self, intent: Intent, wait_s: float) -> bool:
        """Commit the intent of a post before it leaves; False: the lead is taken elsewhere.

        Raises BooksUnavailable — do not post — while the books refuse writes, when the write
        fails, or when its commit is not confirmed within `wait_s` (then it is withdrawn: if it
        lands later, it says the post never left)."""
        assert self.intents is not None
        if self._down_since is not None:
            raise BooksUnavailable("the books refuse writes: not posted")
        try:
            async with asyncio.timeout(max(0.0, min(wait_s, self._write_timeout))):
                return await self.intents.offer(intent)
        except TimeoutError:
            self.intents.withdraw(intent.lead_id, intent.seq)
            raise BooksUnavailable("the books did not confirm the offer in time: not posted") from None
        except Exception as exc:
            log.error("ledger.offer_failed", lead_id=intent.lead_id, error=type(exc).__name__)
            raise BooksUnavailable("the books refused the offer: not posted") from exc

    async def books_answer(self, lead_id: str) -> RoutingResult | None:
        """What the books say about a lead_id another call answered or offered."""
        return await self.intents.answer(lead_id) if self.intents is not None else None

    async def answer(self, lead_id: str) -> RoutingResult | None:
        """A retried lead_id (its answer key, outcome.answer_key) this process holds or booked late:
        its answer once booked (raises Unbooked while it cannot be); None if it holds nothing."""
        if (result := self._booked.get(lead_id)) is not None:
            return result
        held = self._held.get(lead_id)
        if held is None:
            return None
        if not await self._write(held):
            raise Unbooked(_unbooked_message(lead_id))
        return held.result

    async def close(self) -> None:
        """A last try for every held record; what still fails goes to the spool file (applied by
        the next start) and is logged, lead by lead."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        # One bounded try each while the books take them; after the first refusal the rest go
        # straight to the spool, so a stop finishes within the pod's grace period.
        for held in list(self._held.values()):
            if not await self._write(held):
                break
        if not self._held:
            return
        spooled = ""
        if self.spool is not None:
            now = time.time()
            records = [
                lead_record(h.result, h.ping_fields, h.received_at, now, h.config_version)
                for h in self._held.values()
            ]
            try:
                spooled = str(await asyncio.to_thread(write_spool, self.spool, records))
            except OSError as exc:
                log.error("ledger.spool_failed", path=str(self.spool), error=str(exc))
        for held in self._held.values():
            r = held.result
            log.error(
                "ledger.unbooked_at_exit",
                lead_id=r.lead_id,
                outcome=r.outcome.value,
                revenue=str(r.revenue),
                cost=str(r.cost),
                buyers=[s.buyer_id for s in r.sales],
                spooled_to=spooled or None,
            )

    async def _hold(self, held: _Held, exc: Exception) -> None:
        self._held[held.result.key] = held
        self._counters.held()
        outage = is_outage(exc)
        log.error(
            "ledger.write_failed",
            lead_id=held.result.lead_id,
            outcome=held.result.outcome.value,
            error=type(exc).__name__,  # type only: a driver's message may quote the row
            outage=outage,
            held=len(self._held),
        )
        if outage:
            await self._mark(writable=False)
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry())

    async def _write(self, held: _Held) -> bool:
        r = held.result
        try:
            if not await self._put(held):
                # Answered or offered elsewhere meanwhile: the books' answer stands.
                r = await self.books_answer(r.lead_id) or r
        except Exception as exc:
            # A rejection of this record still shows the database answering: routing may go on.
            await self._mark(writable=not is_outage(exc))
            return False
        await self._mark(writable=True)
        if self._held.pop(r.key, None) is None:
            return True  # booked meanwhile by the other path (a retry, or the background task)
        self._booked[r.key] = r
        while len(self._booked) > self._keep:
            self._booked.popitem(last=False)
        self._counters.booked_late()
        log.info("ledger.booked_late", lead_id=r.lead_id, outcome=r.outcome.value, held=len(self._held))
        if self.on_booked is not None:
            try:
                await self.on_booked(r)
            except Exception as exc:  # booked all the same; only other replicas' replay is late
                log.error("ledger.booked_late_not_shared", lead_id=r.lead_id, error=type(exc).__name__)
        return True

    async def _put(self, held: _Held) -> bool:
        # A write cut off here may still land later: applying a record twice changes nothing.
        async with asyncio.timeout(self._write_timeout):  # no extra task, unlike wait_for on 3.11
            done = await self._writer.record(
                held.result, held.ping_fields, held.received_at, held.config_version
            )
        return done is not False

    async def _mark(self, *, writable: bool) -> None:
        if writable == (self._down_since is None):
            return
        if writable:
            assert self._down_since is not None
            log.info("ledger.writable", down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = None
        else:
            self._down_since = time.monotonic()
        if self.on_writable is not None:
            await self.on_writable(writable)

    async def _retry(self) -> None:
        pause = self._retry_s
        while self._held:
            await asyncio.sleep(pause)
            booked = [await self._write(h) for h in list(self._held.values())]
            pause = self._retry_s if any(booked) else min(pause * 2, self._max_retry_s)


def _unbooked_message(lead_id: str) -> str:
    return (
        f"lead {lead_id} was routed but the books refused its record; it is held and retried: "
        "retry with the same lead_id for its answer"
    )
