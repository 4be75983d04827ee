"""Which counters a reservation touches: every period for every buyer, capped or not."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from routelead.state.memory import MemoryCapStore
from routelead.state.plan import UNLIMITED, counters
from routelead.state.ports import CapLimits

NY = "America/New_York"
SCOPES = ("flow=solar", "source=s1")


def test_an_uncapped_buyer_is_counted_in_every_period_in_total_and_per_scope() -> None:
    now = datetime(2026, 11, 22, 15, 30, tzinfo=ZoneInfo(NY)).timestamp()
    plan = counters(CapLimits("b", NY, ()), now, 1250, SCOPES)
    names = {c.name: c for c in plan}

    assert len(plan) == 24 and all(c.limit == UNLIMITED for c in plan)
    assert names["n:day:2026-11-22"].add == 1 and names["usd:day:2026-11-22"].add == 1250
    assert "n:flow=solar:week:2026-W47" in names and "usd:source=s1:month:2026-11" in names
    assert counters(CapLimits("b", NY, ()), now, 1250, SCOPES, every=False) == []


def test_capped_counters_come_first_and_are_not_counted_twice() -> None:
    now = datetime(2026, 11, 22, 15, 30, tzinfo=ZoneInfo(NY)).timestamp()
    caps = CapLimits("b", NY, (("day", 2),), (("day", Decimal("40.00")),))
    plan = counters(caps, now, 1500, SCOPES)

    assert [(c.name, c.limit) for c in plan[:2]] == [("n:day:2026-11-22", 2), ("usd:day:2026-11-22", 4000)]
    assert len(plan) == 24 and len({c.name for c in plan}) == 24


def test_period_keys_follow_the_clock_across_midnight_and_back() -> None:
    midnight = datetime(2026, 11, 23, tzinfo=ZoneInfo(NY)).timestamp()
    caps = CapLimits("b", NY, (("day", 1),))

    def day(now: float) -> str:
        return counters(caps, now, 0)[0].name

    assert [day(midnight - 1), day(midnight + 1), day(midnight - 1)] == [
        "n:day:2026-11-22",
        "n:day:2026-11-23",
        "n:day:2026-11-22",
    ]


async def test_a_cap_set_after_sales_counts_them_in_the_memory_store() -> None:
    store = MemoryCapStore()
    now = datetime(2026, 11, 22, 15, 30, tzinfo=ZoneInfo(NY)).timestamp()
    uncapped = CapLimits("b", NY, ())
    for i in range(2):
        r = await store.reserve(uncapped, f"l{i}", now, Decimal("15.00"), SCOPES)
        assert r is not None
        await store.commit(r)
    capped = CapLimits("b", NY, (), scoped_limits=(("flow=solar", "day", 2),))

    assert not store.has_room(capped, now, scopes=SCOPES)
    assert await store.reserve(capped, "l3", now, Decimal("15.00"), SCOPES) is None
    assert store.has_room(capped, now, scopes=("flow=other", "source=s1"))
