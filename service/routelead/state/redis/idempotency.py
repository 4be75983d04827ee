"""Idempotency across replicas: the first call for a lead_id routes it; every other call — on
any replica, even while the first is still in flight — gets the first answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable

import structlog

from routelead.domain.books import Unbooked
from routelead.domain.outcome import RoutingResult
from routelead.state.memory import MemoryIdempotencyStore
from routelead.state.ports import LeadInFlight, PastAnswers, StateUnavailable, remaining_s
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client
from routelead.state.result_codec import decode, encode

log = structlog.get_logger("routelead.state.redis")

# Only the owner removes its in-flight marker (a failed lead may be retried).
_DELETE_IF_MINE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_RUNNING = b"running:"


class RedisIdempotencyStore:
    def __init__(
        self,
        redis: Client,
        health: Health,
        *,
        result_ttl_s: int = 7 * 86400,
        # Long past any lead deadline: a replica that died mid-post leaves the lead_id blocked
        # (answered ABORTED) rather than routed again and possibly sold twice.
        inflight_ttl_s: int = 600,
        poll_s: float = 0.01,
        default_wait_s: float = 10.0,
    ) -> None:
        self._redis = redis
        self._health = health
        self._result_ttl = result_ttl_s
        self._inflight_ttl = inflight_ttl_s
        self._poll = poll_s
        self._default_wait = default_wait_s
        self._delete_if_mine = redis.register_script(_DELETE_IF_MINE)
        self._local = MemoryIdempotencyStore()
        # The books (`records/intents.py`): what they say about a lead_id Redis cannot answer.
        self._books: Callable[[str], Awaitable[RoutingResult | None]] | None = None

    async def backed_by(self, books: PastAnswers) -> None:
        """Redis forgets (an outage, a lost key): the books remember every offer."""
        self.use_books(books.answer)

    def use_books(self, load: Callable[[str], Awaitable[RoutingResult | None]]) -> None:
        """Redis speeds idempotency up; the books are where it lives. While Redis is down, and
        when a claim is still held past the caller's deadline (its replica died mid-lead), a
        lead_id the books answer or hold an intent for is answered from them, never routed."""
        self._books = load

    async def _from_books(self, lead_id: str) -> RoutingResult | None:
        if self._books is None:
            return None
        try:
            found = await self._books(lead_id)
        except Exception as exc:  # the books are away too: the caller's retry comes back later
            log.warning("idempotency.books_unavailable", lead_id=lead_id, error=type(exc).__name__)
            return None
        return None if found is None else dataclasses.replace(found, replayed=True)

    async def once(self, lead_id: str, work: Callable[[], Awaitable[RoutingResult]]) -> RoutingResult:
        # One key per lead_id and every call (claim, read, release script, answer) touches only
        # it: untagged, so on a cluster answers spread over the masters by lead_id.
        key = f"rl:idem:{lead_id}"
        token = _RUNNING + uuid.uuid4().hex.encode()
        left = remaining_s()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (left if left is not None else self._default_wait)
        while True:
            try:
                mine = await self._health.call(
                    "idempotency.claim",
                    lambda: self._redis.set(key, token, nx=True, ex=self._inflight_ttl),
                    settle=True,  # bounded by the op timeout; the wait below by our deadline
                )
                if mine:
                    return await self._run(key, token, work)
                seen = await self._health.call("idempotency.get", lambda: self._redis.get(key), settle=True)
                if seen == token:
                    # Our own claim: the SET landed but its answer was lost, and the client sent it
                    # again (a cluster client retries a timed-out call on its own).
                    return await self._run(key, token, work)
            except StateUnavailable:
                # Fail open: leads keep flowing on this replica's own memory while Redis is down
                # (documented; caps still guard every sale).
                self._health.metrics.fallback("idempotency")
                if (earlier := await self._from_books(lead_id)) is not None:
                    return earlier
                return await self._local.once(lead_id, work)
            if isinstance(seen, bytes) and not seen.startswith(_RUNNING):
                found = decode(seen)
                # A post of unknown outcome may have been settled since: the books say how.
                if any(a.unsettled for a in found.attempts) and (fresh := await self._from_books(lead_id)):
                    return fresh
                return dataclasses.replace(found, replayed=True)
            # In flight elsewhere (or just released after a failure: claim again).
            if loop.time() + self._poll >= give_up:
                if (earlier := await self._from_books(lead_id)) is not None:
                    return earlier
                raise LeadInFlight(f"lead {lead_id} is still being routed by another call; retry later")
            await asyncio.sleep(self._poll)

    async def _run(
        self, key: str, token: bytes, work: Callable[[], Awaitable[RoutingResult]]
    ) -> RoutingResult:
        try:
            result = await work()
        except Unbooked:
            # Routed, not yet booked: the marker stays, so no replica routes the lead again; the
            # answer replaces it (`remember`) once the holding replica books it.
            raise
        except BaseException:
            with contextlib.suppress(StateUnavailable):  # else the marker expires by itself
                await self._health.call(
                    "idempotency.release",
                    lambda: self._delete_if_mine(keys=[key], args=[token]),
                    settle=True,
                )
            raise
        await self.remember(result)
        return result

    async def remember(self, result: RoutingResult) -> None:
        key = f"rl:idem:{result.key}"  # a test call's answer has a slot of its own
        try:
            await self._health.call(
                "idempotency.store",
                lambda: self._redis.set(key, encode(result), ex=self._result_ttl),
                settle=True,
            )
        except StateUnavailable as exc:
            log.error("idempotency.store_failed", lead_id=result.lead_id, error=str(exc))
