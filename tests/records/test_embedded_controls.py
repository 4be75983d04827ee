"""The embedded default (no Redis, SQLite books) keeps its controls across a restart of a real
`routelead serve`: caps, budgets, prepaid balances, dedupe windows, rotation and open
reservations; and counters kept for every buyer make a cap added live count the period's sales."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import yaml
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, hang
from tests.configs import GOOD_LEAD, buyer, document, fixed_buyer
from tests.records.conftest import Backend
from tests.records.test_restart import Embedded
from tests.servers import RedisServer

TOKEN = "controls-admin-token-0123456789"
ADMIN = {"ROUTELEAD_ADMIN_TOKEN": TOKEN}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """serve(doc, **env) → a started-later `routelead serve` on the same books file each time."""
    started: list[Embedded] = []
    config = tmp_path / "flows.yaml"

    def go(doc: dict[str, Any] | None = None, **env: str) -> Embedded:
        if doc is not None:
            config.write_text(yaml.safe_dump(doc))
        s = Embedded(config, tmp_path / "books.db", **env)
        started.append(s)
        return s

    yield go
    for s in started:
        if s.proc.poll() is None:
            s.kill()


def consumer(n: int) -> dict[str, str]:
    return {**GOOD_LEAD, "email": f"c{n}@example.com", "phone": f"(555) 201-{1000 + n}"}


async def route(s: Embedded, fields: dict[str, str], lead_id: str = "") -> pb.RouteLeadResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") as channel:
        request = pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=fields)
        reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
        return reply


async def restart(s: Embedded, serve: Any) -> Embedded:
    """SIGKILL (no drain, no last write) and start again on the same books."""
    s.kill()
    again: Embedded = serve(**s.extra_env)
    await again.ready()
    return again


def sold_to(reply: pb.RouteLeadResponse) -> list[str]:
    return [s.buyer_id for s in reply.sales]


def status(reply: pb.RouteLeadResponse, buyer_id: str) -> str:
    return next(pb.AttemptStatus.Name(a.status) for a in reply.attempts if a.buyer_id == buyer_id)


async def cli(s: Embedded, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
    env.update(ADMIN, ROUTELEAD_ADMIN_TARGET=f"127.0.0.1:{s.port}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "routelead.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_day_caps_of_one_and_two_hold_across_a_restart(buyers: BuyerServer, serve: Any) -> None:
    buyers.on("one", ping=bid("30.00"), post=accept("O-1"))
    buyers.on("two", ping=bid("20.00"), post=accept("T-1"))
    doc = document(
        [buyer(buyers.url, "one", caps={"day": 1}), buyer(buyers.url, "two", caps={"day": 2})],
        dedupe=None,
    )
    first = serve(doc)
    await first.ready()
    before = [sold_to(await route(first, consumer(n))) for n in range(2)]
    second = await restart(first, serve)
    after = [await route(second, consumer(n)) for n in range(2, 4)]

    assert before == [["one"], ["two"]]
    assert sold_to(after[0]) == ["two"]  # one had its 1; two had 1 of 2
    assert after[1].outcome == pb.UNSOLD
    assert status(after[1], "one") == status(after[1], "two") == "SKIPPED_CAP"
    assert len(buyers.got("one", "post")) == 1 and len(buyers.got("two", "post")) == 2


async def test_a_budget_buyer_does_not_sell_past_its_budget_after_a_restart(
    buyers: BuyerServer, serve: Any
) -> None:
    buyers.on("bud", post=accept("B-1"))
    doc = document([fixed_buyer(buyers.url, "bud", "30.00", budgets={"day": "50.00"})], dedupe=None)
    first = serve(doc)
    await first.ready()
    sold = await route(first, consumer(1))
    second = await restart(first, serve)
    refused = await route(second, consumer(2))  # 30 + 30 would pass the 50.00 budget

    assert sold_to(sold) == ["bud"]
    assert refused.outcome == pb.UNSOLD and status(refused, "bud") == "SKIPPED_CAP"
    assert len(buyers.got("bud", "post")) == 1


async def test_the_flow_and_buyer_dedupe_windows_remember_the_consumer_after_a_restart(
    buyers: BuyerServer, serve: Any
) -> None:
    buyers.on("a", ping=bid("30.00"), post=accept("A-1"))
    buyers.on("b", ping=bid("25.00"), post=accept("B-1"))
    doc = document(
        [buyer(buyers.url, "a", dedupe_days=30), buyer(buyers.url, "b")],
        dedupe={"fields": ["email", "phone"], "days": 30},
    )
    # Another flow, with no window of its own (days: 0): only the buyers' windows apply there.
    solar2 = {"fields": ["email", "phone"], "days": 0}
    doc["flows"].append({"id": "solar2", "dedupe": solar2, "tiers": [{"name": "t1", "buyers": ["a", "b"]}]})
    first = serve(doc)
    await first.ready()
    sold = await route(first, consumer(1))
    second = await restart(first, serve)
    repeat = await route(second, consumer(1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        # Buyer a's own 30 days still know this consumer.
        request = pb.RouteLeadRequest(flow="solar2", source_id="src-1", fields=consumer(1))
        elsewhere = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
    fresh = await route(second, consumer(2))

    assert sold_to(sold) == ["a"]
    assert repeat.outcome == pb.DUPLICATE
    assert status(elsewhere, "a") == "DUPLICATE_FOR_BUYER" and sold_to(elsewhere) == ["b"]
    assert sold_to(fresh) == ["a"]
    # Kept as keyed digests: no consumer's identity in the books' file or beside it.
    stored = b"".join(p.read_bytes() for p in Path(second.db).parent.glob("books.db*"))
    assert b"c1@example.com" not in stored and b"2011001" not in stored


async def test_rotation_continues_after_a_restart(buyers: BuyerServer, serve: Any) -> None:
    for x in "xyz":
        buyers.on(x, post=accept(f"{x}-1"))
    doc = document([fixed_buyer(buyers.url, x, "10.00") for x in "xyz"], dedupe=None)
    doc["flows"][0]["tiers"][0].update(mode="waterfall", order="round_robin")
    first = serve(doc)
    await first.ready()
    before = [sold_to(await route(first, consumer(n))) for n in range(2)]
    second = await restart(first, serve)
    after = [sold_to(await route(second, consumer(n))) for n in range(2, 4)]

    assert before + after == [["x"], ["y"], ["z"], ["x"]]


async def test_a_prepaid_balance_and_an_unsettled_sale_survive_a_restart_and_the_cli_works_embedded(
    buyers: BuyerServer, serve: Any
) -> None:
    buyers.on("pre", post=accept("P-1"))
    buyers.on("slow", ping=bid("40.00"), post=hang(30))  # the post times out: outcome unknown
    doc = document(
        [
            buyer(buyers.url, "slow", caps={"day": 1}, post={"timeout_ms": 200}),
            fixed_buyer(buyers.url, "pre", "5.00", prepaid={"credit_limit": "0"}),
        ],
        tiers=[["slow"], ["pre"]],
        dedupe=None,
        deadline_ms=2000,
    )
    first = serve(doc, **ADMIN)
    await first.ready()
    topped = await cli(first, "balance", "pre", "--top-up", "20.00")
    second = await restart(first, serve)
    balance = await cli(second, "balance", "pre")
    unknown = await route(second, consumer(1))  # slow: unknown and held; the lead is offered to nobody else
    third = await restart(second, serve)
    listed = await cli(third, "unsettled", "--older-than", "0", "--json")
    rows = [orjson.loads(line) for line in listed[1].splitlines()]
    capped = await route(third, consumer(2))  # slow's day cap of 1 is held by the unknown post
    freed = await cli(third, "settle", "slow", rows[0]["reservation"] if rows else "-", "--free")
    fourth = await restart(third, serve)
    after = await cli(fourth, "unsettled", "--older-than", "0")
    room = await route(fourth, consumer(3))
    left = await cli(fourth, "balance", "pre")

    assert topped == (0, "20.00\n", ""), topped
    assert balance == (0, "20.00\n", ""), balance
    assert status(unknown, "slow") == "POST_ERROR" and unknown.outcome == pb.UNSETTLED
    assert sold_to(unknown) == [] and status(unknown, "pre") == "NOT_OFFERED"  # slow may hold it
    assert listed[0] == 0 and [(r["buyer"], r["state"]) for r in rows] == [("slow", "unsettled")], listed
    assert status(capped, "slow") == "SKIPPED_CAP" and sold_to(capped) == ["pre"]
    assert freed[0] == 0 and "freed" in freed[1], freed
    assert after == (0, "", ""), after
    assert status(room, "slow") == "POST_ERROR"  # the freed slot was offered again
    # The one prepaid sale at 5.00 drew the kept balance down across the restarts.
    assert left == (0, "15.00\n", ""), left


async def test_state_commands_without_redis_say_what_they_need(buyers: BuyerServer, serve: Any) -> None:
    buyers.on("a", post=accept())
    first = serve(document([fixed_buyer(buyers.url, "a", "10.00")], dedupe=None))  # no admin token
    await first.ready()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
    env.pop("ROUTELEAD_ADMIN_TOKEN", None)
    env.pop("ROUTELEAD_ADMIN_TOKEN_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "routelead.cli", "balance", "a", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    unserved = await cli(first, "balance", "a")  # the service has no admin API to ask

    assert proc.returncode == 2 and "ROUTELEAD_ADMIN_TOKEN" in err.decode()
    assert unserved[0] == 1 and "UNIMPLEMENTED" in unserved[2], unserved


async def upsert_buyer(port: int, doc: dict[str, Any]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        change = apb.Change(author="test", reason="caps for the rest of the day")
        request = apb.UpsertEntityRequest(kind=apb.BUYER, json=orjson.dumps(doc).decode(), change=change)
        await apb_grpc.AdminStub(channel).UpsertEntity(
            request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10
        )
    await asyncio.sleep(3)  # the version watcher polls every 0.25 s


@pytest.mark.parametrize("mode", ["embedded", "redis"])
async def test_a_cap_added_live_mid_day_counts_the_days_earlier_sales(
    mode: str, buyers: BuyerServer, serve: Any, request: pytest.FixtureRequest
) -> None:
    buyers.on("late", post=accept("L-1"))
    entity = fixed_buyer(buyers.url, "late", "15.00")
    env = dict(ADMIN)
    if mode == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env.update(REDIS_URL=redis.url, ROUTELEAD_DEDUPE_KEY="test-dedupe-key-0123456789abcdef")
    first = serve(document([entity], dedupe=None), **env)
    await first.ready()
    before = [sold_to(await route(first, consumer(n))) for n in range(2)]
    await upsert_buyer(first.port, {**entity, "caps": {"day": 2}, "budgets": {"day": "40.00"}})
    after = await route(first, consumer(3))

    assert before == [["late"], ["late"]]
    assert after.outcome == pb.UNSOLD and status(after, "late") == "SKIPPED_CAP", after
    assert len(buyers.got("late", "post")) == 2


async def test_books_named_by_database_url_without_redis_keep_the_controls_too(
    backend: Backend, buyers: BuyerServer, serve: Any
) -> None:
    buyers.on("one", ping=bid("30.00"), post=accept("O-1"))
    doc = document(
        [buyer(buyers.url, "one", caps={"day": 1})], dedupe={"fields": ["email", "phone"], "days": 30}
    )
    env = {"DATABASE_URL": backend.url, "ROUTELEAD_DEDUPE_KEY": "test-dedupe-key-0123456789abcdef"}
    first = serve(doc, **env)
    await first.ready()
    sold = await route(first, consumer(1))
    second = await restart(first, serve)
    repeat = await route(second, consumer(1))
    capped = await route(second, consumer(2))

    assert sold_to(sold) == ["one"]
    assert repeat.outcome == pb.DUPLICATE
    assert capped.outcome == pb.UNSOLD and status(capped, "one") == "SKIPPED_CAP"


def test_postgresql_books_without_redis_or_a_dedupe_key_refuse_to_start(tmp_path: Path) -> None:
    config = tmp_path / "flows.yaml"
    config.write_text(
        yaml.safe_dump(document([fixed_buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "a", "1")]))
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "ROUTELEAD_REDIS", "ROUTELEAD_DEDUPE"))
    }
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:9/books"
    argv = [
        sys.executable,
        "-m",
        "routelead.cli",
        "serve",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
    ]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert refused.returncode == 2, refused.stderr
    assert "ROUTELEAD_DEDUPE_KEY" in refused.stderr and "REDIS_URL" in refused.stderr


async def test_suppression_lists_survive_a_restart_of_the_embedded_default(
    buyers: BuyerServer, serve: Any, tmp_path: Path
) -> None:
    buyers.on("a", ping=bid("30.00"), post=accept("A-1"))
    buyers.on("b", ping=bid("20.00"), post=accept("B-1"))
    first = serve(document([buyer(buyers.url, "a"), buyer(buyers.url, "b")], dedupe=None), **ADMIN)
    await first.ready()
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("".join(f"(555) 301-{1000 + n}\n" for n in range(500)) + "(555) 201-1001\n")
    loaded = await cli(first, "suppress", "load", str(dnc), "--list", "dnc")
    own = await cli(first, "suppress", "add", "c2@example.com", "--list", "mine", "--buyer", "a")
    second = await restart(first, serve)  # SIGKILL: nothing but what is on disk survives
    refused = await route(second, consumer(1))  # its phone is on the global list
    skipped = await route(second, consumer(2))  # its e-mail is on a's own list
    removed = await cli(second, "suppress", "remove", "(555) 201-1001", "--list", "dnc")
    third = await restart(second, serve)
    sold = await route(third, consumer(1), lead_id="after-removal")

    assert loaded[0] == 0 and own[0] == 0 and removed[0] == 0, (loaded, own, removed)
    assert refused.outcome == pb.REJECTED and refused.reason == "suppressed: on list dnc"
    assert sold_to(skipped) == ["b"] and status(skipped, "a") == "SKIPPED_FILTER"
    assert sold_to(sold) == ["a"]  # the removal was kept too
    # The refused lead reached no buyer; the skipped one reached only b.
    assert len(buyers.got("a", "ping")) == 1 and len(buyers.got("b", "ping")) == 2
