"""Quotes and quote limits on Redis: a commit can land on any replica, and every replica counts
a source's quotes as one (one script call checks every limit and counts, atomically)."""

from __future__ import annotations

import math
from typing import Any

import structlog

from routelead.domain.quote import QuoteLimits
from routelead.state.ports import StateUnavailable
from routelead.state.quotes import DAY_KEEP_S, MemoryQuoteLimiter, Refusal, day_key, refusal
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client

log = structlog.get_logger("routelead.state.redis")

# KEYS: this second's quotes, today's quotes, today's commits.
# ARGV: per_second, per_day, ratio (0: none), day ttl (s).
# Returns {0} when admitted (and counted), else {1, second, day quotes, day commits}: the Python
# side names the limit (state.quotes.refusal, the one rule for both adapters).
_ADMIT = """
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
local c = tonumber(redis.call('GET', KEYS[3]) or '0')
local per_s, per_d, ratio = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local commits = c
if commits < 1 then commits = 1 end
if (per_s > 0 and s + 1 > per_s) or (per_d > 0 and p + 1 > per_d)
    or (ratio > 0 and p + 1 > ratio * commits) then
  return {1, s, p, c}
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 2000)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return {0}
"""


class RedisQuoteStore:
    def __init__(self, redis: Client, health: Health) -> None:
        self._redis = redis
        self._health = health

    # A quote and its commit mark are single-key calls, never together: untagged, they spread
    # over a cluster's masters by quote id.
    async def put(self, quote_id: str, data: bytes, keep_s: float) -> None:
        ms = max(1, int(keep_s * 1000))
        await self._health.call("quote.put", lambda: self._redis.set(f"rl:quote:{quote_id}", data, px=ms))

    async def get(self, quote_id: str) -> bytes | None:
        got: Any = await self._health.call("quote.get", lambda: self._redis.get(f"rl:quote:{quote_id}"))
        return bytes(got) if got is not None else None

    async def mark_committed(self, quote_id: str, keep_s: float) -> None:
        ms = max(1, int(keep_s * 1000))
        await self._health.call(
            "quote.commit", lambda: self._redis.set(f"rl:quote:{quote_id}:c", b"1", px=ms)
        )

    async def committed(self, quote_id: str) -> bool:
        return bool(
            await self._health.call("quote.committed", lambda: self._redis.exists(f"rl:quote:{quote_id}:c"))
        )


class RedisQuoteLimiter:
    def __init__(self, redis: Client, health: Health) -> None:
        self._redis = redis
        self._health = health
        self._admit = redis.register_script(_ADMIT)
        # A limit protects us, it is not money: while Redis is away this replica counts alone.
        self._local = MemoryQuoteLimiter()

    @staticmethod
    def _keys(source_id: str, now: float) -> tuple[str, str, str]:
        """One script reads all three: on a Redis Cluster they share the source's hash tag, so
        they sit in one slot (and each source's limits on one master; sources spread)."""
        day = day_key(now)
        t = f"rl:ql:{{{source_id}}}"
        return (f"{t}:s:{math.floor(now)}", f"{t}:d:{day}:quotes", f"{t}:d:{day}:commits")

    async def admit(self, source_id: str, limits: QuoteLimits, now: float) -> Refusal | None:
        if not limits.active:
            return None
        keys = self._keys(source_id, now)
        args = [limits.per_second or 0, limits.per_day or 0, limits.max_ping_post_ratio or 0, DAY_KEEP_S]
        try:
            got: Any = await self._health.call("quote.limits", lambda: self._admit(keys=keys, args=args))
        except StateUnavailable:
            self._health.metrics.fallback("quote_limits")
            return await self._local.admit(source_id, limits, now)
        if int(got[0]) == 0:
            return None
        refused = refusal(limits, int(got[1]), int(got[2]), int(got[3]), now)
        # The script and the rule are one rule: a refusal the rule cannot name is a bug.
        assert refused is not None, "the limit script and state.quotes.refusal disagree"
        return refused

    async def posted(self, source_id: str, now: float) -> None:
        key = self._keys(source_id, now)[2]

        async def bump() -> object:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, DAY_KEEP_S)
                return await pipe.execute()

        try:
            await self._health.call("quote.posted", bump, settle=True)
        except StateUnavailable:
            self._health.metrics.fallback("quote_limits")
            await self._local.posted(source_id, now)
