"""The Redis outbox → database sink, against a real redis-server and both database backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
import yaml
from routelead.records.codec import SaleRecord, encode
from routelead.records.ledger import Ledger
from routelead.records.outbox import DEAD_STREAM, FIELD, LEDGER_STREAM, buyer_stream
from routelead.records.schema import entries, leads, sales
from routelead.records.sink import GROUP, OutboxSink

from tests.configs import buyer, document
from tests.records.conftest import Backend
from tests.records.test_ledger import a_lead
from tests.servers import RedisServer

BUYERS = ("b", "c", "d")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


def sale(n: int, buyer_id: str = "b") -> SaleRecord:
    # Prices with cents that floats get wrong, so any float on the way would show in the sums.
    return SaleRecord(
        f"lead-{n}",
        buyer_id,
        Decimal("10.10") + n,
        f"X-{n}",
        False,
        "t1",
        "sold",
        time.time(),
        "solar",
        "src-1",
        False,
        "v1",
    )


async def publish(r: aioredis.Redis, record: SaleRecord) -> None:
    """What the cap-commit Lua script does for a sale, byte for byte."""
    await r.xadd(buyer_stream(record.buyer_id), {FIELD: encode(record)})


async def count(ledger: Ledger, table: sa.Table) -> int:
    async with ledger.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def until(check: Any, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting for the sink"
        await asyncio.sleep(0.05)


async def test_sink_applies_each_entry_once_and_acks_only_after_commit(
    backend: Backend, redis: aioredis.Redis
) -> None:
    ledger = await backend.ledger()
    sink = OutboxSink(redis, ledger, BUYERS, "sink-a")
    await sink.setup()
    lead = a_lead("lead-1")
    await redis.xadd(LEDGER_STREAM, {FIELD: encode(lead)})
    await publish(redis, lead.sales[0])  # the same sale, from the buyer's stream
    await publish(redis, lead.sales[0])  # and redelivered
    await publish(redis, sale(2, "c"))
    await redis.xadd(buyer_stream("d"), {FIELD: b'{"v": 99}'})

    moved = await sink.step()

    assert moved == 4
    assert await count(ledger, leads) == 1
    assert await count(ledger, sales) == 2
    story = await ledger.lead("lead-2")
    assert [(s["buyer_id"], s["price"]) for s in story.sales] == [("c", Decimal("12.10"))]
    for stream in sink.streams:
        assert (await redis.xpending(stream, GROUP))["pending"] == 0
        assert await redis.xlen(stream) == 0
    [(_, dead)] = await redis.xrange(DEAD_STREAM) or []
    assert dead is not None
    assert dead[b"error"] == b"unknown format version 99" and dead[b"stream"] == b"rl:{d}:outbox"
    assert await sink.step() == 0


async def test_database_outage_mid_run_loses_nothing(backend: Backend, redis: aioredis.Redis) -> None:
    ledger = await backend.ledger()
    sink = OutboxSink(redis, ledger, BUYERS, "sink-a", max_backoff_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        for n in range(100):
            await publish(redis, sale(n, BUYERS[n % 3]))
        await until(lambda: _eq(count(ledger, sales), 100))
        await backend.down()
        for n in range(100, 300):
            await publish(redis, sale(n, BUYERS[n % 3]))
        await until(lambda: _true(sink.failures > 0))
        await backend.up()
        await until(lambda: _eq(count(ledger, sales), 300), within_s=60)
    finally:
        stop.set()
        await task
    async with ledger.engine.connect() as conn:
        revenue = await conn.scalar(sa.select(sa.func.sum(entries.c.amount)))
    assert revenue is not None
    assert await count(ledger, entries) == 300
    for stream in sink.streams:
        assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def _eq(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


async def test_sigkill_of_the_sink_mid_run_then_restart_books_every_sale_once(
    backend: Backend, redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "flows.yaml"
    config.write_text(
        yaml.safe_dump(document([buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", x) for x in BUYERS]))
    )
    ledger = await backend.ledger()
    env = {**os.environ, "DATABASE_URL": backend.url, "ROUTELEAD_LOG_LEVEL": "WARNING"}

    def sink() -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "routelead.cli",
            "sink",
            "--config",
            str(config),
            "--redis-url",
            redis_server.url,
            "--consumer",
            "sink-1",
        ]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    total = 1500
    proc = sink()
    try:
        for n in range(total):
            await publish(redis, sale(n, BUYERS[n % 3]))
            if n == 600:
                await until(lambda: _more_than(count(ledger, sales), 50))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        proc = sink()
        await until(lambda: _eq(count(ledger, sales), total), within_s=60)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(sa.select(sales.c.lead_id, sales.c.price))).all()
        revenue = await conn.scalar(sa.select(sa.func.sum(entries.c.amount)))
    assert sorted(r.lead_id for r in rows) == sorted(f"lead-{n}" for n in range(total))
    assert revenue == sum(Decimal("10.10") + n for n in range(total))
    for stream in (buyer_stream(b) for b in BUYERS):
        assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def _more_than(value: Any, n: int) -> bool:
    return bool(await value > n)


async def test_a_redis_crash_with_appendfsync_always_loses_no_outbox_entry(backend: Backend) -> None:
    server = RedisServer()  # its own: this test kills it
    client = aioredis.Redis.from_url(server.url)
    ledger = await backend.ledger()
    sink = OutboxSink(client, ledger, BUYERS, "sink-a", max_backoff_s=0.3)
    stop = asyncio.Event()
    try:
        await sink.setup()
        for n in range(100):
            await publish(client, sale(n, BUYERS[n % 3]))
        task = asyncio.create_task(sink.run(stop))
        await until(lambda: _eq(count(ledger, sales), 100))
        stop.set()
        await task
        for n in range(100, 250):  # acknowledged by Redis, not yet moved by the sink
            await publish(client, sale(n, BUYERS[n % 3]))
        await asyncio.to_thread(server.crash_and_restart)
        stop.clear()
        task = asyncio.create_task(sink.run(stop))
        await until(lambda: _eq(count(ledger, sales), 250), within_s=60)
        stop.set()
        await task
    finally:
        stop.set()
        await client.aclose()
        server.close()
    assert await count(ledger, entries) == 250


async def test_entries_of_a_sink_that_died_for_good_are_claimed_by_another(
    backend: Backend, redis: aioredis.Redis
) -> None:
    ledger = await backend.ledger()
    dead = OutboxSink(redis, ledger, BUYERS, "sink-dead")
    await dead.setup()
    for n in range(20):
        await publish(redis, sale(n, "b"))
    # sink-dead read them and vanished before committing: they sit in its pending list.
    await redis.xreadgroup(GROUP, "sink-dead", {buyer_stream("b"): ">"}, count=100)
    heir = OutboxSink(redis, ledger, BUYERS, "sink-heir", claim_idle_ms=200)

    assert await heir.step() == 0  # not idle long enough yet: maybe sink-dead is only slow
    await asyncio.sleep(0.3)
    moved = sum([await heir.step() for _ in range(len(BUYERS) + 2)])

    assert moved == 20 and await count(ledger, sales) == 20
    assert (await redis.xpending(buyer_stream("b"), GROUP))["pending"] == 0
