"""JSON buyers: the request body is a JSON object, the answer is read by paths into it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import orjson

from routelead.buyers.base import BadAnswer, HttpAnswer, HttpRequest, PingAnswer, PostAnswer
from routelead.domain.mapping import BodyBuilder, Transaction
from routelead.domain.money import PriceError, parse_price

_MISSING = object()
MAX_TEXT = 200  # ids and reasons we keep from an answer are cut to this


@dataclass(frozen=True, slots=True)
class Path:
    """A dotted path into a JSON answer ("result.price")."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Path:
        return cls(tuple(text.split(".")))

    def get(self, doc: object) -> object:
        node = doc
        for part in self.parts:
            if isinstance(node, dict):
                node = node.get(part, _MISSING)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
            if node is _MISSING:
                return _MISSING
        return node

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Match:
    """Does the value at `path` mean yes? Strings compare case-insensitively."""

    path: Path
    values: frozenset[str | bool | int]

    def test(self, doc: object) -> bool:
        value = self.path.get(doc)
        if value is _MISSING:
            raise BadAnswer(f"answer has no '{self.path}'")
        if isinstance(value, str):
            return value.strip().lower() in self.values
        if isinstance(value, bool | int):
            return value in self.values
        raise BadAnswer(f"'{self.path}' has type {_type_name(value)}")


@dataclass(frozen=True, slots=True)
class PingParser:
    bid: Match
    price: Path
    ping_id: Path | None
    exclusive: Path | None
    reason: Path | None
    conditions: Path | None
    no_bid_statuses: frozenset[int]
    max_price: Decimal
    watched: tuple[bytes, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        paths = (self.bid.path, self.price, self.ping_id, self.exclusive, self.conditions)
        object.__setattr__(self, "watched", _needles(paths))

    def parse(self, answer: HttpAnswer) -> PingAnswer:
        if answer.status in self.no_bid_statuses:
            return PingAnswer(bid=False, reason=f"HTTP {answer.status}")
        doc = _json_object(answer, self.watched)
        reason = _text(doc, self.reason)
        if not self.bid.test(doc):
            return PingAnswer(bid=False, reason=reason)
        raw = self.price.get(doc)
        if raw is _MISSING:
            raise BadAnswer(f"bid without a price at '{self.price}'")
        try:
            price = parse_price(raw, max_price=self.max_price)
        except PriceError as exc:
            raise BadAnswer(str(exc)) from None
        conditions = self.conditions.get(doc) if self.conditions else _MISSING
        if conditions is not _MISSING and conditions is not None and not isinstance(conditions, dict):
            raise BadAnswer(f"'{self.conditions}' has type {_type_name(conditions)}")
        return PingAnswer(
            bid=True,
            price=price,
            ping_id=_text(doc, self.ping_id),
            exclusive=_flag(doc, self.exclusive),
            reason=reason,
            conditions=conditions if isinstance(conditions, dict) else {},
        )


@dataclass(frozen=True, slots=True)
class PostParser:
    accepted: Match
    lead_id: Path | None
    reason: Path | None
    price: Path | None
    max_price: Decimal
    watched: tuple[bytes, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "watched", _needles((self.accepted.path, self.lead_id, self.price)))

    def parse(self, answer: HttpAnswer) -> PostAnswer:
        doc = _json_object(answer, self.watched)
        reason = _text(doc, self.reason)
        if not self.accepted.test(doc):
            return PostAnswer(accepted=False, reason=reason)
        price = None
        raw = self.price.get(doc) if self.price else _MISSING
        if raw is not _MISSING and raw is not None:
            try:
                price = parse_price(raw, max_price=self.max_price)
            except PriceError as exc:
                raise BadAnswer(f"post price: {exc}") from None
        return PostAnswer(accepted=True, buyer_lead_id=_text(doc, self.lead_id), reason=reason, price=price)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One buyer endpoint (ping or post): where to send and how to build the body."""

    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: BodyBuilder
    timeout_s: float

    def request(self, fields: Mapping[str, str], tx: Transaction) -> HttpRequest:
        payload = orjson.dumps(self.body.build(fields, tx))
        return HttpRequest(self.method, self.url, self.headers, payload)


def json_headers(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    names = {k.lower() for k, _ in headers}
    extra = [("Content-Type", "application/json")] if "content-type" not in names else []
    if "accept" not in names:
        extra.append(("Accept", "application/json"))
    return (*headers, *extra)


def _needles(paths: Sequence[Path | None]) -> tuple[bytes, ...]:
    return tuple({f'"{part}"'.encode() for p in paths if p is not None for part in p.parts})


def _refuse_duplicate_keys(body: bytes, watched: tuple[bytes, ...]) -> None:
    """orjson keeps the last of two equal keys, so `"price": 1, "price": 1000` would read as 1000.
    An answer that says two things is refused. The byte count keeps this off the common path."""
    if not any(body.count(needle) > 1 for needle in watched):
        return

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise BadAnswer(f"duplicate key {scrub(key)!r} in answer")
            seen.add(key)
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)


def _json_object(answer: HttpAnswer, watched: tuple[bytes, ...] = ()) -> dict[str, object]:
    if not 200 <= answer.status < 300:
        raise BadAnswer(f"HTTP {answer.status}")
    if not answer.body.strip():
        raise BadAnswer("empty answer")
    try:
        doc = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        if answer.body.lstrip()[:1] == b"<":
            raise BadAnswer("HTML, not JSON") from None
        kind = "not valid UTF-8" if "UTF-8" in str(exc) else "invalid JSON"
        raise BadAnswer(kind) from None
    if not isinstance(doc, dict):
        raise BadAnswer(f"answer is a JSON {_type_name(doc)}, not an object")
    _refuse_duplicate_keys(answer.body, watched)
    return doc


def _text(doc: object, path: Path | None) -> str:
    if path is None:
        return ""
    value = path.get(doc)
    if value is _MISSING or value is None or isinstance(value, dict | list):
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return scrub(text)


_EMAILISH = re.compile(r"[^\s@]+@[^\s@]+")
_DIGIT_RUN = re.compile(r"\d[\d\s().-]{5,}\d")


def scrub(text: str) -> str:
    """Buyer text goes into attempts and logs: bounded, printable, and with anything that
    looks like an email address or a phone number masked (buyers echo posted leads)."""
    text = "".join(c for c in text[:MAX_TEXT] if c.isprintable())
    return _DIGIT_RUN.sub("[redacted]", _EMAILISH.sub("[redacted]", text))


def _flag(doc: object, path: Path | None) -> bool:
    if path is None:
        return False
    value = path.get(doc)
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "y"}
    return value is True or value == 1


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
