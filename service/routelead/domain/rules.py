"""The rule language for filters (and later pricing conditions), compiled once at config load.

A rule is plain data (`{field: state, in: [CA, AZ]}`, `{all: [...]}`, `{not: ...}`) turned into
small predicate objects; nothing is ever `eval`ed. A failing rule explains itself in words
that name the rule, never the lead's value (which may be PII).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol
from zoneinfo import ZoneInfo

from routelead.domain.patterns import PatternError, compile_pattern


@dataclass(frozen=True, slots=True)
class Facts:
    """What a rule may look at: the normalised lead fields and how old the lead is; pricing
    rules also see the time, today's volumes and whether the sale is exclusive."""

    fields: Mapping[str, str]
    lead_age_s: float = 0.0
    now: datetime | None = None
    # "source" / "buyer" → leads so far in the current day / hour / week / month ("source:day").
    counts: Mapping[str, int] = field(default_factory=dict)
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class Volume:
    key: str
    test: Callable[[Decimal], bool]
    text: str

    def failure(self, facts: Facts) -> str | None:
        return None if self.test(Decimal(facts.counts.get(self.key, 0))) else self.text


@dataclass(frozen=True, slots=True)
class Clock:
    """Hour of day or day of week, in a timezone."""

    tz: str
    test: Callable[[datetime], bool]
    text: str

    def failure(self, facts: Facts) -> str | None:
        now = facts.now or datetime.now(UTC)
        return None if self.test(now.astimezone(ZoneInfo(self.tz))) else self.text


@dataclass(frozen=True, slots=True)
class IsExclusive:
    want: bool

    def failure(self, facts: Facts) -> str | None:
        return None if facts.exclusive == self.want else ("not exclusive" if self.want else "exclusive")


class Rule(Protocol):
    def failure(self, facts: Facts) -> str | None:
        """None when the lead passes; otherwise which rule it failed, in words."""


class RuleError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class FieldTest:
    name: str
    text: str
    test: Callable[[str | None], bool]

    def failure(self, facts: Facts) -> str | None:
        return None if self.test(facts.fields.get(self.name)) else self.text


@dataclass(frozen=True, slots=True)
class LeadAge:
    max_s: float
    text: str

    def failure(self, facts: Facts) -> str | None:
        return None if facts.lead_age_s <= self.max_s else self.text


@dataclass(frozen=True, slots=True)
class Certificate:
    """Consent evidence: the certificate field is present (its format is checked at intake) and,
    with `max_age_s`, the lead is no older (the lead's created-at: neither TrustedForm URLs nor
    LeadiD tokens carry their own time)."""

    name: str
    max_age_s: float | None
    minutes: str = ""

    def failure(self, facts: Facts) -> str | None:
        if not facts.fields.get(self.name):
            return f"no consent certificate ({self.name})"
        if self.max_age_s is not None and facts.lead_age_s > self.max_age_s:
            return f"consent certificate older than {self.minutes} minutes"
        return None


@dataclass(frozen=True, slots=True)
class All:
    rules: tuple[Rule, ...]

    def failure(self, facts: Facts) -> str | None:
        for rule in self.rules:
            if (why := rule.failure(facts)) is not None:
                return why
        return None


@dataclass(frozen=True, slots=True)
class AnyOf:
    rules: tuple[Rule, ...]

    def failure(self, facts: Facts) -> str | None:
        reasons = []
        for rule in self.rules:
            why = rule.failure(facts)
            if why is None:
                return None
            reasons.append(why)
        return "none of: " + "; ".join(reasons)


@dataclass(frozen=True, slots=True)
class Not:
    rule: Rule
    text: str

    def failure(self, facts: Facts) -> str | None:
        return self.text if self.rule.failure(facts) is None else None


PASS: Rule = All(())


def uses_volume(rule: Rule) -> bool:
    """Does the rule look at volume counts? Only then are they counted and fetched."""
    if isinstance(rule, Volume):
        return True
    if isinstance(rule, All | AnyOf):
        return any(uses_volume(r) for r in rule.rules)
    if isinstance(rule, Not):
        return uses_volume(rule.rule)
    return False


def _num(value: str | None) -> Decimal | None:
    if value is None or not value.isascii():  # Decimal() would read Unicode digits as numbers
        return None
    try:
        n = Decimal(value)
    except InvalidOperation:
        return None
    return n if n.is_finite() else None


def _scalar(value: object, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise RuleError(path, f"expected a text, number or boolean, got {type(value).__name__}")


def _list(value: object, path: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise RuleError(path, "expected a non-empty list")
    return [_scalar(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _number(value: object, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RuleError(path, "expected a number")
    n = _num(str(value))
    if n is None:
        raise RuleError(path, "expected a number")
    return n


def _show(values: Sequence[str], limit: int = 8) -> str:
    more = f", … ({len(values)} in all)" if len(values) > limit else ""
    return "[" + ", ".join(values[:limit]) + more + "]"


_NUMERIC: dict[str, tuple[Callable[[Decimal, Decimal], bool], str]] = {
    "gt": (lambda a, b: a > b, ">"),
    "gte": (lambda a, b: a >= b, ">="),
    "lt": (lambda a, b: a < b, "<"),
    "lte": (lambda a, b: a <= b, "<="),
}
OPERATORS = [
    "equals",
    "not_equals",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "pattern",
    "blank",
    "not_blank",
    "zip_prefix",
]


def _field_test(name: str, op: str, arg: object, path: str) -> Rule:
    p = f"{path}.{op}"
    match op:
        case "equals":
            want = _scalar(arg, p)
            return FieldTest(name, f"{name} must equal {want}", lambda v: v == want)
        case "not_equals":
            bad = _scalar(arg, p)
            return FieldTest(name, f"{name} must not equal {bad}", lambda v: v != bad)
        case "in":
            allowed = frozenset(_list(arg, p))
            return FieldTest(name, f"{name} not in {_show(sorted(allowed))}", lambda v: v in allowed)
        case "not_in":
            banned = frozenset(_list(arg, p))
            return FieldTest(name, f"{name} in {_show(sorted(banned))}", lambda v: v not in banned)
        case "gt" | "gte" | "lt" | "lte":
            bound = _number(arg, p)
            cmp, sym = _NUMERIC[op]

            def numeric(v: str | None) -> bool:
                n = _num(v)
                return n is not None and cmp(n, bound)

            return FieldTest(name, f"{name} must be {sym} {bound}", numeric)
        case "between":
            if not isinstance(arg, list) or len(arg) != 2:
                raise RuleError(p, "expected [low, high]")
            lo, hi = _number(arg[0], f"{p}[0]"), _number(arg[1], f"{p}[1]")
            if lo > hi:
                raise RuleError(p, "low is above high")

            def within(v: str | None) -> bool:
                n = _num(v)
                return n is not None and lo <= n <= hi

            return FieldTest(name, f"{name} must be between {lo} and {hi}", within)
        case "pattern":
            if not isinstance(arg, str):
                raise RuleError(p, "expected a regular expression")
            try:
                rx = compile_pattern(arg)
            except PatternError as exc:
                raise RuleError(p, str(exc)) from None
            return FieldTest(
                name, f"{name} must match /{arg}/", lambda v: v is not None and bool(rx.fullmatch(v))
            )
        case "blank" | "not_blank":
            if arg is not True:
                raise RuleError(p, "write `true`")
            if op == "blank":
                return FieldTest(name, f"{name} must be blank", lambda v: not v)
            return FieldTest(name, f"{name} is blank", lambda v: bool(v))
        case "zip_prefix":
            prefixes = tuple(_list(arg, p))
            return FieldTest(
                name,
                f"{name} outside ZIP prefixes {_show(list(prefixes))}",
                lambda v: v is not None and v.startswith(prefixes),
            )
    raise RuleError(path, f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def compile_rule(spec: object, path: str, fields: Mapping[str, object]) -> Rule:
    """Turn rule data into a Rule; RuleError names the path of the first problem."""
    if not isinstance(spec, dict) or not spec:
        raise RuleError(path, "a rule is a mapping such as {field: state, in: [CA]} or {all: [...]}")
    keys = set(spec)
    if keys in ({"all"}, {"any"}):
        (kind,) = keys
        items = spec[kind]
        if not isinstance(items, list) or not items:
            raise RuleError(f"{path}.{kind}", "expected a non-empty list of rules")
        rules = tuple(compile_rule(r, f"{path}.{kind}[{i}]", fields) for i, r in enumerate(items))
        return All(rules) if kind == "all" else AnyOf(rules)
    if keys == {"not"}:
        inner = compile_rule(spec["not"], f"{path}.not", fields)
        return Not(inner, f"excluded by: not {_describe(spec['not'])}")
    if keys == {"consent"}:
        name = _known(spec["consent"], f"{path}.consent", fields)
        return FieldTest(name, f"no consent ({name})", lambda v: v == "true")
    if "certificate" in keys and keys <= {"certificate", "max_age_minutes"}:
        name = _known(spec["certificate"], f"{path}.certificate", fields)
        if getattr(fields[name], "type", "consent_certificate") != "consent_certificate":
            raise RuleError(f"{path}.certificate", f"{name!r} is not a field of type consent_certificate")
        if "max_age_minutes" not in spec:
            return Certificate(name, None)
        minutes = _number(spec["max_age_minutes"], f"{path}.max_age_minutes")
        return Certificate(name, float(minutes) * 60, str(minutes))
    if keys == {"max_lead_age_minutes"}:
        minutes = _number(spec["max_lead_age_minutes"], f"{path}.max_lead_age_minutes")
        return LeadAge(float(minutes) * 60, f"lead older than {minutes} minutes")
    if keys == {"exclusive"}:
        if not isinstance(spec["exclusive"], bool):
            raise RuleError(f"{path}.exclusive", "write true or false")
        return IsExclusive(spec["exclusive"])
    if "volume" in keys:
        return _volume(spec, path)
    if "hour" in keys or "weekday" in keys:
        return _clock(spec, path)
    if keys == {"states"}:
        return _field_test(_known("state", path, fields), "in", spec["states"], path)
    if keys == {"zip_prefix"} or keys == {"zips"}:
        op, arg = ("zip_prefix", spec["zip_prefix"]) if "zip_prefix" in keys else ("in", spec["zips"])
        return _field_test(_known("zip", path, fields), op, arg, path)
    if "field" in keys:
        name = _known(spec["field"], f"{path}.field", fields)
        ops = keys - {"field"}
        if not ops:
            raise RuleError(path, f"give an operator: {', '.join(OPERATORS)}")
        tests = tuple(_field_test(name, op, spec[op], path) for op in sorted(ops))
        return tests[0] if len(tests) == 1 else All(tests)
    raise RuleError(
        path, f"unknown rule {sorted(keys)}; use field/all/any/not/consent/states/zips/zip_prefix"
    )


_PERIODS = ("hour", "day", "week", "month")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _within(lo: Decimal, hi: Decimal) -> Callable[[Decimal], bool]:
    return lambda n: lo <= n <= hi


def _compare(cmp: Callable[[Decimal, Decimal], bool], bound: Decimal) -> Callable[[Decimal], bool]:
    return lambda n: cmp(n, bound)


def _comparison(spec: Mapping[str, object], path: str, what: str) -> tuple[Callable[[Decimal], bool], str]:
    """`{gt: 100}`, `{gte: 9, lt: 17}`, `{between: [a, b]}` over a number."""
    tests: list[Callable[[Decimal], bool]] = []
    words: list[str] = []
    for op, arg in spec.items():
        if op == "between":
            if not isinstance(arg, list) or len(arg) != 2:
                raise RuleError(f"{path}.between", "expected [low, high]")
            lo, hi = _number(arg[0], f"{path}.between[0]"), _number(arg[1], f"{path}.between[1]")
            tests.append(_within(lo, hi))
            words.append(f"between {lo} and {hi}")
        elif op in _NUMERIC:
            bound = _number(arg, f"{path}.{op}")
            cmp, sym = _NUMERIC[op]
            tests.append(_compare(cmp, bound))
            words.append(f"{sym} {bound}")
        else:
            raise RuleError(f"{path}.{op}", "use gt, gte, lt, lte or between")
    if not tests:
        raise RuleError(path, "give a comparison such as {gt: 100}")
    return (lambda n: all(t(n) for t in tests)), f"{what} must be {' and '.join(words)}"


def _volume(spec: Mapping[str, object], path: str) -> Rule:
    """`{volume: source, period: day, gt: 100}`: today's count of leads for the source or buyer."""
    of, period = spec.get("volume"), spec.get("period", "day")
    if of not in ("source", "buyer"):
        raise RuleError(f"{path}.volume", "write source or buyer")
    if period not in _PERIODS:
        raise RuleError(f"{path}.period", f"use one of {', '.join(_PERIODS)}")
    rest = {k: v for k, v in spec.items() if k not in ("volume", "period")}
    test, text = _comparison(rest, path, f"{of} volume this {period}")
    return Volume(f"{of}:{period}", test, text)


def _clock(spec: Mapping[str, object], path: str) -> Rule:
    """`{hour: {gte: 9, lt: 17}, timezone: ...}` or `{weekday: [sat, sun], timezone: ...}`."""
    tz = spec.get("timezone", "UTC")
    if not isinstance(tz, str):
        raise RuleError(f"{path}.timezone", "expected a timezone name")
    try:
        ZoneInfo(tz)
    except Exception:
        raise RuleError(f"{path}.timezone", f"unknown timezone {tz!r}") from None
    if set(spec) - {"hour", "weekday", "timezone"} or ("hour" in spec) == ("weekday" in spec):
        raise RuleError(path, "give `hour: {...}` or `weekday: [...]`, with an optional `timezone`")
    if "weekday" in spec:
        days = _list(spec["weekday"], f"{path}.weekday")
        if bad := [d for d in days if d not in _WEEKDAYS]:
            raise RuleError(f"{path}.weekday", f"unknown day {bad[0]!r}")
        wanted = frozenset(_WEEKDAYS.index(d) for d in days)
        return Clock(tz, lambda t: t.weekday() in wanted, f"weekday not in {_show(days)} ({tz})")
    hour = spec["hour"]
    if not isinstance(hour, dict):
        raise RuleError(f"{path}.hour", "expected a comparison such as {gte: 9, lt: 17}")
    test, text = _comparison(hour, f"{path}.hour", f"hour ({tz})")
    return Clock(tz, lambda t: test(Decimal(t.hour)), text)


def _known(name: object, path: str, fields: Mapping[str, object]) -> str:
    if not isinstance(name, str) or name not in fields:
        raise RuleError(path, f"unknown lead field {name!r}")
    return name


def _describe(spec: object) -> str:
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"
    return str(spec)
