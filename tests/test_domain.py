"""Pure decision logic: money, lead schema, mappings, ranking."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from routelead.domain.lead import FieldSpec, LeadInvalid, LeadSchema, Limits
from routelead.domain.mapping import BodyBuilder, Source, Transaction
from routelead.domain.money import PriceError, fmt, parse_price, to_cents
from routelead.domain.tree import Offer, ScoreWeights, allocate, rotation, smooth_weighted_sequence, value


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


def test_smooth_weighted_rotation_interleaves_by_weight() -> None:
    seq = smooth_weighted_sequence([5, 1, 1])
    assert seq == (0, 0, 1, 0, 2, 0, 0)
    assert [seq.count(i) for i in range(3)] == [5, 1, 1]


def test_round_robin_rotation_starts_with_each_buyer_in_turn() -> None:
    assert [rotation(3, t)[0] for t in range(6)] == [0, 1, 2, 0, 1, 2]
    assert rotation(3, 1) == [1, 2, 0]
    assert sorted(rotation(3, 4, smooth_weighted_sequence([2, 1, 1]))) == [0, 1, 2]


def _offer(key: str, price: str, exclusive: bool = False) -> Offer:
    return Offer(key, Decimal(price), Decimal(price), exclusive)


def test_allocation_takes_whichever_earns_more_exclusive_or_shared() -> None:
    shared_wins = [_offer("x", "50", exclusive=True), _offer("a", "30"), _offer("b", "25"), _offer("c", "5")]
    assert [o.key for o in allocate(shared_wins, 3, shared_only=False)] == ["a", "b", "c"]
    exclusive_wins = [_offer("x", "90", exclusive=True), _offer("a", "30"), _offer("b", "25")]
    assert [o.key for o in allocate(exclusive_wins, 3, shared_only=False)] == ["x"]
    assert [o.key for o in allocate(exclusive_wins, 3, shared_only=True)] == ["a", "b"]
    assert [o.key for o in allocate(exclusive_wins, 1, shared_only=False)] == ["x"]
    assert allocate(exclusive_wins, 0, shared_only=False) == []


def test_ranking_values() -> None:
    w = ScoreWeights()
    assert value("price", Decimal(40), Decimal("0.5"), 30, Decimal(40), w) == Decimal(40)
    assert value("expected_revenue", Decimal(40), Decimal("0.5"), 30, Decimal(40), w) == Decimal(20)
    # score: 0.5 x 40/40 + 0.3 x 0.5 + 0.2 x 30/(30+30)
    assert value("score", Decimal(40), Decimal("0.5"), 30, Decimal(40), w) == Decimal("0.75")
