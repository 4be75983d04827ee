"""Ping and post answer parsers, the same for every format: status rules, then values by path.

Each parse either returns a PingAnswer / PostAnswer or raises BadAnswer with a short,
PII-free reason; the router turns that into an ERROR / POST_ERROR attempt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import orjson

from routelead.buyers.base import BadAnswer, ErrorStatus, HttpAnswer, PingAnswer, PostAnswer
from routelead.buyers.readers import MISSING, JsonReader, Locator, Reader, type_name, watching
from routelead.buyers.text import MAX_TEXT, excerpt, scrub
from routelead.domain.money import PriceError, parse_price

# What an HTTP status means before the body is looked at; `read` lets the body decide.
PingAction = Literal["read", "no_bid", "error"]
PostAction = Literal["read", "accepted", "rejected", "error"]
_JSON: Reader = JsonReader()
_TRUTHY = frozenset({"true", "yes", "1", "y"})


@dataclass(frozen=True, slots=True)
class StatusRules:
    """Exact codes win over classes (2 for 2xx); by default 2xx is read and anything else an error."""

    exact: Mapping[int, str] = field(default_factory=dict)
    classes: Mapping[int, str] = field(default_factory=dict)

    def action(self, status: int) -> str:
        rule = self.exact.get(status) or self.classes.get(status // 100)
        if rule is not None:
            return rule
        return "read" if 200 <= status < 300 else "error"


def scalar(value: object) -> object:
    """A leaf value: XML elements without children stand for their text."""
    if isinstance(value, ET.Element):
        return value if len(value) else (value.text or "").strip()
    return value


@dataclass(frozen=True, slots=True)
class Match:
    """Does the value at `path` mean yes? Words compare case-insensitively."""

    path: Locator
    values: frozenset[str | bool | int]

    @classmethod
    def of(cls, path: Locator, values: list[str | bool | int]) -> Match:
        words: set[str | bool | int] = set()
        for v in values:
            if isinstance(v, str):
                words.add(v.strip().lower())
            else:
                # XML and text answers carry true / 1 as words.
                words.update({v, str(v).lower()})
        return cls(path, frozenset(words))

    def test(self, doc: object) -> bool:
        value = scalar(self.path.get(doc))
        if value is MISSING:
            raise BadAnswer(f"answer has no '{self.path}'")
        if isinstance(value, str):
            return value.strip().lower() in self.values
        if isinstance(value, bool | int):
            return value in self.values
        raise BadAnswer(f"'{self.path}' has type {type_name(value)}")

    def word(self, doc: object) -> str:
        return repr(scrub(str(scalar(self.path.get(doc))), 24))


@dataclass(frozen=True, slots=True)
class PingParser:
    bid: Match
    price: Locator
    ping_id: Locator | None
    exclusive: Locator | None
    reason: Locator | None
    conditions: Locator | None
    no_bid_statuses: frozenset[int] = frozenset({204})
    max_price: Decimal = Decimal("10000")
    reader: Reader = _JSON
    statuses: StatusRules = StatusRules()
    # When set, an answer that is neither a bid nor one of these words is an error.
    no_bid: Match | None = None
    # Values the post must echo (auction token, the buyer's own ids), by name.
    carry: tuple[tuple[str, Locator], ...] = ()

    def __post_init__(self) -> None:
        decisive = (self.bid.path, self.price, self.ping_id, self.exclusive, self.conditions)
        carried = (where for _, where in self.carry)
        object.__setattr__(self, "reader", watching(self.reader, (*decisive, *carried)))

    def parse(self, answer: HttpAnswer) -> PingAnswer:
        action = "no_bid" if answer.status in self.no_bid_statuses else self.statuses.action(answer.status)
        if action == "no_bid":
            return PingAnswer(
                bid=False, reason=_soft_text(self.reader, answer, self.reason) or f"HTTP {answer.status}"
            )
        if action == "error":
            raise http_error(answer)
        doc = self.reader.read(answer)
        reason = text_at(doc, self.reason)
        if not self.bid.test(doc):
            if self.no_bid is not None and not self.no_bid.test(doc):
                raise BadAnswer(f"'{self.bid.path}' is neither a bid nor a no bid: {self.bid.word(doc)}")
            return PingAnswer(bid=False, reason=reason)
        raw = money_at(self.reader, answer, doc, self.price)
        if raw is MISSING or raw == "":
            raise BadAnswer(f"bid without a price at '{self.price}'")
        try:
            price = parse_price(raw, max_price=self.max_price)
        except PriceError as exc:
            raise BadAnswer(str(exc)) from None
        carried = {name: value for name, where in self.carry if (value := id_at(doc, where))}
        return PingAnswer(
            bid=True,
            price=price,
            ping_id=id_at(doc, self.ping_id),
            carried=carried,
            exclusive=flag_at(doc, self.exclusive),
            reason=reason,
            conditions=self._conditions(doc),
        )

    def _conditions(self, doc: object) -> dict[str, object]:
        if self.conditions is None:
            return {}
        value = self.conditions.get(doc)
        if value is MISSING or value is None:
            return {}
        if isinstance(value, dict):
            return value
        if isinstance(value, ET.Element):
            return {child.tag: xml_value(child) for child in value}
        raise BadAnswer(f"'{self.conditions}' has type {type_name(value)}")


@dataclass(frozen=True, slots=True)
class PostParser:
    accepted: Match
    lead_id: Locator | None
    reason: Locator | None
    price: Locator | None
    max_price: Decimal = Decimal("10000")
    reader: Reader = _JSON
    statuses: StatusRules = StatusRules()
    # When set, an answer that is neither accepted nor one of these words is an error.
    rejected: Match | None = None

    def __post_init__(self) -> None:
        decisive = (self.accepted.path, self.lead_id, self.price)
        object.__setattr__(self, "reader", watching(self.reader, decisive))

    def parse(self, answer: HttpAnswer) -> PostAnswer:
        action = self.statuses.action(answer.status)
        if action == "error":
            raise http_error(answer)
        if action == "rejected":
            reason = _soft_text(self.reader, answer, self.reason) or f"HTTP {answer.status}"
            return PostAnswer(accepted=False, reason=reason)
        if action == "accepted":
            lead_id = _soft_text(self.reader, answer, self.lead_id, id_at)
            return PostAnswer(
                accepted=True, buyer_lead_id=lead_id, reason=_soft_text(self.reader, answer, self.reason)
            )
        doc = self.reader.read(answer)
        reason = text_at(doc, self.reason)
        if not self.accepted.test(doc):
            if self.rejected is not None and not self.rejected.test(doc):
                raise BadAnswer(
                    f"'{self.accepted.path}' is neither accepted nor rejected: {self.accepted.word(doc)}"
                )
            return PostAnswer(accepted=False, reason=reason)
        price = None
        raw = money_at(self.reader, answer, doc, self.price) if self.price else MISSING
        if raw is not MISSING and raw is not None and raw != "":
            try:
                price = parse_price(raw, max_price=self.max_price)
            except PriceError as exc:
                raise BadAnswer(f"post price: {exc}") from None
        return PostAnswer(accepted=True, buyer_lead_id=id_at(doc, self.lead_id), reason=reason, price=price)


def money_at(reader: Reader, answer: HttpAnswer, doc: object, where: Locator) -> object:
    """The price at `where`, never rounded through a float (see JsonReader.exact)."""
    value = scalar(where.get(doc))
    return JsonReader.exact(answer, where, value) if isinstance(reader, JsonReader) else value


def xml_value(node: ET.Element) -> object:
    """XML conditions typed as JSON ones would be: true / false as booleans, an element whose
    children share one tag as a list (<states><state>CA</state>…), other children as an object."""
    children = list(node)
    if not children:
        text = (node.text or "").strip()
        return {"true": True, "false": False}.get(text.lower(), text)
    if len(children) > 1 and len({c.tag for c in children}) == 1:
        return [xml_value(c) for c in children]
    return {c.tag: xml_value(c) for c in children}


def http_error(answer: HttpAnswer) -> BadAnswer:
    quoted = f": {excerpt(answer.body)}" if answer.body.strip() else ""
    return (ErrorStatus if answer.status >= 400 else BadAnswer)(f"HTTP {answer.status}{quoted}")


def _soft_text(
    reader: Reader,
    answer: HttpAnswer,
    where: Locator | None,
    read: Callable[[object, Locator], str] | None = None,
) -> str:
    """A value from an answer whose status already decided the outcome; unreadable → ""."""
    if where is None:
        return ""
    try:
        return (read or text_at)(reader.read(answer), where)
    except BadAnswer:
        return ""


def text_at(doc: object, where: Locator | None) -> str:
    """Free text (reasons): bounded, with anything like contact details masked."""
    return scrub(_raw_text(doc, where))


def id_at(doc: object, where: Locator | None) -> str:
    """An id or token the buyer needs back verbatim: bounded and printable, never masked
    (numeric lead ids and tokens look like phone numbers to the reason scrubber)."""
    return "".join(c for c in _raw_text(doc, where)[:MAX_TEXT] if c.isprintable()).strip()


def _raw_text(doc: object, where: Locator | None) -> str:
    if where is None:
        return ""
    value = scalar(where.get(doc))
    if value is MISSING or value is None or isinstance(value, dict | list | ET.Element):
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def flag_at(doc: object, where: Locator | None) -> bool:
    if where is None:
        return False
    value = scalar(where.get(doc))
    if isinstance(value, str):
        return value.strip().lower() in _TRUTHY
    return value is True or value == 1
