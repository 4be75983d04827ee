"""Pure decision logic: money, lead schema, mappings, ranking."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from routelead.domain.auction import Candidate, mark_losers, rank
from routelead.domain.lead import FieldSpec, LeadInvalid, LeadSchema, Limits
from routelead.domain.mapping import BodyBuilder, Source, Transaction
from routelead.domain.money import PriceError, fmt, parse_price, to_cents
from routelead.domain.outcome import Attempt, Status


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (45, "45"),
        (45.1, "45.1"),
        ("45.00", "45.00"),
        ("$1,250.5", "1250.5"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_prices_parse_to_exact_decimals(raw: object, expected: str) -> None:
    assert parse_price(raw) == Decimal(expected)


@pytest.mark.parametrize(
    "raw", [True, None, [1], {"a": 1}, "NaN", "Infinity", "-inf", "-5", -0.01, "abc", "", "9" * 40, 10001]
)
def test_unusable_prices_are_refused(raw: object) -> None:
    with pytest.raises(PriceError):
        parse_price(raw)


def test_money_rounds_once_half_up_to_cents() -> None:
    assert to_cents(Decimal("10.555")) == Decimal("10.56")
    assert fmt(Decimal("45")) == "45.00"
    assert fmt(Decimal("-6")) == "-6.00"


SCHEMA = LeadSchema(
    {
        "email": FieldSpec("email", "email", required=True, pii=True),
        "phone": FieldSpec("phone", "phone", pii=True),
        "zip": FieldSpec("zip", "zip", required=True),
        "state": FieldSpec("state", "state"),
        "owner": FieldSpec("owner", "bool"),
        "age": FieldSpec("age", "int"),
        "income": FieldSpec("income", "decimal"),
        "dob": FieldSpec("dob", "date"),
        "credit": FieldSpec("credit", enum=frozenset({"good", "fair"})),
        "code": FieldSpec("code", pattern=re.compile(r"[A-Z]{3}")),
    },
    limits=Limits(max_fields=12, max_value_length=100),
)


def test_a_lead_is_normalised_and_split_into_ping_fields() -> None:
    lead = SCHEMA.validate(
        {"email": " Ann@Example.COM ", "phone": "+1 (555) 123-4567", "zip": "90210-1234", "state": "ca",
         "owner": "Yes", "age": "042", "income": "1e3", "dob": "1980-02-01", "credit": "good", "code": "ABC"}
    )  # fmt: skip
    assert lead.fields["email"] == "ann@example.com"
    assert lead.fields["phone"] == "5551234567"
    assert (lead.fields["zip"], lead.fields["state"], lead.fields["owner"]) == ("90210", "CA", "true")
    assert (lead.fields["age"], lead.fields["income"]) == ("42", "1E+3")
    assert "email" not in lead.ping_fields and "phone" not in lead.ping_fields
    assert lead.ping_fields["zip"] == "90210"


BAD = {
    "email": "nope",
    "zip": "1",
    "owner": "maybe",
    "age": "1.5",
    "credit": "bad",
    "code": "abc",
    "dob": "01/02/1980",
    "state": "ZZ",
    "extra": "x",
    "income": "NaN",
}


def test_every_problem_is_reported_at_once_without_echoing_values() -> None:
    with pytest.raises(LeadInvalid) as err:
        SCHEMA.validate(BAD)
    fields = {p.split(":")[0] for p in err.value.problems}
    assert fields == {f"fields.{n}" for n in BAD}
    assert "nope" not in str(err.value)


def test_required_blank_and_limits() -> None:
    with pytest.raises(LeadInvalid) as err:
        SCHEMA.validate({"email": "  ", "zip": "x" * 101})
    assert set(err.value.problems) == {"fields.email: required", "fields.zip: longer than 100 characters"}
    with pytest.raises(LeadInvalid, match="at most 12"):
        SCHEMA.validate({f"f{i}": "x" for i in range(13)})


def test_unknown_fields_can_be_dropped_instead() -> None:
    schema = LeadSchema(SCHEMA.fields, unknown_fields="drop")
    lead = schema.validate({"email": "a@b.co", "zip": "12345", "utm_source": "google"})
    assert "utm_source" not in lead.fields


def test_a_mapping_renames_transforms_nests_and_adds_statics() -> None:
    builder = BodyBuilder.compile(
        {
            "geo.st": Source(field="state"),
            "geo.z3": Source(field="zip", transform="zip3"),
            "own": Source(field="owner", transform="y_n"),
            "owner_bool": Source(field="owner"),
            "vertical": Source(static="solar"),
            "id": Source(tx="ping_id"),
            "missing": Source(field="age"),
        },
        {"owner": "bool"},
    )
    body = builder.build({"state": "CA", "zip": "90210", "owner": "true"}, Transaction("L1", ping_id="P9"))
    assert body == {
        "geo": {"st": "CA", "z3": "902"},
        "own": "Y",
        "owner_bool": True,
        "vertical": "solar",
        "id": "P9",
    }


def _candidate(buyer: str, price: str, tier: int = 0, priority: int = 0, order: int = 0) -> Candidate:
    return Candidate(Attempt(buyer, f"t{tier}", Status.BID, Decimal(price)), tier, priority, order)


def test_ranking_is_tier_then_price_then_priority_then_order() -> None:
    cs = [
        _candidate("low", "20", order=1),
        _candidate("tie_b", "30", priority=1, order=2),
        _candidate("tie_a", "30", priority=1, order=3),
        _candidate("prio", "30", priority=5, order=4),
        _candidate("rich_lower_tier", "99", tier=1, order=5),
        _candidate("under", "4.99", order=6),
    ]
    offers = rank(cs, Decimal("5"))
    assert [c.attempt.buyer_id for c in offers] == ["prio", "tie_b", "tie_a", "low", "rich_lower_tier"]
    assert cs[-1].attempt.status is Status.BELOW_FLOOR
    assert "4.99" in cs[-1].attempt.reason


def test_losers_are_outbid_or_not_offered() -> None:
    offers = rank([_candidate("a", "30"), _candidate("b", "20")], Decimal("0"))
    winner = offers[0].attempt
    winner.status = Status.POST_ACCEPTED
    mark_losers(offers, winner)
    assert offers[1].attempt.status is Status.OUTBID
    late = rank([_candidate("c", "10")], Decimal("0"))
    mark_losers(late, None)
    assert late[0].attempt.status is Status.NOT_OFFERED
