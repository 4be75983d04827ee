"""Field mappings compiled once at config load into fast value getters and body builders.

A mapping says, for each key the buyer expects, where its value comes from: a lead
field (optionally transformed, reformatted and mapped through a value table), a static
value, or a transaction value (lead id, price, or a value the buyer's ping answer gave
us to carry into the post). A fixed set of named transforms; no template language, no eval.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import orjson

JsonValue = str | int | bool | None | dict[str, "JsonValue"]
Transform = Literal[
    "zip3",
    "upper",
    "lower",
    "title",
    "trim",
    "digits",
    "yes_no",
    "y_n",
    "one_zero",
    "true_false",
    "string",
    "phone_dash",
    "phone_dot",
    "phone_paren",
    "phone_e164",
    "phone_1",
]
# "ping_id", "post_id", "price", "lead_id", or "ping.<name>" for a value the ping answer carried.
TxValue = str
TX_VALUES = ("ping_id", "post_id", "price", "lead_id")
FieldKind = Literal["string", "int", "bool"]
# strftime directives a date format may use: enough for every buyer format we know, nothing locale-exotic.
DATE_DIRECTIVES = frozenset("YymdbBjaA%")


def _bool_style(true: JsonValue, false: JsonValue) -> Callable[[str], JsonValue]:
    return lambda v: true if v == "true" else false


def _phone(shape: Callable[[str, str, str], str]) -> Callable[[str], JsonValue]:
    """Phones are normalised to 10 digits at validation; anything else passes unchanged."""

    def fmt(v: str) -> JsonValue:
        return shape(v[:3], v[3:6], v[6:]) if len(v) == 10 and v.isascii() and v.isdigit() else v

    return fmt


TRANSFORMS: Mapping[str, Callable[[str], JsonValue]] = {
    "zip3": lambda v: v[:3],
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
    "trim": str.strip,
    "digits": lambda v: "".join(c for c in v if "0" <= c <= "9"),
    "yes_no": _bool_style("yes", "no"),
    "y_n": _bool_style("Y", "N"),
    "one_zero": _bool_style(1, 0),
    "true_false": _bool_style("true", "false"),
    "string": str,
    "phone_dash": _phone(lambda a, b, c: f"{a}-{b}-{c}"),
    "phone_dot": _phone(lambda a, b, c: f"{a}.{b}.{c}"),
    "phone_paren": _phone(lambda a, b, c: f"({a}) {b}-{c}"),
    "phone_e164": _phone(lambda a, b, c: f"+1{a}{b}{c}"),
    "phone_1": _phone(lambda a, b, c: f"1{a}{b}{c}"),
}


def check_date_format(text: str) -> str | None:
    """Why a date format is not allowed, or None."""
    for directive in re.findall(r"%(.?)", text):
        if directive not in DATE_DIRECTIVES:
            return f"unsupported directive %{directive} (use %Y %y %m %d %b %B %j %a %A)"
    return None


@dataclass(frozen=True, slots=True)
class Source:
    """Where one outgoing value comes from; exactly one of field / static / tx is set.

    For a field: `transform` (one name or a chain), then `date_format` (YYYY-MM-DD →
    strftime), then `value_map` (unmapped values become `default`, or pass unchanged).
    """

    field: str | None = None
    transform: Transform | tuple[Transform, ...] | None = None
    static: JsonValue = None
    tx: TxValue | None = None
    value_map: Mapping[str, JsonValue] | None = None
    default: JsonValue = None
    date_format: str | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    """Per-sale values a request may carry: ours (the lead id, the price, this post attempt's own
    id), and those the buyer's ping answer asked us to send back on the post (its ping id, an
    auction token, …) under `from: ping.NAME`."""

    lead_id: str
    ping_id: str = ""
    price: str = ""
    carried: Mapping[str, str] = field(default_factory=dict)
    post_id: str = ""

    def value(self, name: TxValue) -> str:
        if name == "lead_id":
            return self.lead_id
        if name == "price":
            return self.price
        if name == "post_id":
            return self.post_id
        key = name.removeprefix("ping.")
        if key == "ping_id":
            return self.ping_id
        return self.carried.get(key, "")


Getter = Callable[[Mapping[str, str], Transaction], JsonValue]


def _natural(kind: FieldKind) -> Callable[[str], JsonValue]:
    """Typed lead fields travel as JSON types: bool as true/false, int as a number."""
    if kind == "bool":
        return lambda v: v == "true"
    if kind == "int":
        return int
    return lambda v: v


def as_text(value: JsonValue) -> str:
    """A value as text for form, query and XML bodies (booleans as true / false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


def _reformat_date(fmt: str) -> Callable[[JsonValue], JsonValue]:
    def convert(value: JsonValue) -> JsonValue:
        try:
            return datetime.strptime(as_text(value), "%Y-%m-%d").strftime(fmt)
        except ValueError:
            return None  # not a date: leave the key out rather than send garbage

    return convert


def _pipeline(src: Source, kind: FieldKind) -> Callable[[str], JsonValue]:
    names = (src.transform,) if isinstance(src.transform, str) else (src.transform or ())
    steps: list[Callable[[JsonValue], JsonValue]] = [
        (lambda t: lambda v: t(as_text(v)))(TRANSFORMS[name]) for name in names
    ]
    if src.date_format:
        steps.append(_reformat_date(src.date_format))
    if src.max_length is not None:
        limit = src.max_length
        steps.append(lambda v: as_text(v)[:limit])
    if src.value_map is not None:
        table, default = dict(src.value_map), src.default
        keep = default is None
        steps.append(lambda v: table.get(as_text(v), v if keep else default))
    if not steps:
        return _natural(kind)
    if len(steps) == 1:
        return steps[0]

    def run(v: str) -> JsonValue:
        out: JsonValue = v
        for step in steps:
            if out is None:
                return None
            out = step(out)
        return out

    return run


def getter(src: Source, kinds: Mapping[str, FieldKind]) -> Getter:
    if src.tx is not None:
        tx = src.tx
        return lambda fields, t: t.value(tx) or None
    if src.field is None:
        static = src.static
        return lambda fields, t: static
    name = src.field
    convert = _pipeline(src, kinds.get(name, "string"))

    def get(fields: Mapping[str, str], t: Transaction) -> JsonValue:
        value = fields.get(name)
        return None if value is None else convert(value)

    return get


@dataclass(frozen=True, slots=True)
class Mapper:
    """The compiled mapping: (their key, getter) in config order; absent values are left out."""

    entries: tuple[tuple[str, Getter], ...]

    @classmethod
    def compile(cls, mapping: Mapping[str, Source], kinds: Mapping[str, FieldKind]) -> Mapper:
        return cls(tuple((key, getter(src, kinds)) for key, src in mapping.items()))

    def values(self, fields: Mapping[str, str], tx: Transaction) -> Iterator[tuple[str, JsonValue]]:
        for key, get in self.entries:
            value = get(fields, tx)
            if value is not None:
                yield key, value


def passthrough(names: list[str], extra: Mapping[str, Source]) -> dict[str, Source]:
    """Every named lead field under its own name, plus `extra` entries."""
    mapping = {name: Source(field=name) for name in names}
    mapping.update(extra)
    return mapping


@dataclass(frozen=True, slots=True)
class BodyBuilder:
    """Builds a JSON object from a lead's fields; dotted keys nest, absent fields are left out."""

    entries: tuple[tuple[tuple[str, ...], Getter], ...]

    @classmethod
    def compile(cls, mapping: Mapping[str, Source], kinds: Mapping[str, FieldKind]) -> BodyBuilder:
        return cls(tuple((tuple(key.split(".")), getter(src, kinds)) for key, src in mapping.items()))

    @classmethod
    def passthrough(
        cls, names: list[str], kinds: Mapping[str, FieldKind], extra: Mapping[str, Source]
    ) -> BodyBuilder:
        return cls.compile(passthrough(names, extra), kinds)

    def build(self, fields: Mapping[str, str], tx: Transaction) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {}
        for path, get in self.entries:
            value = get(fields, tx)
            if value is None:
                continue
            node = body
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break  # a scalar already sits here; config validation prevents this
                node = child
            else:
                node[path[-1]] = value
        return body
