"""Returns: reversing entries within the window and rate, refusals beyond them, gross and net."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from routelead.records.codec import SaleRecord
from routelead.records.returns import DAY_S, ReturnPolicy, ReturnRefused, policy_for

from tests.configs import buyer, compile_doc, document
from tests.records.conftest import Backend
from tests.records.test_ledger import a_lead

WEEK = ReturnPolicy(window_s=7 * DAY_S, max_rate=Decimal("0.5"), refund_cost=True)


def _span() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=30), now + timedelta(days=1)


async def test_a_return_reverses_revenue_and_cost_as_new_entries(backend: Backend) -> None:
    ledger = await backend.ledger()
    await ledger.apply(
        [a_lead("L-1", cost="10.00", price="45.10"), a_lead("L-2", cost="10.00", price="30.00")]
    )

    done = await ledger.return_sale("L-1", "b", "disconnected phone", WEEK)
    again = await ledger.return_sale("L-1", "b", "asked twice", WEEK)

    assert done["revenue_reversed"] == Decimal("45.10") and done["cost_reversed"] == Decimal("10.00")
    assert again["reason"] == "disconnected phone"  # the first return stands; nothing new booked
    story = await ledger.lead("L-1")
    assert sorted((e["kind"], e["amount"]) for e in story.entries) == [
        ("cost", Decimal("10.00")),
        ("cost_reversal", Decimal("-10.00")),
        ("revenue", Decimal("45.10")),
        ("revenue_reversal", Decimal("-45.10")),
    ]
    assert [s["settlement"] for s in story.sales] == ["sold"]  # history is not edited
    [t] = await ledger.totals("buyer", *_span())
    assert (t.sales, t.returns, t.gross_revenue, t.net_revenue) == (2, 1, Decimal("75.10"), Decimal("30.00"))
    [s] = await ledger.totals("source", *_span())
    assert (s.gross_cost, s.net_cost, s.gross_margin, s.net_margin) == (
        Decimal("20.00"),
        Decimal("10.00"),
        Decimal("55.10"),
        Decimal("20.00"),
    )


async def test_returns_outside_the_terms_are_refused_and_book_nothing(backend: Backend) -> None:
    ledger = await backend.ledger()
    now = time.time()
    old = a_lead("OLD", at=now - 8 * DAY_S)
    fresh = [a_lead(f"L-{i}", at=now - 60) for i in range(4)]
    unsettled = SaleRecord("U-1", "b", Decimal("20.00"), "", False, "t1", "unsettled", now, "solar", "src-1")
    await ledger.apply([old, *fresh, unsettled])

    with pytest.raises(ReturnRefused, match="past the return window of 7 days"):
        await ledger.return_sale("OLD", "b", "bad lead", WEEK)
    with pytest.raises(ReturnRefused, match="no sale"):
        await ledger.return_sale("L-1", "zzz", "bad lead", WEEK)
    with pytest.raises(ReturnRefused, match="unsettled"):
        await ledger.return_sale("U-1", "b", "bad lead", WEEK)
    with pytest.raises(ReturnRefused, match="needs a reason"):
        await ledger.return_sale("L-1", "b", "  ", WEEK)
    for i in range(2):  # 5 sales in the window at 50 %: two returns fit, a third does not
        await ledger.return_sale(f"L-{i}", "b", "bad lead", WEEK)
    with pytest.raises(ReturnRefused, match="return rate limit: 2 of 5"):
        await ledger.return_sale("L-2", "b", "bad lead", WEEK)

    [t] = await ledger.totals("buyer", *_span())
    assert t.returns == 2 and t.gross_revenue - t.net_revenue == Decimal("90.20")


async def test_an_unsettled_sale_settles_once_as_a_new_entry(backend: Backend) -> None:
    ledger = await backend.ledger()
    unsettled = SaleRecord(
        "U-1", "b", Decimal("20.00"), "", False, "t1", "unsettled", time.time(), "solar", "src-1"
    )
    await ledger.apply([unsettled])

    assert await ledger.settle("U-1", "b", sold=True) == "sold"
    assert await ledger.settle("U-1", "b", sold=False) == "sold"  # settled is settled

    story = await ledger.lead("U-1")
    assert [(e["kind"], e["amount"]) for e in story.entries] == [("revenue", Decimal("20.00"))]


def test_return_terms_come_from_the_buyer_and_the_source() -> None:
    doc = document(
        [
            buyer(
                lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "a", returns={"days": 5, "max_rate_percent": 12.5}
            ),
            buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "b"),
        ]
    )
    doc["sources"][0]["refund_cost_on_return"] = True
    config = compile_doc(doc)

    a = policy_for(config.buyer_returns, config.sources["src-1"].refund_cost_on_return, "a")
    b = policy_for(config.buyer_returns, False, "b")

    assert (a.window_s, a.max_rate, a.refund_cost) == (5 * DAY_S, Decimal("0.125"), True)
    assert b.window_s == 0
