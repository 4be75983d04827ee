"""Pricing (seed 003): every rule evaluated, last match wins; exact decimals, rounded once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from routelead.domain.pricing import PriceBook, PriceRule, SourcePricing, book
from routelead.domain.rules import PASS, Facts, compile_rule
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, respond
from tests.configs import LEAD_FIELDS, buyer, compile_doc, document, fixed_buyer
from tests.conftest import Start

FIELDS: dict[str, object] = dict.fromkeys(("state", "credit", "email_valid", "phone_valid"), object())


def rule(when: dict[str, Any] | None, action: str, amount: str) -> PriceRule:
    return PriceRule(compile_rule(when, "", FIELDS) if when else PASS, action, Decimal(amount))  # type: ignore[arg-type]


def test_last_match_wins_25_then_ca_30_then_exclusive_ca_50() -> None:
    prices = PriceBook((
        rule(None, "set", "25"),
        rule({"states": ["CA"]}, "set", "30"),
        rule({"all": [{"states": ["CA"]}, {"exclusive": True}]}, "set", "50"),
    ))  # fmt: skip
    assert prices.apply(Decimal(0), Facts({"state": "CA"}, exclusive=True)) == Decimal("50")
    assert prices.apply(Decimal(0), Facts({"state": "CA"})) == Decimal("30")
    assert prices.apply(Decimal(0), Facts({"state": "TX"}, exclusive=True)) == Decimal("25")


def test_base_10_ca_15_ny_18_exclusive_adds_10_on_top() -> None:
    prices = PriceBook((
        rule({"states": ["CA"]}, "set", "15"),
        rule({"states": ["NY"]}, "set", "18"),
        rule({"exclusive": True}, "add", "10"),
    ))  # fmt: skip
    base = Decimal("10")
    assert prices.apply(base, Facts({"state": "CA"}, exclusive=True)) == Decimal("25")
    assert prices.apply(base, Facts({"state": "NY"})) == Decimal("18")
    assert prices.apply(base, Facts({"state": "TX"}, exclusive=True)) == Decimal("20")
    assert prices.apply(base, Facts({"state": "TX"})) == Decimal("10")


@pytest.mark.parametrize(("today", "price"), [(0, "25"), (100, "25"), (101, "23"), (501, "20"), (1001, "18")])
def test_volume_tiers(today: int, price: str) -> None:
    prices = PriceBook((
        rule({"volume": "source", "period": "day", "gt": 100}, "set", "23"),
        rule({"volume": "source", "period": "day", "gt": 500}, "set", "20"),
        rule({"volume": "source", "gt": 1000}, "set", "18"),
    ))  # fmt: skip
    assert prices.apply(Decimal(25), Facts({}, counts={"source:day": today})) == Decimal(price)


@pytest.mark.parametrize(
    ("when", "price"),
    [
        ("2026-11-23T12:00:00", "25"),  # Monday noon
        ("2026-11-23T08:59:00", "20"),  # before 09
        ("2026-11-23T18:00:00", "20"),  # after 17
        ("2026-11-28T12:00:00", "15"),  # Saturday
        ("2026-11-29T07:00:00", "15"),  # Sunday early: the weekend rule comes last and wins
    ],
)
def test_time_of_day_and_weekend_rates(when: str, price: str) -> None:
    tz = "America/New_York"
    prices = PriceBook((
        rule({"hour": {"lt": 9}, "timezone": tz}, "set", "20"),
        rule({"hour": {"gt": 17}, "timezone": tz}, "set", "20"),
        rule({"weekday": ["sat", "sun"], "timezone": tz}, "set", "15"),
    ))  # fmt: skip
    from zoneinfo import ZoneInfo

    now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    assert prices.apply(Decimal(25), Facts({}, now=now)) == Decimal(price)


def test_quality_rules_add_on_top() -> None:
    prices = PriceBook((
        rule({"all": [{"field": "email_valid", "equals": True}, {"field": "phone_valid", "equals": True}]},
             "set", "35"),
        rule({"field": "credit", "gte": 700}, "set", "40"),
        rule({"field": "email_valid", "equals": True}, "add", "5"),
    ))  # fmt: skip
    assert (
        prices.apply(Decimal(25), Facts({"email_valid": "true", "phone_valid": "true", "credit": "650"}))
        == 40
    )
    assert (
        prices.apply(Decimal(25), Facts({"email_valid": "true", "phone_valid": "true", "credit": "720"}))
        == 45
    )


def test_fractional_cents_are_kept_and_rounded_once_half_up() -> None:
    source = SourcePricing(Decimal("10.555"))
    cost = source.cost(source.fixed_cost(Facts({})), Decimal("25"))
    assert cost == Decimal("10.555")
    booked = book(cost, [Decimal("25")])
    assert (booked.cost, booked.revenue, booked.margin) == (
        Decimal("10.56"),
        Decimal("25.00"),
        Decimal("14.44"),
    )


def test_revenue_share_30_percent() -> None:
    partner = SourcePricing(Decimal(0), revenue_share=Decimal(30))
    booked = book(partner.cost(Decimal(0), Decimal(50)), [Decimal(50)])
    assert (booked.cost, booked.margin) == (Decimal("15.00"), Decimal("35.00"))


def test_a_shared_sale_splits_the_cost_so_sales_add_up_to_the_lead() -> None:
    booked = book(Decimal(10), [Decimal(25), Decimal(30)])
    assert (booked.revenue, booked.cost, booked.margin) == (
        Decimal("55.00"),
        Decimal("10.00"),
        Decimal("45.00"),
    )
    assert booked.sale_costs == (Decimal("4.55"), Decimal("5.45"))
    assert sum(booked.sale_costs) == booked.cost


def test_margin_floor_accounts_for_fees_and_revenue_share() -> None:
    assert SourcePricing(Decimal(10)).margin_floor(Decimal(10), Decimal(2), Decimal(5)) == Decimal(17)
    shared = SourcePricing(Decimal(10), revenue_share=Decimal(30))
    assert shared.margin_floor(Decimal(10), Decimal(2), Decimal(5)).quantize(Decimal("0.0001")) == Decimal(
        "24.2857"
    )


PRICED_FIELDS = LEAD_FIELDS | {"source_price": {"type": "decimal"}}


def priced_doc(buyers: list[dict[str, Any]], **flow: Any) -> dict[str, Any]:
    doc = document(buyers, **flow)
    doc["lead"] = {"fields": PRICED_FIELDS}
    doc["sources"][0] |= {
        "cost": "10.00",
        "price_field": "source_price",
        "pricing": [{"when": {"states": ["CA"]}, "add": "1.50"}],
    }
    return doc


async def test_vendor_price_and_source_rules_make_the_cost(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(40), post=accept())
    h = await start(config=compile_doc(priced_doc([buyer(buyers.url, "a")], fee="0.25")))

    vendor = await h.route({**_lead(), "source_price": "12.50"})
    default = await h.route({**_lead(2), "state": "TX"})

    assert (vendor.cost, vendor.revenue, vendor.margin) == (
        "14.25",
        "40.00",
        "25.75",
    )  # 12.50 + CA 1.50 + fee
    assert default.cost == "10.25"


async def test_margin_protection_and_the_negative_margin_flag(buyers: BuyerServer, start: Start) -> None:
    buyers.on("thin", ping=bid("14.00"), post=accept())
    buyers.on("ok", ping=bid("12.50"), post=accept())
    protected = await start(config=compile_doc(priced_doc([buyer(buyers.url, "thin")], min_margin="5.00")))
    unprotected = await start(config=compile_doc(priced_doc([buyer(buyers.url, "ok")])))

    refused = await protected.route({**_lead(), "state": "TX"})  # cost 10: a $14 bid keeps only $4
    losing = await unprotected.route({**_lead(), "source_price": "13.00", "state": "TX"})

    assert refused.outcome == pb.UNSOLD
    assert refused.attempts[0].status == pb.BELOW_FLOOR and "15.00" in refused.attempts[0].reason
    assert (losing.outcome, losing.margin, losing.negative_margin) == (pb.SOLD, "-0.50", True)


async def test_buyer_rules_price_a_fixed_price_buyer(buyers: BuyerServer, start: Start) -> None:
    buyers.on("flat", post=accept())
    flat = fixed_buyer(buyers.url, "flat", "30.00", pricing=[{"when": {"exclusive": True}, "set": "75.00"}])
    h = await start(config=compile_doc(priced_doc([flat])))

    reply = await h.route(_lead())

    assert [(s.buyer_id, s.price) for s in reply.sales] == [
        ("flat", "75.00")
    ]  # every single sale is exclusive
    assert buyers.got("flat", "post")[0].json()["price"] == "75.00"


async def test_a_price_returned_on_the_post_of_a_price_on_post_buyer_is_the_revenue(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("a", ping=bid(40), post=respond({"status": "accepted", "lead_id": "X", "price": "41.50"}))
    doc = priced_doc([buyer(buyers.url, "a", post={"answer": {"price": "price"}, "price_on_post": True})])
    h = await start(config=compile_doc(doc))

    reply = await h.route(_lead())

    assert (reply.sales[0].price, reply.revenue, reply.sales[0].stated_price) == ("41.50", "41.50", "")


async def test_a_bidding_buyers_post_price_is_a_dispute_booked_at_the_bid(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("a", ping=bid(40), post=respond({"status": "accepted", "lead_id": "X", "price": "41.50"}))
    doc = priced_doc([buyer(buyers.url, "a", post={"answer": {"price": "price"}})])
    h = await start(config=compile_doc(doc))

    reply = await h.route(_lead())

    assert (reply.sales[0].price, reply.revenue, reply.sales[0].stated_price) == ("40.00", "40.00", "41.50")


async def test_each_shared_sale_carries_its_own_margin(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(25), post=accept())
    buyers.on("b", ping=bid(30), post=accept())
    h = await start(
        config=compile_doc(priced_doc([buyer(buyers.url, "a"), buyer(buyers.url, "b")], max_buyers=2))
    )

    reply = await h.route({**_lead(), "state": "TX"})

    sales = {s.buyer_id: (s.price, s.cost, s.margin) for s in reply.sales}
    assert sales == {"b": ("30.00", "5.45", "24.55"), "a": ("25.00", "4.55", "20.45")}
    assert (reply.revenue, reply.cost, reply.margin) == ("55.00", "10.00", "45.00")


def _lead(n: int = 1) -> dict[str, str]:
    from tests.configs import GOOD_LEAD

    return GOOD_LEAD | {"email": f"p{n}@example.com"}
