"""Field mappings compiled once at config load into fast body builders.

A mapping says, for each key the buyer expects, where its value comes from: a lead
field (optionally transformed), a static value, or a transaction value (ping id,
price, lead id). Dotted keys build nested objects. No template language, no eval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

JsonValue = str | int | bool | None | dict[str, "JsonValue"]
Transform = Literal["zip3", "upper", "lower", "digits", "yes_no", "y_n", "one_zero", "string"]
TxValue = Literal["ping_id", "price", "lead_id"]
FieldKind = Literal["string", "int", "bool"]


def _bool_style(true: JsonValue, false: JsonValue) -> Callable[[str], JsonValue]:
    return lambda v: true if v == "true" else false


TRANSFORMS: Mapping[str, Callable[[str], JsonValue]] = {
    "zip3": lambda v: v[:3],
    "upper": str.upper,
    "lower": str.lower,
    "digits": lambda v: "".join(c for c in v if c.isdigit()),
    "yes_no": _bool_style("yes", "no"),
    "y_n": _bool_style("Y", "N"),
    "one_zero": _bool_style(1, 0),
    "string": str,
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where one outgoing value comes from; exactly one of field / static / tx is set."""

    field: str | None = None
    transform: Transform | None = None
    static: JsonValue = None
    tx: TxValue | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    """Per-sale values a post may carry."""

    lead_id: str
    ping_id: str = ""
    price: str = ""


Getter = Callable[[Mapping[str, str], Transaction], JsonValue]


def _natural(kind: FieldKind) -> Callable[[str], JsonValue]:
    """Typed lead fields travel as JSON types: bool as true/false, int as a number."""
    if kind == "bool":
        return lambda v: v == "true"
    if kind == "int":
        return int
    return lambda v: v


def _getter(src: Source, kinds: Mapping[str, FieldKind]) -> Getter:
    if src.tx is not None:
        tx = src.tx
        return lambda fields, t: getattr(t, tx) or None
    if src.field is None:
        static = src.static
        return lambda fields, t: static
    name = src.field
    convert = TRANSFORMS[src.transform] if src.transform else _natural(kinds.get(name, "string"))

    def get(fields: Mapping[str, str], t: Transaction) -> JsonValue:
        value = fields.get(name)
        return None if value is None else convert(value)

    return get


@dataclass(frozen=True, slots=True)
class BodyBuilder:
    """Builds one buyer's request body from a lead's fields; absent fields are left out."""

    entries: tuple[tuple[tuple[str, ...], Getter], ...]

    @classmethod
    def compile(cls, mapping: Mapping[str, Source], kinds: Mapping[str, FieldKind]) -> BodyBuilder:
        return cls(tuple((tuple(key.split(".")), _getter(src, kinds)) for key, src in mapping.items()))

    @classmethod
    def passthrough(
        cls, names: list[str], kinds: Mapping[str, FieldKind], extra: Mapping[str, Source]
    ) -> BodyBuilder:
        """Every named lead field under its own name, plus `extra` entries."""
        mapping = {name: Source(field=name) for name in names}
        mapping.update(extra)
        return cls.compile(mapping, kinds)

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
