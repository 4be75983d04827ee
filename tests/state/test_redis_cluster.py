"""Hot state on a real three-master Redis Cluster: every multi-key call in one slot, caps exact
under concurrency with the script loaded on each master, dedupe and idempotency across clients,
suppression, limits and volume across slots, the outbox into the books, and two `routelead serve`
replicas selling exactly the caps, reconciled against the books."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa
from redis.crc import key_slot
from routelead.domain.outcome import Outcome, RoutingResult
from routelead.domain.quote import QuoteLimits
from routelead.records.codec import SaleRecord, encode
from routelead.records.ledger import Ledger
from routelead.records.outbox import FIELD, LEDGER_STREAM, buyer_stream
from routelead.records.schema import leads, sales
from routelead.records.sink import OutboxSink
from routelead.state.ports import CapLimits, StateUnavailable
from routelead.state.redis import RedisState, connect
from routelead.state.redis.caps_script import CAP_SCRIPT
from routelead.state.redis.connection import open_client
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid
from tests.configs import buyer, document
from tests.records.test_ledger import a_lead
from tests.state.conftest import SECRET
from tests.state.redis_cluster import RedisCluster, running_cluster
from tests.state.replicas import ROOT, consumer, replicas, sold_to, write_config


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster() as c:
        yield c


@pytest.fixture
def cluster_url(cluster: RedisCluster) -> str:
    """Every master emptied, scripts included."""
    cluster.flush()
    return cluster.url


@pytest.fixture
async def pair(cluster_url: str) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two clients, as two replicas would hold."""
    one = connect(cluster_url, SECRET, op_timeout_s=2.0, cluster=True)
    two = connect(cluster_url, SECRET, op_timeout_s=2.0, cluster=True)
    yield one, two
    await one.close()
    await two.close()


def clean(*states: RedisState) -> None:
    """No call failed or fell back to local memory: a cross-slot call would show up here."""
    for s in states:
        assert s.metrics.redis_errors_total == 0
        assert s.metrics.redis_fallbacks_total == {}


def where(cluster: RedisCluster, pattern: str) -> dict[str, int]:
    """Each key matching `pattern`, and the index of the master that holds it."""
    found = {}
    for i, node in enumerate(cluster.nodes()):
        with node:
            for k in node.keys(pattern):
                found[k.decode() if isinstance(k, bytes) else k] = i
    return found


async def test_each_buyers_keys_share_one_slot_and_buyers_spread_over_every_master(
    cluster: RedisCluster, pair: tuple[RedisState, RedisState]
) -> None:
    state, _ = pair
    buyers = [f"b{i}" for i in range(24)]
    now = time.time()
    for b in buyers:
        caps = CapLimits(
            b, "UTC", (("day", 5),), (("week", Decimal("500")),), prepaid=True, credit_limit=Decimal("100")
        )
        r = await state.caps.reserve(caps, f"lead-{b}", now, Decimal("10.00"))
        assert r is not None
        await state.caps.commit(r, outbox=b"sale", cents=1200)

    keys = where(cluster, "rl:{*")
    slots: dict[str, set[int]] = {}
    masters: dict[str, set[int]] = {}
    for k, node in keys.items():
        b = k.split("{", 1)[1].split("}", 1)[0]
        slots.setdefault(b, set()).add(key_slot(k.encode()))
        masters.setdefault(b, set()).add(node)
    assert sorted(slots) == sorted(buyers)
    # Counters, budget, balance, reservations and the outbox stream: one slot, one master.
    assert all(len(s) == 1 for s in slots.values()), slots
    assert all(len(m) == 1 for m in masters.values())
    assert all(sum(1 for k in keys if f"{{{b}}}" in k) >= 4 for b in buyers)
    assert {m for ms in masters.values() for m in ms} == {0, 1, 2}
    assert await state.caps.count("b7", next(k.split("}:")[1] for k in keys if "{b7}:usd:" in k)) == 1200
    clean(state)


async def test_caps_are_exact_under_concurrency_with_the_script_loaded_on_each_master(
    cluster: RedisCluster, pair: tuple[RedisState, RedisState]
) -> None:
    one, two = pair
    buyers = [f"cap{i}" for i in range(9)]
    limits = {b: CapLimits(b, "UTC", (("day", 7),), ()) for b in buyers}
    now = time.time()
    tries = [(s, b, f"{b}-{i}-{n}") for b in buyers for i in range(15) for n, s in enumerate(pair)]

    got = await asyncio.gather(*(s.caps.reserve(limits[b], lead, now) for s, b, lead in tries))

    won = [r for r in got if r is not None]
    assert Counter(r.buyer_id for r in won) == dict.fromkeys(buyers, 7)
    assert len({where(cluster, f"rl:{{{b}}}:res")[f"rl:{{{b}}}:res"] for b in buyers}) == 3
    # Operations scan every master: each open reservation is listed once.
    listed = await two.caps.list_unsettled(older_than_s=0)
    assert sorted(u.reservation_id for u in listed) == sorted(r.id for r in won)
    sha = hashlib.sha1(CAP_SCRIPT.encode()).hexdigest()
    for node in cluster.nodes():
        with node:
            assert node.script_exists(sha) == [True]
            node.script_flush()  # every master forgets it
    # Each call reloads it where its buyer lives: one slot freed and taken again per buyer.
    for r in won[::7]:
        await one.caps.release(r)
    again = await asyncio.gather(
        *(two.caps.reserve(limits[b], f"{b}-again-{i}", now) for b in buyers for i in range(3))
    )
    assert Counter(r.buyer_id for r in again if r is not None) == dict.fromkeys(buyers, 1)
    clean(one, two)


async def test_duplicates_and_repeated_lead_ids_go_through_once_across_clients(
    pair: tuple[RedisState, RedisState],
) -> None:
    seen = await asyncio.gather(
        *(pair[i % 2].dedupe.seen_or_add(f"person-{i % 12}", 60, add=True) for i in range(48))
    )
    assert seen.count(False) == 12

    ran: list[str] = []

    async def work(lead_id: str) -> RoutingResult:
        ran.append(lead_id)
        await asyncio.sleep(0.05)
        return RoutingResult(lead_id, "solar", "src", False, Outcome.UNSOLD, Decimal("0.00"))

    results = await asyncio.gather(
        *(pair[i % 2].idempotency.once(f"L{i % 6}", functools.partial(work, f"L{i % 6}")) for i in range(36))
    )
    assert sorted(ran) == [f"L{i}" for i in range(6)]
    assert sum(not r.replayed for r in results) == 6
    assert (await pair[1].idempotency.once("L3", lambda: work("L3"))).replayed
    clean(*pair)


async def test_suppression_quote_limits_volume_and_turns_are_shared_across_slots(
    pair: tuple[RedisState, RedisState],
) -> None:
    one, two = pair
    phone, other = hashlib.md5(b"5552013344").hexdigest(), hashlib.md5(b"x").hexdigest()
    owners = ["", "b1", "b2", "b3", "b4", "b5"]
    for b in owners:
        assert await one.suppression.change("dnc", b, [phone, other], add=True) == 2
    assert sorted(await two.suppression.hits([phone])) == sorted(("dnc", b) for b in owners)
    await two.suppression.change("dnc", "b3", [phone], add=False)
    assert ("dnc", "b3") not in await one.suppression.hits([phone])
    assert (await one.suppression.sizes())[("dnc", "b3")] == 1

    now = time.time()
    limits = QuoteLimits(per_day=3)
    for source in ("s1", "s2", "s3"):
        refused = [await pair[i % 2].quote_limits.admit(source, limits, now) for i in range(5)]
        assert [r is None for r in refused] == [True, True, True, False, False]
    await one.quote_limits.posted("s1", now)

    for s in (one, two, one):
        await s.volume.add("source:s1", now)
    counts = await two.volume.counts("source:s1", now)
    assert set(counts.values()) == {3}

    turns = await asyncio.gather(*(pair[i % 2].rotation.next_turn("solar/t1") for i in range(10)))
    assert sorted(turns) == list(range(10))
    clean(one, two)


async def test_the_outbox_streams_reach_the_books_from_every_master(cluster_url: str, tmp_path: Path) -> None:
    state = connect(cluster_url, SECRET, op_timeout_s=2.0, cluster=True)
    client = open_client(cluster_url, cluster=True)
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    buyers = [f"ob{i}" for i in range(6)]
    try:
        now = time.time()
        for n, b in enumerate(buyers * 2):
            r = await state.caps.reserve(CapLimits(b, "UTC", (("day", 10),), ()), f"lead-{n}", now)
            assert r is not None
            sale = SaleRecord(
                f"lead-{n}", b, Decimal("10.10") + n, f"X-{n}", False, "t1", "sold", now, "solar", "src-1"
            )
            await state.caps.commit(r, outbox=encode(sale))
        await client.xadd(LEDGER_STREAM, {FIELD: encode(a_lead("whole-lead"))})
        sink = OutboxSink(client, ledger, buyers, "sink-1")
        await sink.setup()

        moved = 0
        for _ in range(10):
            moved += await sink.step()
        assert moved == 13

        async with ledger.engine.connect() as conn:
            booked = {
                (r.lead_id, r.buyer_id, r.price)
                for r in await conn.execute(sa.select(sales.c.lead_id, sales.c.buyer_id, sales.c.price))
            }
            assert await conn.scalar(sa.select(sa.func.count()).select_from(leads)) == 1
        expected = {(f"lead-{n}", b, Decimal("10.10") + n) for n, b in enumerate(buyers * 2)}
        assert expected <= booked and len(booked) == 13  # and the whole lead's own sale
        for b in buyers:
            assert await client.xlen(buyer_stream(b)) == 0
        clean(state)
    finally:
        await ledger.close()
        await client.aclose()
        await state.close()


async def test_a_cluster_nobody_answers_is_an_outage_not_a_crash() -> None:
    import port_for

    state = connect(f"redis://127.0.0.1:{port_for.select_random()}/0", SECRET, op_timeout_s=0.2, cluster=True)
    try:
        with pytest.raises(StateUnavailable):
            await state.caps.reserve(CapLimits("b1", "UTC", (("day", 1),), ()), "l1", time.time())
        assert not state.caps.healthy
        assert await state.rotation.next_turn("t") == 0  # rotation falls back to local turns
    finally:
        await state.close()


# ---- two `routelead serve` replicas on the cluster, reconciled against the books ----------------

CAPS = {f"c{i}": 3 + i % 4 for i in range(9)}  # nine capped buyers over the masters


async def test_two_replicas_on_the_cluster_sell_exactly_the_caps_and_the_books_agree(
    cluster: RedisCluster,
    cluster_url: str,
    buyers: BuyerServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i, name in enumerate(CAPS):
        buyers.on(name, ping=bid(40 + i), post=accept())
    buyers.on("z", ping=bid(5), post=accept())
    fleet_doc = document(
        [*(buyer(buyers.url, n, caps={"day": c}) for n, c in CAPS.items()), buyer(buyers.url, "z")]
    )
    config = write_config(tmp_path, fleet_doc)
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("ROUTELEAD_REDIS_CLUSTER", "true")
    monkeypatch.setenv("ROUTELEAD_DB", str(tmp_path / "ledger.db"))
    fleet = await replicas(2, config, cluster_url)
    # Twice the caps' sum, ten at a time over both replicas: every capped buyer runs into its cap.
    total = 2 * sum(CAPS.values())
    gate = asyncio.Semaphore(10)

    async def send(i: int) -> pb.RouteLeadResponse:
        async with gate:
            return await fleet[i % 2].route(consumer(i), lead_id=f"L-{i}")

    try:
        replies = list(await asyncio.gather(*(send(i) for i in range(total))))
    finally:
        for r in fleet:
            await r.stop()

    sold = sold_to(replies)
    rest = total - sum(CAPS.values())
    assert {n: sold.get(n, 0) for n in CAPS} == CAPS  # exact, each buyer on its own slot
    assert sold["z"] == rest and sum(sold.values()) == total
    for name, cap in CAPS.items():
        assert len(buyers.got(name, "post")) == cap

    # The sink drains every buyer's outbox (each on its buyer's master) into the same books.
    env = {**os.environ, "ROUTELEAD_LOG_LEVEL": "WARNING"}
    sink = subprocess.Popen(  # noqa: ASYNC220 - it runs beside us until stopped
        [sys.executable, "-m", "routelead.cli", "sink", "--config", str(config), "--redis-url", cluster_url],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = open_client(cluster_url, cluster=True)
    try:
        give_up = time.monotonic() + 30
        while sum([await client.xlen(buyer_stream(n)) for n in [*CAPS, "z"]]) > 0:
            assert sink.poll() is None, sink.stderr.read().decode() if sink.stderr else ""
            assert time.monotonic() < give_up, "the sink did not drain the outboxes"
            await asyncio.sleep(0.2)
        counters = {}
        for name in CAPS:
            [key] = [k async for k in client.scan_iter(match=f"rl:{{{name}}}:n:day:*")]
            counters[name] = int(await client.get(key) or 0)
    finally:
        await client.aclose()
        sink.send_signal(signal.SIGTERM)
        sink.wait(20)
        if sink.stderr:
            sink.stderr.close()

    ledger = await Ledger.open(db_url)
    try:
        async with ledger.engine.connect() as conn:
            booked = Counter(r.buyer_id for r in await conn.execute(sa.select(sales.c.buyer_id)))
            lead_rows = await conn.scalar(sa.select(sa.func.count()).select_from(leads))
    finally:
        await ledger.close()
    # Books, cap counters on the cluster, and the posts the buyers received: one story.
    assert lead_rows == total
    assert dict(booked) == {**CAPS, "z": rest}
    assert counters == CAPS
    state = connect(cluster_url, SECRET, op_timeout_s=2.0, cluster=True)
    try:
        assert await state.caps.list_unsettled(older_than_s=0) == []
    finally:
        await state.close()


# ---- what one lead costs in Redis calls (docs/SCALING.md) -----------------------------------------

# Measured below for a sold lead on the fast path (docs/SCALING.md uses these numbers): the calls
# a replica sends, and the commands Redis runs for them (the cap script's own GET / INCRBY / EXPIRE
# per period counter included).
CLIENT_CALLS_PER_LEAD = 6
COMMANDS_PER_LEAD = 84
CLIENT_COMMANDS = {"evalsha", "set", "get", "smembers", "smismember", "mget", "exists", "del"}
IGNORED = {
    "info",
    "config|resetstat",
    "config",
    "cluster|slots",
    "cluster|shards",
    "cluster|nodes",
    "ping",
    "hello",
}


def snapshot(cluster: RedisCluster) -> list[Counter[str]]:
    """Calls per command on each master since its last CONFIG RESETSTAT."""
    out = []
    for node in cluster.nodes():
        with node:
            stats = cast(dict[str, dict[str, int]], node.info("commandstats"))
        out.append(Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}))
    return out


async def test_a_sold_lead_costs_a_bounded_number_of_calls(
    cluster: RedisCluster,
    cluster_url: str,
    buyers: BuyerServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A typical flow: a duplicate check, three bidding buyers (two capped, one with a budget).
    for name, price in (("a", 50), ("b", 40), ("c", 30)):
        buyers.on(name, ping=bid(price), post=accept())
    doc = document(
        [
            buyer(buyers.url, "a", caps={"day": 100000}),
            buyer(buyers.url, "b", caps={"day": 100000}, budgets={"day": "1000000.00"}),
            buyer(buyers.url, "c"),
        ],
        dedupe={"fields": ["email", "phone"], "days": 30},
    )
    monkeypatch.setenv("ROUTELEAD_REDIS_CLUSTER", "true")
    monkeypatch.setenv("ROUTELEAD_DB", str(tmp_path / "ledger.db"))
    [replica] = await replicas(1, write_config(tmp_path, doc), cluster_url)
    n = 100
    try:
        for i in range(5):  # warm: connections, the slot map, the script on each master
            await replica.route(consumer(1000 + i), lead_id=f"warm-{i}")
        for node in cluster.nodes():
            with node:
                node.config_resetstat()
        before = snapshot(cluster)
        t0 = time.monotonic()
        replies = [await replica.route(consumer(i), lead_id=f"M-{i}") for i in range(n)]
        busy = snapshot(cluster)
        # As long again, idle: what the replica's cap mirror reads by itself, whatever the traffic.
        await asyncio.sleep(time.monotonic() - t0)
        after = snapshot(cluster)
    finally:
        await replica.stop()

    assert all(r.sales for r in replies)
    commands: Counter[str] = Counter()
    for b0, b1, b2 in zip(before, busy, after, strict=True):
        for c in b1:
            if c not in IGNORED:
                commands[c] += (b1[c] - b0[c]) - (b2[c] - b1[c])
    per_lead = {c: v / n for c, v in commands.most_common() if v > 0}
    # Top-level calls: the scripts, SETs and reads (the script's own GETs are 25 per reserve here).
    client = sum(per_lead.get(c, 0) for c in CLIENT_COMMANDS) - 25
    print(f"\ncommands per sold lead: {sum(per_lead.values()):.1f} {per_lead}")
    print(f"client calls per sold lead: {client:.1f}")
    assert per_lead["evalsha"] == 2  # reserve, commit
    assert client <= CLIENT_CALLS_PER_LEAD + 0.5
    assert sum(per_lead.values()) <= COMMANDS_PER_LEAD
