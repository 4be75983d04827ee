"""Compile one buyer's ping and post (request format, mapping, answer format) — and say what is wrong.

The same code validates and compiles: `buyer_problems` runs it and collects every problem
with its config path; the loader calls it during checking and compiles only a clean file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

from routelead.buyers.encoders import ENCODERS, XmlOptions, key_problem, xml_key
from routelead.buyers.endpoint import Endpoint, default_headers
from routelead.buyers.parsers import Match, PingParser, PostParser, StatusRules
from routelead.buyers.readers import MISSING, READERS, Locator, Reader, TextOptions
from routelead.config import model as m
from routelead.config.runtime import Lookup
from routelead.domain.mapping import FieldKind, Source, check_date_format, passthrough

_STATUS_CLASS = re.compile(r"^([1-5])xx$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PING_ACTIONS = frozenset({"read", "no_bid", "error"})
POST_ACTIONS = frozenset({"read", "accepted", "rejected", "error"})
LOOKUP_ACTIONS = frozenset({"read", "error"})


class Problems:
    """Collects (path, message); compilation carries on past a problem to find the rest."""

    def __init__(self, at: str) -> None:
        self.at = at
        self.found: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(f"{self.at}.{where}: {message}")


def buyer_problems(
    b: m.BuyerModel,
    at: str,
    fields: Mapping[str, m.FieldModel],
    max_price: Decimal,
    internal: frozenset[str],
    lead_type: str | None = None,
) -> list[str]:
    """What is wrong with buyer `b` for leads of `lead_type` (None: its only type, `fields`)."""
    types = {name: f.type for name, f in fields.items()}
    kinds = kinds_of(types)
    p = Problems(at)
    ping_names, post_names = default_fields(fields, internal)
    if b.ping is not None:
        compile_ping(for_type(b.ping, lead_type), kinds, ping_names, max_price, p, types, lead_type)
    compile_post(for_type(b.post, lead_type), kinds, post_names, max_price, p, types, b.ping, lead_type)
    return p.found


_E = TypeVar("_E", bound=m.EndpointModel)


def for_type(ep: _E, lead_type: str | None) -> _E:
    """The endpoint with the mapping it uses for leads of `lead_type`."""
    if lead_type is None or lead_type not in ep.fields_by_type:
        return ep
    return ep.model_copy(update={"fields": ep.fields_by_type[lead_type]})


def internal_fields(c: m.ConfigModel, fields: Mapping[str, m.FieldModel] | None = None) -> frozenset[str]:
    """Fields that are ours alone: marked `internal`, or a source's `price_field` (what we pay it)."""
    if fields is None:
        fields = next(iter(c.types().values()))[1].fields
    marked = {name for name, f in fields.items() if f.internal}
    return frozenset(marked | {s.price_field for s in c.sources if s.price_field is not None})


def default_fields(
    fields: Mapping[str, m.FieldModel], internal: frozenset[str]
) -> tuple[list[str], list[str]]:
    """What a buyer without a `fields` mapping receives: the ping every field that is neither PII
    nor internal, the post every field that is not internal. Internal fields leave only by name."""
    post = [name for name in fields if name not in internal]
    return [name for name in post if not fields[name].pii], post


def kinds_of(types: Mapping[str, str]) -> dict[str, FieldKind]:
    return {n: ("bool" if t == "bool" else "int" if t == "int" else "string") for n, t in types.items()}


def compile_ping(
    ep: m.PingModel,
    kinds: Mapping[str, FieldKind],
    public: list[str],
    max_price: Decimal,
    p: Problems,
    types: Mapping[str, str],
    lead_type: str | None = None,
) -> tuple[Endpoint, PingParser]:
    mapping = (
        _sources(ep.fields, "ping", p, types, None, _fields_at(ep, lead_type))
        if ep.fields is not None
        else passthrough(public, {"lead_id": Source(tx="lead_id")})
    )
    a = ep.answer
    reader = _reader(a, "ping.answer", p)
    loc = _Locate(reader, a, "ping.answer", p)
    rules = _statuses(a, PING_ACTIONS, "ping.answer", p)
    for j, code in enumerate(a.no_bid_statuses):
        if not 100 <= code <= 599:
            p.add(f"ping.answer.no_bid_statuses[{j}]", f"{code} is not an HTTP status")
    carry = []
    for name, path in a.carry.items():
        if not _NAME.match(name) or name == "ping_id":
            p.add(f"ping.answer.carry.{name}", "names are letters, digits and _ (ping_id is carried anyway)")
        carry.append((name, loc.required(path, f"carry.{name}")))
    parser = PingParser(
        bid=loc.match(a.bid, "bid"),
        price=loc.required(a.price, "price"),
        ping_id=loc.optional("ping_id"),
        exclusive=loc.optional("exclusive"),
        reason=loc.optional("reason"),
        conditions=loc.optional("conditions"),
        no_bid_statuses=frozenset(a.no_bid_statuses),
        max_price=max_price,
        reader=reader,
        statuses=rules,
        no_bid=loc.match(a.no_bid, "no_bid") if a.no_bid else None,
        carry=tuple(carry),
    )
    endpoint = _endpoint(ep, mapping, kinds, "ping", p, _fields_at(ep, lead_type))
    return endpoint, parser


def compile_post(
    ep: m.PostModel,
    kinds: Mapping[str, FieldKind],
    every: list[str],
    max_price: Decimal,
    p: Problems,
    types: Mapping[str, str],
    ping: m.PingModel | None,
    lead_type: str | None = None,
) -> tuple[Endpoint, PostParser]:
    mapping = (
        _sources(ep.fields, "post", p, types, ping, _fields_at(ep, lead_type))
        if ep.fields is not None
        else passthrough(
            every,
            {
                "ping_id": Source(tx="ping_id"),
                "post_id": Source(tx="post_id"),
                "price": Source(tx="price"),
                "lead_id": Source(tx="lead_id"),
            },
        )
    )
    a = ep.answer
    if ep.price_on_post and a.price is None:
        p.add("post.price_on_post", "the price is read from the post answer: give `post.answer.price`")
    reader = _reader(a, "post.answer", p)
    loc = _Locate(reader, a, "post.answer", p)
    parser = PostParser(
        accepted=loc.match(a.accepted, "accepted"),
        lead_id=loc.optional("lead_id"),
        reason=loc.optional("reason"),
        price=loc.optional("price"),
        max_price=max_price,
        reader=reader,
        statuses=_statuses(a, POST_ACTIONS, "post.answer", p),
        rejected=loc.match(a.rejected, "rejected") if a.rejected else None,
    )
    endpoint = _endpoint(ep, mapping, kinds, "post", p, _fields_at(ep, lead_type))
    return endpoint, parser


def compile_lookup(
    lk: m.LookupModel, at: str, fields: Mapping[str, m.FieldModel]
) -> tuple[Lookup, list[str]]:
    """One lookup step, with every problem under `at`: the buyers' request and answer machinery."""
    types = {name: f.type for name, f in fields.items()}
    p = Problems(at)
    if lk.fields is None:
        p.add("fields", "name what the lookup sends, e.g. {phone: {field: phone}}")
    for key, entry in (lk.fields or {}).items():
        if entry.field is not None and entry.field not in fields:
            p.add(f"fields.{key}", f"unknown lead field {entry.field!r}")
        if entry.from_ not in (None, "lead_id"):
            p.add(f"fields.{key}", f"`from: {entry.from_}` exists only for a buyer's post")
    for header, value in lk.headers.items():
        if "\n" in value or "\r" in value or "\n" in header:
            p.add(f"headers.{header}", "line breaks are not allowed")
    mapping = _sources(lk.fields or {}, "lookup", p, types, None)
    reader = _reader(lk.answer, "answer", p)
    loc = _Locate(reader, lk.answer, "answer", p)
    facts = tuple((name, loc.required(path, f"facts.{name}")) for name, path in lk.answer.facts.items())
    endpoint = _endpoint(lk, mapping, kinds_of(types), "lookup", p)
    statuses = _statuses(lk.answer, LOOKUP_ACTIONS, "answer", p)
    # The shared helpers say `lookup.fields.x`; the lookup's own path is `at`: drop the step word.
    found = [f.replace(f"{at}.lookup.", f"{at}.") for f in p.found]
    step = Lookup(lk.id, endpoint, reader, facts, lk.on_failure, statuses, lk.max_body_bytes)
    return step, list(dict.fromkeys(found))


def _fields_at(ep: m.EndpointModel, lead_type: str | None) -> str:
    """Where the mapping in use sits in the file: `fields`, or `fields_by_type.<type>`."""
    typed = lead_type is not None and lead_type in ep.fields_by_type
    return f"fields_by_type.{lead_type}" if typed else "fields"


def _endpoint(
    ep: m.EndpointModel,
    mapping: dict[str, Source],
    kinds: Mapping[str, FieldKind],
    step: str,
    p: Problems,
    fields_at: str = "fields",
) -> Endpoint:
    if ep.method == "GET" and ep.format != "query":
        p.add(f"{step}.method", f"GET carries no body: use `format: query` (not {ep.format})")
    if ep.format == "xml":
        try:
            xml_key(ep.xml.root)
        except ValueError as exc:
            p.add(f"{step}.xml.root", str(exc))
    for key, why in key_problem(ep.format, list(mapping)):
        p.add(f"{step}.{fields_at}.{key}", why)
    try:
        encoder = ENCODERS[ep.format](mapping, kinds, XmlOptions(ep.xml.root, ep.xml.declaration))
    except ValueError:
        # Already reported above; compile a placeholder so checking can go on.
        encoder = ENCODERS["json"]({}, kinds, XmlOptions())
    answer = ep.answer.format if isinstance(ep, m.PingModel | m.PostModel | m.LookupModel) else "json"
    headers = default_headers(list(ep.headers.items()), encoder.content_type, answer)
    return Endpoint(ep.url, ep.method, headers, encoder, ep.timeout_ms / 1000)


def _sources(
    entries: m.Mapping,
    step: str,
    p: Problems,
    types: Mapping[str, str],
    ping: m.PingModel | None,
    fields_at: str = "fields",
) -> dict[str, Source]:
    out = {}
    for key, e in entries.items():
        where = f"{step}.{fields_at}.{key}"
        if e.date_format is not None:
            if e.field is not None and types.get(e.field) not in (None, "date"):
                p.add(where, f"`date_format` needs a date field; {e.field!r} is a {types[e.field]}")
            if why := check_date_format(e.date_format):
                p.add(f"{where}.date_format", why)
        if e.from_ is not None and e.from_.startswith("ping."):
            name = e.from_[5:]
            if step == "post" and (ping is None or name not in ping.answer.carry):
                p.add(where, f"`from: {e.from_}` needs `ping.answer.carry.{name}` on this buyer")
        transform = tuple(e.transform) if isinstance(e.transform, list) else e.transform
        out[key] = Source(
            field=e.field,
            transform=transform,
            static=e.value,
            tx=e.from_,
            value_map=e.map,
            default=e.default,
            date_format=e.date_format,
            max_length=e.max_length,
        )
    return out


def _reader(a: m.AnswerModel, at: str, p: Problems) -> Reader:
    text = a.format in ("text", "html")
    if not text and (a.pattern is not None or a.delimiter is not None or a.columns):
        p.add(at, f"`pattern`, `delimiter` and `columns` are for text and html answers, not {a.format}")
    if text and a.pattern is not None and a.delimiter is not None:
        p.add(at, "give `pattern` or `delimiter`, not both")
    if a.delimiter is not None and not a.columns:
        p.add(f"{at}.columns", "name the delimited columns, e.g. [status, lead_id, price]")
    if a.columns and a.delimiter is None:
        p.add(f"{at}.columns", "`columns` need a `delimiter`")
    for j, c in enumerate(a.columns):
        if c is not None and not _NAME.match(c):
            p.add(f"{at}.columns[{j}]", "column names are letters, digits and _")
    try:
        return READERS[a.format](TextOptions(a.pattern, a.delimiter, tuple(a.columns)))
    except ValueError as exc:
        p.add(f"{at}.pattern", str(exc))
        return READERS["text"](TextOptions())


class _Locate:
    """Compiles an answer model's paths with its reader, reporting bad ones by config path."""

    def __init__(self, reader: Reader, model: m.AnswerModel, at: str, p: Problems) -> None:
        self.reader, self.model, self.at, self.p = reader, model, at, p

    def required(self, path: str, where: str) -> Locator:
        try:
            return self.reader.locate(path)
        except ValueError as exc:
            self.p.add(f"{self.at}.{where}", str(exc))
            return _Nowhere()

    def optional(self, name: str) -> Locator | None:
        path: Any = getattr(self.model, name)
        if path is None:
            return None
        try:
            return self.reader.locate(path)
        except ValueError as exc:
            # A default name a text answer does not have simply is not read; a configured one must exist.
            if name in self.model.model_fields_set:
                self.p.add(f"{self.at}.{name}", str(exc))
            return None

    def match(self, x: m.MatchModel, where: str) -> Match:
        return Match.of(self.required(x.path, f"{where}.path"), x.values)


class _Nowhere:
    """Stands in for a path already reported as bad."""

    def get(self, doc: object) -> object:
        return MISSING


def _statuses(a: m.AnswerModel, allowed: frozenset[str], at: str, p: Problems) -> StatusRules:
    exact: dict[int, str] = {}
    classes: dict[int, str] = {}
    for key, action in a.statuses.items():
        where = f"{at}.statuses.{key}"
        if action not in allowed:
            p.add(where, f"{action!r} is not an outcome here (use {', '.join(sorted(allowed))})")
        text = str(key).strip().lower()
        if text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
            exact[int(text)] = action
        elif found := _STATUS_CLASS.match(text):
            classes[int(found.group(1))] = action
        else:
            p.add(where, "an HTTP status (409) or a class (4xx)")
    return StatusRules(exact, classes)
