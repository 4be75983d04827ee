"""Caps, dollar budgets and prepaid balances on Redis, exact across every replica.

Reserve, commit, release and mark-unsettled are one Lua script (loaded once, called by SHA).
A local mirror of the counters lets the router skip full buyers without a round trip; the
script stays the authority."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from decimal import Decimal
from typing import Any

import orjson
import structlog

from routelead.state.plan import counters, floor_cents, from_cents, to_cents
from routelead.state.ports import (
    CapLimits,
    Reservation,
    StateMetrics,
    StateUnavailable,
    UnsettledSale,
)
from routelead.state.redis.bounded import Health
from routelead.state.redis.caps_script import CAP_SCRIPT
from routelead.state.redis.connection import Client

log = structlog.get_logger("routelead.state.redis")

# How often the mirror re-reads the counters of the buyers this process has seen.
REFRESH_S = 0.25


def tag(buyer_id: str) -> str:
    """Every key of one buyer shares this hash tag, so one script touches one Cluster slot: the
    counters, balance, reservations and the buyer's outbox stream (the commit writes the sale to
    it atomically). Buyers spread over a cluster's masters; one buyer's load stays on one."""
    return f"rl:{{{buyer_id}}}"


def outbox_key(buyer_id: str) -> str:
    return f"{tag(buyer_id)}:outbox"


class RedisCapStore:
    def __init__(self, redis: Client, health: Health, refresh_s: float = REFRESH_S) -> None:
        self._redis = redis
        self._health = health
        self._script = redis.register_script(CAP_SCRIPT)
        self._refresh_s = refresh_s
        self._mirror: dict[str, int] = {}
        # Local writes to the mirror, numbered: a refresh that read Redis before a local write
        # must not put the older value back over it when it lands.
        self._writes = 0
        self._written: dict[str, int] = {}
        self._watched: dict[tuple[str, tuple[str, ...]], CapLimits] = {}
        # The latest `now` the router passed in, and when: the mirror follows the caller's clock.
        self._seen_now = (time.time(), time.monotonic())
        self._refresher: asyncio.Task[None] | None = None
        self.metrics: StateMetrics = health.metrics

    @property
    def healthy(self) -> bool:
        return self._health.up

    # ---- fast path -------------------------------------------------------------------------

    def has_room(
        self, caps: CapLimits, now: float, price: Decimal | None = None, scopes: tuple[str, ...] = ()
    ) -> bool:
        self._watch(caps, now, scopes)
        if not self._health.up:
            return False  # counters unknown: a capped buyer is not sold to (the Redis-down policy)
        cents = to_cents(price) if price is not None else 0
        t = tag(caps.buyer_id)
        for c in counters(caps, now, cents, scopes, every=False):
            value = self._mirror.get(f"{t}:{c.name}", 0)
            if value + c.add > c.limit or (price is None and value >= c.limit):
                return False
        if caps.prepaid and (bal := self._mirror.get(f"{t}:balance")) is not None:
            left = bal - cents
            if left < floor_cents(caps) or (price is None and left <= floor_cents(caps)):
                return False
        return True

    def _watch(self, caps: CapLimits, now: float, scopes: tuple[str, ...]) -> None:
        self._watched[(caps.buyer_id, scopes)] = caps
        self._seen_now = (now, time.monotonic())
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            # Read first: a buyer seen for the first time is known on the next lead, not 250 ms on.
            with contextlib.suppress(StateUnavailable):
                await self.refresh()
            await asyncio.sleep(self._refresh_s)

    async def refresh(self) -> None:
        """Re-read every watched buyer's current counters and balance (one pipelined round trip)."""
        now = self._seen_now[0] + (time.monotonic() - self._seen_now[1])
        wanted: set[str] = set()
        for (_, scopes), caps in list(self._watched.items()):
            t = tag(caps.buyer_id)
            wanted.update(f"{t}:{c.name}" for c in counters(caps, now, 0, scopes, every=False))
            if caps.prepaid:
                wanted.add(f"{t}:balance")
        keys = sorted(wanted)
        if not keys:
            return

        async def read() -> list[Any]:
            # Not a MULTI: on a cluster the buyers' keys sit in many slots, and the pipeline is
            # split per master and sent to all of them at once.
            pipe = self._redis.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
            return list(await pipe.execute())

        began = self._writes
        values = await self._health.call("caps.refresh", read, settle=True)
        fresh = {k: int(v or 0) for k, v in zip(keys, values, strict=True)}
        for k in keys:
            if self._written.get(k, -1) > began and k in self._mirror:
                fresh[k] = self._mirror[k]  # written here after this read began: ours is newer
        # Replaced wholesale, so counters of periods that ended drop out of the mirror.
        self._mirror = fresh
        self._written = {k: n for k, n in self._written.items() if n > began}

    def _set(self, key: str, value: int) -> None:
        self._writes += 1
        self._written[key] = self._writes
        self._mirror[key] = value

    # ---- the script ------------------------------------------------------------------------

    async def _run(self, what: str, keys: list[str], args: list[Any], *, settle: bool) -> Any:
        return await self._health.call(what, lambda: self._script(keys=keys, args=args), settle=settle)

    async def reserve(
        self,
        caps: CapLimits,
        lead_id: str,
        now: float,
        price: Decimal = Decimal("0"),
        scopes: tuple[str, ...] = (),
    ) -> Reservation | None:
        self._watch(caps, now, scopes)
        cents = to_cents(price)
        # Every period's counter, capped or not: a cap added mid-period counts its earlier sales.
        plan = counters(caps, now, cents, scopes)
        r = Reservation(
            caps.buyer_id,
            tuple(c.name for c in plan if not c.budget),
            lead_id,
            f"{lead_id}.{uuid.uuid4().hex[:8]}",
            cents,
            tuple(c.name for c in plan if c.budget),
            caps.prepaid,
        )
        t = tag(caps.buyer_id)
        keys = [f"{t}:res", f"{t}:balance", f"{t}:outbox", *(f"{t}:{c.name}" for c in plan)]
        args: list[Any] = ["reserve", r.id, _record(r, "reserved", ""), cents]
        args += ["1" if caps.prepaid else "0", floor_cents(caps)]
        for c in plan:
            args += [c.limit, c.add, c.ttl_s]
        reply = await self._run("caps.reserve", keys, args, settle=False)
        ok, balance, values = int(reply[0]), int(reply[2]), [int(v) for v in reply[3:]]
        for k, v in zip(keys[3:], values, strict=True):
            self._set(k, v)
        if caps.prepaid:
            self._set(f"{t}:balance", balance)
        return r if ok else None

    async def commit(self, r: Reservation, outbox: bytes | None = None, cents: int | None = None) -> None:
        await self._settle_quietly("caps.commit", self._commit(r, outbox, cents))

    async def _commit(self, r: Reservation, outbox: bytes | None, cents: int | None = None) -> int:
        t = tag(r.buyer_id)
        delta = 0 if cents is None else cents - r.cents
        # A stated price other than the reserved one moves the budgets and the balance with it.
        budgets = [f"{t}:{n}" for n in r.budget_keys] if delta else []
        keys = [f"{t}:res", f"{t}:balance", f"{t}:outbox", *budgets]
        args: list[Any] = ["commit", r.id, "1" if outbox is not None else "0", outbox or b""]
        args += [delta, "1" if r.prepaid and delta else "0"]
        done = int(await self._run("caps.commit", keys, args, settle=True))
        if done and delta:
            for k in budgets:
                if k in self._mirror:
                    self._set(k, max(0, self._mirror[k] + delta))
            if r.prepaid and f"{t}:balance" in self._mirror:
                self._set(f"{t}:balance", self._mirror[f"{t}:balance"] - delta)
        return done

    async def release(self, r: Reservation) -> None:
        await self._settle_quietly("caps.release", self._release(r))

    async def _release(self, r: Reservation) -> int:
        t = tag(r.buyer_id)
        names = [*r.keys, *r.budget_keys]
        keys = [f"{t}:res", f"{t}:balance", f"{t}:outbox", *(f"{t}:{n}" for n in names)]
        amounts = [1] * len(r.keys) + [r.cents] * len(r.budget_keys)
        args = ["release", r.id, r.cents if r.prepaid else "", *amounts]
        freed = int(await self._run("caps.release", keys, args, settle=True))
        if freed:
            for k, a in zip(keys[3:], amounts, strict=True):
                if k in self._mirror:
                    self._set(k, max(0, self._mirror[k] - a))
        return freed

    async def unsettled(self, r: Reservation, reason: str) -> None:
        t = tag(r.buyer_id)
        keys = [f"{t}:res", f"{t}:balance", f"{t}:outbox"]
        args = ["mark", r.id, _record(r, "unsettled", reason)]
        await self._settle_quietly("caps.unsettled", self._run("caps.unsettled", keys, args, settle=True))
        self.metrics.marked()

    async def _settle_quietly(self, what: str, op: Any) -> None:
        """The post already happened: a Redis failure here must not fail the lead. The record stays
        'reserved' in Redis (still counted) and is listed as orphaned for reconciliation."""
        try:
            await op
        except StateUnavailable as exc:
            log.error("caps.settle_failed", op=what, error=str(exc))

    # ---- operations (CLI now, Admin API later) -----------------------------------------------

    async def list_unsettled(self, older_than_s: float = 30.0) -> list[UnsettledSale]:
        cutoff = time.time() - older_than_s
        found: list[UnsettledSale] = []
        async for key in self._redis.scan_iter(match="rl:{*}:res", count=500):
            buyer_id = _text(key)[4:-5]
            for rid, raw in (await self._redis.hgetall(key)).items():
                rec = orjson.loads(raw)
                if rec["state"] == "unsettled" or rec["at"] <= cutoff:
                    found.append(
                        UnsettledSale(
                            buyer_id,
                            _text(rid),
                            rec["lead"],
                            from_cents(rec["cents"]),
                            rec["at"],
                            "unsettled" if rec["state"] == "unsettled" else "orphaned",
                            rec["reason"] or "reserved and never settled (process stopped?)",
                        )
                    )
        return sorted(found, key=lambda u: u.reserved_at)

    async def settle(
        self, buyer_id: str, reservation_id: str, *, accepted: bool, outbox: bytes | None = None
    ) -> bool:
        raw = await self._redis.hget(f"{tag(buyer_id)}:res", reservation_id)
        if raw is None:
            return False
        rec = orjson.loads(raw)
        r = Reservation(
            buyer_id,
            tuple(rec["n"]),
            rec["lead"],
            reservation_id,
            rec["cents"],
            tuple(rec["usd"]),
            rec["prepaid"],
        )
        if accepted:
            done = await self._commit(r, outbox)
            self.metrics.confirmed(done)
        else:
            done = await self._release(r)
            self.metrics.freed(done)
        return bool(done)

    async def top_up(self, buyer_id: str, amount: Decimal) -> Decimal:
        key = f"{tag(buyer_id)}:balance"
        cents = int(await self._health.call("caps.top_up", lambda: self._redis.incrby(key, to_cents(amount))))
        self._set(key, cents)  # this replica at once; the others on their next refresh
        self.metrics.topped_up()
        return from_cents(cents)

    async def balance(self, buyer_id: str) -> Decimal:
        raw = await self._health.call("caps.balance", lambda: self._redis.get(f"{tag(buyer_id)}:balance"))
        return from_cents(int(raw or 0))

    async def count(self, buyer_id: str, name: str) -> int:
        """A counter's value ("n:day:2026-11-22", "usd:…" in cents)."""
        return int(await self._redis.get(f"{tag(buyer_id)}:{name}") or 0)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher


def _record(r: Reservation, state: str, reason: str) -> bytes:
    return orjson.dumps(
        {
            "lead": r.lead_id,
            "state": state,
            "reason": reason,
            "at": time.time(),
            "cents": r.cents,
            "n": list(r.keys),
            "usd": list(r.budget_keys),
            "prepaid": r.prepaid,
        }
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
