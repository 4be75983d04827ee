"""Outbox sink: Redis streams → the database, exactly once in effect.

Each pass reads this consumer's own unacknowledged entries first (what a crash or a failed commit
left behind), then new ones; applies the batch in one transaction (idempotent: a record applied
twice changes nothing); and only then XACKs and deletes them. With the database or Redis down it
backs off and retries the same entries, so nothing is lost and the backlog drains on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from routelead.records.codec import BadRecord, Record, decode
from routelead.records.ledger import Ledger
from routelead.records.outbox import DEAD_STREAM, FIELD, LEDGER_STREAM, buyer_stream

log = structlog.get_logger("routelead.sink")
GROUP = "ledger-sink"


class OutboxSink:
    def __init__(
        self,
        redis: Any,
        ledger: Ledger,
        buyer_ids: Iterable[str],
        consumer: str,
        *,
        batch: int = 500,
        idle_s: float = 0.05,
        claim_idle_ms: int = 30_000,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._ledger = ledger
        self.streams = [LEDGER_STREAM, *(buyer_stream(b) for b in sorted(set(buyer_ids)))]
        self._consumer = consumer
        self._batch = batch
        self._idle_s = idle_s
        self._claim_idle_ms = claim_idle_ms
        self._max_backoff_s = max_backoff_s
        self.applied = 0
        self.failures = 0
        self._last_claim: dict[str, float] = {}

    async def setup(self) -> None:
        for stream in self.streams:
            try:
                await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: drain, then poll; on failure back off (with jitter) and retry."""
        backoff = 0.1
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    await self.setup()
                    ready = True
                moved = await self.step()
                backoff = 0.1
            except RedisError as exc:
                moved = -1
                log.warning("sink.redis_unavailable", error=type(exc).__name__, retry_in_s=round(backoff, 2))
            except Exception as exc:
                # The database refused the batch: nothing was acknowledged, so it is retried as is.
                moved = -1
                self.failures += 1
                log.warning("sink.apply_failed", error=type(exc).__name__, retry_in_s=round(backoff, 2))
            if moved < 0:
                await _sleep(stop, backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self._max_backoff_s)
            elif moved == 0:
                await _sleep(stop, self._idle_s)

    async def step(self) -> int:
        """One pass over every stream; the number of entries moved into the database."""
        batch: list[tuple[str, bytes, Record]] = []
        for stream in self.streams:
            for entry_id, fields in await self._read(stream):
                data = fields.get(FIELD.encode(), fields.get(FIELD))
                try:
                    if not isinstance(data, bytes):
                        raise BadRecord(f"no {FIELD!r} field")
                    batch.append((stream, entry_id, decode(data)))
                except BadRecord as exc:
                    await self._dead(stream, entry_id, fields, str(exc))
        if not batch:
            return 0
        await self._ledger.apply([record for _, _, record in batch])
        # Committed: only now may Redis forget them.
        by_stream: dict[str, list[bytes]] = {}
        for stream, entry_id, _ in batch:
            by_stream.setdefault(stream, []).append(entry_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
        self.applied += len(batch)
        return len(batch)

    async def _read(self, stream: str) -> list[tuple[bytes, dict[Any, Any]]]:
        # Our own pending entries first: those of a failed commit or of a previous life of this consumer.
        for start in ("0", ">"):
            reply = await self._redis.xreadgroup(GROUP, self._consumer, {stream: start}, count=self._batch)
            entries = [(i, f) for _, items in reply for i, f in items if f] if reply else []
            if entries:
                return entries
        now = time.monotonic()
        if now - self._last_claim.get(stream, 0.0) > self._claim_idle_ms / 1000 / 2:
            self._last_claim[stream] = now
            # Entries a consumer that died for good still holds: take them over.
            claimed = await self._redis.xautoclaim(
                stream, GROUP, self._consumer, self._claim_idle_ms, "0-0", count=self._batch
            )
            return [(i, f) for i, f in claimed[1] if f]
        return []

    async def _dead(self, stream: str, entry_id: bytes, fields: dict[Any, Any], error: str) -> None:
        log.error("sink.bad_record", stream=stream, entry_id=entry_id.decode(), error=error)
        # Not MULTI: the dead-letter stream and the buyer's stream may live on different cluster slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(DEAD_STREAM, {**fields, "stream": stream, "entry_id": entry_id, "error": error})
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
