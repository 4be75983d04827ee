"""Rule language, schedules, floors and bid conditions: pure, no sockets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from routelead.domain.conditions import check_conditions
from routelead.domain.floors import FloorPolicy, QualityStep
from routelead.domain.rules import Facts, RuleError, compile_rule
from routelead.domain.schedule import build_schedule

FIELDS = {n: object() for n in ("state", "zip", "credit", "bill", "age", "email", "tcpa", "notes")}
LEAD = {"state": "CA", "zip": "90210", "credit": "700+", "age": "42", "tcpa": "true", "email": "a@b.co"}


def check(spec: Any, fields: dict[str, str] | None = None, age_s: float = 0) -> str | None:
    return compile_rule(spec, "filter", FIELDS).failure(Facts(LEAD if fields is None else fields, age_s))


@pytest.mark.parametrize(
    ("spec", "passes"),
    [
        ({"field": "state", "equals": "CA"}, True),
        ({"field": "state", "not_equals": "CA"}, False),
        ({"field": "state", "in": ["AZ", "CA"]}, True),
        ({"field": "state", "not_in": ["CA"]}, False),
        ({"field": "age", "gte": 18, "lt": 65}, True),
        ({"field": "age", "gt": 42}, False),
        ({"field": "age", "lte": "42"}, True),
        ({"field": "age", "between": [43, 99]}, False),
        ({"field": "credit", "pattern": r"\d{3}\+"}, True),
        ({"field": "notes", "blank": True}, True),
        ({"field": "notes", "not_blank": True}, False),
        ({"field": "zip", "zip_prefix": ["902", "100"]}, True),
        ({"zip_prefix": ["100"]}, False),
        ({"zips": ["90210"]}, True),
        ({"states": ["TX"]}, False),
        ({"consent": "tcpa"}, True),
        ({"max_lead_age_minutes": 5}, True),
        ({"all": [{"states": ["CA"]}, {"field": "age", "gte": 21}]}, True),
        ({"any": [{"states": ["TX"]}, {"field": "credit", "equals": "700+"}]}, True),
        ({"not": {"states": ["CA"]}}, False),
        ({"field": "bill", "gt": 100}, False),  # absent: a numeric test fails
    ],
)
def test_each_operator(spec: Any, passes: bool) -> None:
    assert (check(spec) is None) is passes, check(spec)


def test_a_failure_names_the_rule_not_the_value() -> None:
    why = check({"all": [{"states": ["CA"]}, {"field": "email", "pattern": ".*@corp[.]com"}]})
    assert why == "email must match /.*@corp[.]com/"
    assert "a@b.co" not in (why or "")
    assert (
        check({"any": [{"states": ["TX"]}, {"zips": ["10001"]}]})
        == "none of: state not in [TX]; zip not in [10001]"
    )
    assert check({"max_lead_age_minutes": 5}, age_s=301) == "lead older than 5 minutes"


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"field": "nope", "equals": 1}, "filter.field"),
        ({"field": "state", "like": "C%"}, "filter"),
        ({"field": "state"}, "filter"),
        ({"all": []}, "filter.all"),
        ({"any": [{"field": "age", "gt": "x"}]}, "filter.any[0].gt"),
        ({"field": "age", "between": [5]}, "filter.between"),
        ({"field": "state", "pattern": "("}, "filter.pattern"),
        ({"field": "state", "in": []}, "filter.in"),
        ({"eval": "__import__('os')"}, "filter"),
        ("state == CA", "filter"),
    ],
)
def test_bad_rules_are_refused_with_their_path(spec: Any, path: str) -> None:
    with pytest.raises(RuleError) as err:
        compile_rule(spec, "filter", FIELDS)
    assert err.value.path == path


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_schedules_in_the_buyers_timezone() -> None:
    s = build_schedule(
        "America/Los_Angeles", ["mon", "tue", "wed", "thu", "fri"], "08:00-18:00", [date(2026, 11, 26)]
    )
    assert s.closed_reason(at("2026-11-23T08:00:00-08:00")) is None  # Monday 08:00 local
    assert s.closed_reason(at("2026-11-23T17:59:00-08:00")) is None
    assert "closed at 18:00 mon" in (s.closed_reason(at("2026-11-23T18:00:00-08:00")) or "")
    assert s.closed_reason(at("2026-11-23T15:00:00+00:00")) is not None  # 07:00 in Los Angeles
    assert "closed on sat" in (s.closed_reason(at("2026-11-28T12:00:00-08:00")) or "")
    assert "day off" in (s.closed_reason(at("2026-11-26T12:00:00-08:00")) or "")


def test_per_day_hours_and_overnight_windows() -> None:
    s = build_schedule("UTC", None, {"fri": "22:00-02:00", "sat": ["10:00-12:00", "14:00-16:00"]}, None)
    assert s.closed_reason(at("2026-11-27T23:30:00+00:00")) is None  # Friday late
    assert s.closed_reason(at("2026-11-28T15:00:00+00:00")) is None
    assert s.closed_reason(at("2026-11-28T13:00:00+00:00")) is not None
    with pytest.raises(ValueError, match="08:00-18:00"):
        build_schedule("UTC", ["mon"], "8 to 6", None)
    with pytest.raises(ValueError, match="unknown day"):
        build_schedule("UTC", ["funday"], None, None)


def test_dynamic_floor_quality_last_match_wins_times_business_hours() -> None:
    rule = compile_rule
    policy = FloorPolicy(
        base=Decimal("25"),
        exclusive=Decimal("75"),
        quality=(
            QualityStep(rule({"states": ["CA"]}, "", FIELDS), Decimal("1.2")),
            QualityStep(rule({"field": "credit", "equals": "700+"}, "", FIELDS), Decimal("1.5")),
            QualityStep(rule({"states": ["TX"]}, "", FIELDS), Decimal("0.8")),
        ),
        business_hours=build_schedule("UTC", None, "09:00-17:00", None),
        business_hours_multiplier=Decimal("1.2"),
    )
    facts = Facts(LEAD)
    noon, night = at("2026-11-23T12:00:00+00:00"), at("2026-11-23T22:00:00+00:00")
    assert policy.multiplier(facts, night) == Decimal("1.5")  # CA matched, then 700+ (last match)
    floors = policy.for_tier(None, facts, noon)
    assert floors.shared == Decimal("45.00")  # 25 x 1.5 x 1.2
    assert floors.for_bid(exclusive=True) == Decimal("135.00")
    assert policy.for_tier(Decimal("10"), facts, night).shared == Decimal(
        "15.0"
    )  # a tier floor replaces the base


def test_bid_conditions() -> None:
    facts = Facts({"state": "CA", "tcpa": "false"}, lead_age_s=400)
    assert (
        check_conditions({"states": ["tx", "az"]}, facts, "tcpa").failure == "bid limited to states [tx, az]"
    )
    assert (
        check_conditions({"max_age": 5}, facts, "tcpa").failure
        == "bid requires a lead at most 5 minutes old (max_age)"
    )
    assert check_conditions({"max_age": 10}, facts, "tcpa").failure is None
    assert check_conditions({"require_consent": True}, facts, "tcpa").failure is not None
    assert check_conditions({"max_age": "soon"}, facts, "tcpa").failure == "unreadable bid condition max_age"
    verdict = check_conditions({"exclusive": True, "states": ["CA"], "note": None}, facts, "tcpa")
    assert verdict.failure is None and verdict.exclusive
    # Fail closed: terms RouteLead cannot check are terms it cannot sell under.
    unknown = check_conditions({"exclusive": True, "something_new": 1}, facts, "tcpa")
    assert unknown.failure == "bid condition something_new not understood: not sold under it"
    assert check_conditions({"require_consent": "maybe"}, facts, "tcpa").failure == (
        "unreadable bid condition require_consent (true or false)"
    )
