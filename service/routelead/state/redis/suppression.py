"""Suppression lists on Redis: one SET of 16-byte digests per (list, buyer), and a registry SET
of the lists; every replica reads them per lead, so a change counts from the next lead on."""

from __future__ import annotations

from collections.abc import Sequence

from routelead.state.ports import StateUnavailable
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client

# On a Redis Cluster the registry and each list hash by their whole names (no tag): big lists
# spread over the masters, and a lead's check is one SMISMEMBER per list, sent to every master
# that holds one at once. No call needs two of these keys in one slot (see `change`).
_REGISTRY = "rl:sup:lists"


def _key(name: str, buyer: str) -> str:
    return f"rl:sup:{buyer}|{name}"


class RedisSuppressionStore:
    def __init__(self, redis: Client, health: Health) -> None:
        self._redis = redis
        self._health = health
        # Whether any list existed at the last read of the registry (None: never read). While
        # Redis is away, a lead is refused only if there were lists to check it against: with
        # none, an outage must not stop every sale (caps have their own Redis-down policy).
        self._any: bool | None = None

    async def change(self, name: str, buyer: str, digests: Sequence[str], *, add: bool) -> int:
        raw = [bytes.fromhex(d) for d in digests]
        if not raw:
            return 0
        key = _key(name, buyer)

        async def run() -> int:
            # The registry first, then the list: two slots on a cluster, so not one MULTI. A list
            # registered whose entries failed to land checks nothing yet (and the operator sees
            # the error); entries landing in a list no lead checks could not happen.
            await self._redis.sadd(_REGISTRY, f"{buyer}|{name}")
            return int(await (self._redis.sadd(key, *raw) if add else self._redis.srem(key, *raw)))

        changed = await self._health.call("suppression.change", run)
        self._any = True
        return changed

    async def _lists(self) -> list[str]:
        found = await self._health.call("suppression.lists", lambda: self._redis.smembers(_REGISTRY))
        lists = sorted(x.decode() if isinstance(x, bytes) else str(x) for x in found)
        self._any = bool(lists)
        return lists

    async def hits(self, digests: Sequence[str]) -> list[tuple[str, str]]:
        raw = [bytes.fromhex(d) for d in digests]
        if not raw:
            return []
        try:
            lists = await self._lists()
        except StateUnavailable:
            if self._any is False:
                return []  # there was no list to check against: nothing is unchecked
            raise  # lists exist (or are unknown): the router refuses the lead
        if not lists:
            return []

        async def run() -> list[list[int]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for scoped in lists:
                    pipe.smismember(f"rl:sup:{scoped}", raw)
                return list(await pipe.execute())

        found = await self._health.call("suppression.hits", run)
        out = []
        for scoped, flags in zip(lists, found, strict=True):
            if any(flags):
                buyer, name = scoped.split("|", 1)
                out.append((name, buyer))
        return out

    async def sizes(self) -> dict[tuple[str, str], int]:
        out = {}
        for scoped in await self._lists():
            buyer, name = scoped.split("|", 1)

            async def size(key: str = f"rl:sup:{scoped}") -> int:
                return int(await self._redis.scard(key))

            out[(name, buyer)] = await self._health.call("suppression.size", size)
        return out
