"""One contract for the hot-state ports: the memory and the Redis backends both pass it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tracemalloc
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.port import Unbooked
from routelead.state.memory import MemoryIdempotencyStore
from routelead.state.ports import CapLimits, LeadInFlight, lead_deadline
from routelead.state.result_codec import encode

from tests.state.conftest import Backend

NY = ZoneInfo("America/New_York")
D = Decimal


def at(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=NY).timestamp()


NOON = at(2026, 11, 20, 12, 0)


def caps(
    buyer: str = "b1",
    tz: str = "America/New_York",
    *,
    prepaid: bool = False,
    credit: str = "0",
    **limits: object,
) -> CapLimits:
    counts = tuple((p, int(str(v))) for p, v in limits.items() if not str(v).startswith("$"))
    budgets = tuple((p, D(str(v)[1:])) for p, v in limits.items() if str(v).startswith("$"))
    return CapLimits(buyer, tz, counts, budgets, prepaid, D(credit))  # type: ignore[arg-type]


async def test_a_count_cap_sells_exactly_the_limit(backend: Backend) -> None:
    c = caps(day=3)

    got = [await backend.caps.reserve(c, f"l{i}", NOON) for i in range(5)]

    assert [r is not None for r in got] == [True, True, True, False, False]
    assert not backend.caps.has_room(c, NOON)


async def test_every_period_is_checked_in_one_step(backend: Backend) -> None:
    c = caps(hour=2, day=3)

    first_hour = [await backend.caps.reserve(c, f"a{i}", NOON) for i in range(3)]
    next_hour = [await backend.caps.reserve(c, f"b{i}", NOON + 3600) for i in range(2)]

    assert [r is not None for r in first_hour] == [True, True, False]
    # The hour rolled over, but the day has one lead left.
    assert [r is not None for r in next_hour] == [True, False]


async def test_periods_follow_the_buyers_own_midnight(backend: Backend) -> None:
    ny, utc = caps("ny", day=1), caps("utc", "UTC", day=1)
    late_ny = at(2026, 11, 20, 23, 59)  # already 04:59 the next day in UTC
    after_midnight_ny = at(2026, 11, 21, 0, 1)

    assert await backend.caps.reserve(ny, "1", late_ny) is not None
    assert await backend.caps.reserve(utc, "1", late_ny) is not None
    assert await backend.caps.reserve(ny, "2", after_midnight_ny) is not None
    # Still the same UTC day.
    assert await backend.caps.reserve(utc, "2", after_midnight_ny) is None


async def test_a_dst_night_is_one_day_and_its_repeated_hour_two_hours(backend: Backend) -> None:
    day, hour = caps("d", day=1), caps("h", hour=1)
    before = at(2026, 11, 1, 0, 30)  # fall-back night: 01:00-02:00 happens twice
    first_1am = datetime(2026, 11, 1, 1, 30, tzinfo=NY).timestamp()
    second_1am = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY).timestamp()
    assert second_1am - first_1am == 3600

    assert await backend.caps.reserve(day, "1", before) is not None
    assert await backend.caps.reserve(day, "2", second_1am + 20 * 3600) is None  # 25-hour day
    assert await backend.caps.reserve(hour, "1", first_1am) is not None
    assert await backend.caps.reserve(hour, "2", second_1am) is not None


async def test_a_dollar_budget_takes_bids_while_they_fit(backend: Backend) -> None:
    c = caps(day="$100.00")

    results = [
        await backend.caps.reserve(c, f"l{i}", NOON, D(p)) for i, p in enumerate(["40", "40", "30", "20"])
    ]

    assert [r is not None for r in results] == [True, True, False, True]
    assert not backend.caps.has_room(c, NOON)  # exactly spent: no bid can fit
    assert not backend.caps.has_room(c, NOON, D("0.01"))


async def test_a_prepaid_balance_is_drawn_down_and_topped_up_at_once(backend: Backend) -> None:
    c = caps("pp", prepaid=True)

    assert await backend.caps.reserve(c, "l0", NOON, D("30")) is None
    assert await backend.caps.top_up("pp", D("50.00")) == D("50.00")
    assert backend.caps.has_room(c, NOON, D("50.00"))
    r = await backend.caps.reserve(c, "l1", NOON, D("30"))
    assert r is not None
    assert await backend.caps.balance("pp") == D("20.00")
    assert not backend.caps.has_room(c, NOON, D("30"))
    assert await backend.caps.reserve(c, "l2", NOON, D("30")) is None
    await backend.caps.release(r)
    assert await backend.caps.balance("pp") == D("50.00")


async def test_a_sale_at_another_stated_price_moves_the_budget_and_balance_to_it(
    backend: Backend,
) -> None:
    c = caps("sp", prepaid=True, day="$100.00")
    await backend.caps.top_up("sp", D("100.00"))

    r = await backend.caps.reserve(c, "l1", NOON, D("40"))
    assert r is not None
    await backend.caps.commit(r, None, 6000)  # the post answer said it pays 60.00

    assert await backend.caps.balance("sp") == D("40.00")
    assert backend.caps.has_room(c, NOON, D("40.00"))
    assert not backend.caps.has_room(c, NOON, D("40.01"))  # 60.00 of the 100.00 budget is spent
    assert await backend.caps.reserve(c, "l2", NOON, D("40.01")) is None
    r = await backend.caps.reserve(c, "l3", NOON, D("30"))
    assert r is not None
    await backend.caps.commit(r, None, 2500)  # less than bid: the difference comes back
    assert await backend.caps.balance("sp") == D("15.00")
    assert backend.caps.has_room(c, NOON, D("15.00"))
    assert not backend.caps.has_room(c, NOON, D("15.01"))


async def test_a_credit_limit_lets_the_balance_go_negative_that_far(backend: Backend) -> None:
    c = caps("cr", prepaid=True, credit="20")

    assert await backend.caps.reserve(c, "l1", NOON, D("15")) is not None
    assert await backend.caps.reserve(c, "l2", NOON, D("10")) is None
    assert await backend.caps.balance("cr") == D("-15.00")


async def test_release_gives_the_slot_back_and_commit_keeps_it(backend: Backend) -> None:
    c = caps(day=1)
    r1 = await backend.caps.reserve(c, "l1", NOON)
    assert r1 is not None
    await backend.caps.release(r1)
    await backend.caps.release(r1)  # twice is once

    r2 = await backend.caps.reserve(c, "l2", NOON)
    assert r2 is not None
    await backend.caps.commit(r2)
    await backend.caps.release(r2)  # a committed sale cannot be released

    assert await backend.caps.reserve(c, "l3", NOON) is None


async def test_an_unsettled_reservation_counts_until_settled(backend: Backend) -> None:
    c = caps(day=1, week="$100")
    r = await backend.caps.reserve(c, "lead-9", NOON, D("60"))
    assert r is not None
    await backend.caps.unsettled(r, "post timed out")

    assert await backend.caps.reserve(c, "other", NOON) is None
    listed = await backend.caps.list_unsettled(older_than_s=3600)
    assert [(u.buyer_id, u.lead_id, u.amount, u.state) for u in listed] == [
        ("b1", "lead-9", D("60.00"), "unsettled")
    ]
    assert "post timed out" in listed[0].reason
    assert backend.caps.metrics.unsettled_marked_total == 1

    assert await backend.caps.settle("b1", listed[0].reservation_id, accepted=False)
    assert not await backend.caps.settle("b1", listed[0].reservation_id, accepted=False)
    assert await backend.caps.list_unsettled(older_than_s=3600) == []
    assert backend.caps.metrics.settled_freed_total == 1
    assert await backend.caps.reserve(c, "other", NOON, D("100")) is not None


async def test_confirming_an_unsettled_reservation_keeps_it_counted(backend: Backend) -> None:
    from prometheus_client import REGISTRY

    def exported(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    marked, confirmed = (
        exported("routelead_unsettled_marked_total"),
        exported("routelead_unsettled_settled_total", how="confirmed"),
    )
    c = caps(day=1)
    r = await backend.caps.reserve(c, "lead-1", NOON)
    assert r is not None
    await backend.caps.unsettled(r, "post timed out")

    assert await backend.caps.settle("b1", r.id, accepted=True)

    assert await backend.caps.list_unsettled(older_than_s=3600) == []
    assert await backend.caps.reserve(c, "lead-2", NOON) is None
    assert backend.caps.metrics.settled_confirmed_total == 1
    # Written through to Prometheus, for the /metrics endpoint and the alerts.
    assert exported("routelead_unsettled_marked_total") == marked + 1
    assert exported("routelead_unsettled_settled_total", how="confirmed") == confirmed + 1


async def test_a_reservation_never_settled_is_listed_as_orphaned(backend: Backend) -> None:
    c = caps(day=5)
    r = await backend.caps.reserve(c, "lost", NOON)
    assert r is not None

    assert await backend.caps.list_unsettled(older_than_s=3600) == []
    orphans = await backend.caps.list_unsettled(older_than_s=0)

    assert [(o.lead_id, o.state) for o in orphans] == [("lost", "orphaned")]


async def test_commit_accepts_a_ledger_outbox_record(backend: Backend) -> None:
    c = caps("ob", day=2)
    r = await backend.caps.reserve(c, "l1", NOON)
    assert r is not None

    await backend.caps.commit(r, outbox=b'{"lead":"l1","price":"42.00"}')

    assert await backend.caps.reserve(c, "l2", NOON) is not None
    assert await backend.caps.reserve(c, "l3", NOON) is None
    if backend.redis is not None:
        entries = await backend.redis.redis.xrange("rl:{ob}:outbox") or []
        assert [fields for _, fields in entries] == [{b"record": b'{"lead":"l1","price":"42.00"}'}]
        assert not await backend.redis.redis.hexists("rl:{ob}:res", r.id)


async def test_concurrent_reservations_never_exceed_the_cap(backend: Backend) -> None:
    c = caps(day=10, hour="$250")

    got = await asyncio.gather(*(backend.caps.reserve(c, f"l{i}", NOON, D("25")) for i in range(40)))

    assert sum(r is not None for r in got) == 10


async def test_the_first_of_racing_duplicates_wins(backend: Backend) -> None:
    fp = backend.dedupe.fingerprint(["maria@example.com", "+15552013344"])

    seen = await asyncio.gather(
        *(backend.dedupe.seen_or_add(f"lead|f|{fp}", 60, add=True) for _ in range(20))
    )

    assert sorted(seen) == [False] + [True] * 19


async def test_a_dedupe_check_without_add_records_nothing_and_keys_expire(backend: Backend) -> None:
    assert not await backend.dedupe.seen_or_add("k1", 60, add=False)
    assert not await backend.dedupe.seen_or_add("k1", 0.2, add=True)
    assert await backend.dedupe.seen_or_add("k1", 0.2, add=False)
    await asyncio.sleep(0.3)
    assert not await backend.dedupe.seen_or_add("k1", 0.2, add=False)


async def test_a_fingerprint_is_keyed_and_holds_no_pii(backend: Backend) -> None:
    fp = backend.dedupe.fingerprint(["maria@example.com", "+15552013344"])

    assert fp == backend.dedupe.fingerprint(["maria@example.com", "+15552013344"])
    assert fp != backend.dedupe.fingerprint(["maria@example.com+15552013344", ""])
    assert "maria" not in fp and "5552013344" not in fp


def _result(lead_id: str) -> RoutingResult:
    return RoutingResult(lead_id, "solar", "src", False, Outcome.SOLD, D("10.00"))


async def test_concurrent_repeats_of_a_lead_id_run_it_once(backend: Backend) -> None:
    runs = 0

    async def work() -> RoutingResult:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)
        return _result("L1")

    results = await asyncio.gather(*(backend.idempotency.once("L1", work) for _ in range(5)))

    assert runs == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 4
    assert {r.cost for r in results} == {D("10.00")}


async def test_a_later_repeat_gets_the_first_answer_in_every_field(backend: Backend) -> None:
    first = RoutingResult(
        "L9", "solar", "src", False, Outcome.SOLD, D("12.00"), trace_id="ab" * 16, elapsed_ms=41.5
    )
    first.config_version = "7"
    first.sales = [Sale("b1", D("45.10"), "B-77", True, "t1", D("12.00"))]
    first.attempts = [
        Attempt(
            "b1",
            "t1",
            Status.POST_ACCEPTED,
            D("45.10"),
            30.2,
            55.0,
            "sold at 45.10",
            200,
            "p-9",
            {"auction": "tok"},
            True,
            offered=D("40.10"),
        ),
        Attempt(
            "b2",
            "t1",
            Status.POST_ERROR,
            D("40.00"),
            28.0,
            750.0,
            "post failed; outcome unknown",
            0,
            "",
            {},
            False,
            True,
        ),
        Attempt("b3", "t2", Status.NO_BID, None, 12.0, 0.0, "no bid", 200),
    ]

    async def work() -> RoutingResult:
        return first

    assert await backend.idempotency.once("L9", work) is first
    again = await backend.idempotency.once("L9", work)

    # Sale costs, unsettled posts and the config version included (they were once dropped).
    assert again == dataclasses.replace(first, replayed=True)


async def test_a_failed_lead_may_be_routed_again(backend: Backend) -> None:
    async def fail() -> RoutingResult:
        raise RuntimeError("boom")

    async def work() -> RoutingResult:
        return _result("L2")

    with pytest.raises(RuntimeError):
        await backend.idempotency.once("L2", fail)
    assert not (await backend.idempotency.once("L2", work)).replayed


async def test_a_routed_but_unbooked_lead_is_answered_once_booked_never_routed_again(
    backend: Backend,
) -> None:
    runs = 0

    async def unbooked() -> RoutingResult:
        raise Unbooked("held")

    async def work() -> RoutingResult:
        nonlocal runs
        runs += 1
        return _result("L3")

    with pytest.raises(Unbooked):
        await backend.idempotency.once("L3", unbooked)
    if backend.name == "redis":
        # Another replica, meanwhile: told to wait, not given the lead to route again.
        token = lead_deadline.set(time.monotonic() + 0.2)
        try:
            with pytest.raises(LeadInFlight):
                await backend.idempotency.once("L3", work)
        finally:
            lead_deadline.reset(token)
    await backend.idempotency.remember(_result("L3"))  # the holder booked it
    answer = await backend.idempotency.once("L3", work)

    assert runs == 0 and answer.replayed and answer.cost == D("10.00")


async def test_turns_are_handed_out_once_each(backend: Backend) -> None:
    turns = await asyncio.gather(*(backend.rotation.next_turn("solar/t1") for _ in range(30)))

    assert sorted(turns) == list(range(30))
    assert await backend.rotation.next_turn("solar/t2") == 0


async def test_caps_per_flow_and_per_source_count_only_their_leads(backend: Backend) -> None:
    c = CapLimits(
        "fs",
        "UTC",
        (("day", 5),),
        scoped_limits=(("flow=solar", "day", 2),),
        scoped_budgets=(("source=aff", "day", D("50")),),
    )
    solar, roof = ("flow=solar", "source=own"), ("flow=roof", "source=own")
    aff = ("flow=roof", "source=aff")

    assert [await backend.caps.reserve(c, f"s{i}", NOON, D("10"), solar) is not None for i in range(3)] == [
        True,
        True,
        False,
    ]
    assert not backend.caps.has_room(c, NOON, None, solar) and backend.caps.has_room(c, NOON, None, roof)
    assert await backend.caps.reserve(c, "a1", NOON, D("30"), aff) is not None
    assert await backend.caps.reserve(c, "a2", NOON, D("30"), aff) is None  # $60 > $50 from aff
    assert await backend.caps.reserve(c, "r1", NOON, D("30"), roof) is not None
    assert await backend.caps.reserve(c, "r2", NOON, D("30"), roof) is not None
    assert await backend.caps.reserve(c, "r3", NOON, D("30"), roof) is None  # the buyer's 5 a day


async def test_volume_counts_run_per_utc_period(backend: Backend) -> None:
    for _ in range(3):
        await backend.volume.add("source:s1", NOON)
    await backend.volume.add("buyer:b1", NOON)

    now = await backend.volume.counts("source:s1", NOON)
    next_hour = await backend.volume.counts("source:s1", NOON + 3600)
    next_day = await backend.volume.counts("source:s1", NOON + 86400)

    assert (now["hour"], now["day"]) == (3, 3)
    assert (next_hour["hour"], next_hour["day"]) == (0, 3)
    assert next_day["day"] == 0
    assert (await backend.volume.counts("buyer:b1", NOON))["day"] == 1


async def test_the_memory_store_keeps_answers_at_their_encoded_size() -> None:
    store = MemoryIdempotencyStore(max_entries=1000)
    result = _result("L-size")
    size = len(encode(result))

    async def work() -> RoutingResult:
        return result

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            await store.once(f"L-size-{i}", work)
        per_answer = (tracemalloc.get_traced_memory()[0] - before) / 200
    finally:
        tracemalloc.stop()

    # orjson's own buffer is ~8 KB whatever the length; 100,000 of them were the memory plateau.
    assert per_answer < size + 400, (per_answer, size)
