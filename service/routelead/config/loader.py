"""Load the YAML file: expand ${ENV} secrets, validate, cross-check, compile.

Every problem is reported with its path (`buyers[2].ping.timeout_ms: …`) and all of
them at once, so a broken file is fixed in one pass.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from routelead.buyers.json_protocol import Endpoint, Match, PingParser, PostParser, json_headers
from routelead.buyers.json_protocol import Path as AnswerPath
from routelead.config import model as m
from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Source, Tier
from routelead.domain.lead import FieldSpec, LeadSchema, Limits
from routelead.domain.mapping import BodyBuilder, FieldKind
from routelead.domain.mapping import Source as MapSource
from routelead.state.periods import zone
from routelead.state.ports import CapLimits, Period

_REF = re.compile(r"\$\{(?:file:(?P<file>[^}]+)|(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?)\}")


class ConfigError(Exception):
    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__(f"invalid configuration {origin}:\n" + "\n".join(f"  {p}" for p in problems))


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> RuntimeConfig:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror}"]) from None
    return load_config_bytes(text, str(p), env)


def load_config_bytes(text: bytes, origin: str, env: Mapping[str, str] | None = None) -> RuntimeConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(origin, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(origin, ["the file must hold a mapping with lead, sources, buyers and flows"])
    problems: list[str] = []
    expanded = _expand(raw, os.environ if env is None else env, "", problems)
    try:
        model = m.ConfigModel.model_validate(expanded)
    except pydantic.ValidationError as exc:
        problems.extend(f"{format_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(origin, problems) from None
    problems.extend(check(model))
    if problems:
        raise ConfigError(origin, problems)
    return compile_config(model, hashlib.sha256(text).hexdigest()[:12])


def format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _expand(node: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """Replace ${VAR}, ${VAR:-default} and ${file:/path} in strings; secrets never sit in the file."""
    if isinstance(node, dict):
        return {k: _expand(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(match: re.Match[str]) -> str:
        if file := match.group("file"):
            try:
                return Path(file).read_text().strip()
            except OSError as exc:
                problems.append(f"{path}: cannot read secret file {file}: {exc.strerror}")
                return ""
        var = match.group("var")
        value = env.get(var)
        if value is None:
            if match.group("default") is not None:
                return match.group("default")
            problems.append(f"{path}: environment variable {var} is not set")
            return ""
        return value

    return _REF.sub(sub, node)


def check(c: m.ConfigModel) -> list[str]:
    """Cross-references and rules one model alone cannot see."""
    problems: list[str] = []
    fields = c.lead.fields
    pii = {name for name, f in fields.items() if f.pii}
    for name, f in fields.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
            problems.append(f"lead.fields.{name}: field names are letters, digits and _")
        if f.pattern is not None:
            try:
                re.compile(f.pattern)
            except re.error as exc:
                problems.append(f"lead.fields.{name}.pattern: not a valid regular expression ({exc})")

    problems += _unique("sources", [s.id for s in c.sources])
    problems += _unique("buyers", [b.id for b in c.buyers])
    problems += _unique("flows", [f.id for f in c.flows])
    buyers = {b.id: b for b in c.buyers}
    sources = {s.id for s in c.sources}

    for i, b in enumerate(c.buyers):
        at = f"buyers[{i}]"
        try:
            zone(b.timezone)
        except Exception:
            problems.append(f"{at}.timezone: unknown timezone {b.timezone!r}")
        for step, ep in (("ping", b.ping), ("post", b.post)):
            if ep is None:
                continue
            for header, value in ep.headers.items():
                if "\n" in value or "\r" in value or "\n" in header:
                    problems.append(f"{at}.{step}.headers.{header}: line breaks are not allowed")
            for key, entry in (ep.fields or {}).items():
                where = f"{at}.{step}.fields.{key}"
                if entry.field is not None and entry.field not in fields:
                    problems.append(f"{where}: unknown lead field {entry.field!r}")
                if step == "ping" and entry.field in pii:
                    problems.append(f"{where}: {entry.field!r} is PII and may not be sent in a ping")
                if step == "ping" and entry.from_ in ("ping_id", "price"):
                    problems.append(f"{where}: `from: {entry.from_}` exists only for the post")

    for i, flow in enumerate(c.flows):
        at = f"flows[{i}]"
        if flow.post_reserve_ms >= flow.deadline_ms:
            problems.append(f"{at}.post_reserve_ms: must be shorter than deadline_ms ({flow.deadline_ms})")
        for j, s in enumerate(flow.sources or []):
            if s not in sources:
                problems.append(f"{at}.sources[{j}]: unknown source {s!r}")
        problems += _unique(f"{at}.tiers", [t.name for t in flow.tiers], what="tier")
        seen: set[str] = set()
        for j, t in enumerate(flow.tiers):
            for k, buyer_id in enumerate(t.buyers):
                where = f"{at}.tiers[{j}].buyers[{k}]"
                if buyer_id in seen:
                    problems.append(f"{where}: buyer {buyer_id!r} is already in this flow")
                seen.add(buyer_id)
                buyer = buyers.get(buyer_id)
                if buyer is None:
                    problems.append(f"{where}: unknown buyer {buyer_id!r}")
                    continue
                bi = c.buyers.index(buyer)
                for step, ep in (("ping", buyer.ping), ("post", buyer.post)):
                    if ep is not None and ep.timeout_ms > flow.deadline_ms:
                        problems.append(
                            f"buyers[{bi}].{step}.timeout_ms: {ep.timeout_ms} ms exceeds the "
                            f"{flow.deadline_ms} ms deadline of flow {flow.id!r}"
                        )
        for j, name in enumerate(flow.dedupe.fields if flow.dedupe else []):
            if name not in fields:
                problems.append(f"{at}.dedupe.fields[{j}]: unknown lead field {name!r}")
    return problems


def _unique(at: str, ids: list[str], what: str = "id") -> list[str]:
    seen: set[str] = set()
    out = []
    for i, x in enumerate(ids):
        if x in seen:
            out.append(f"{at}[{i}]: duplicate {what} {x!r}")
        seen.add(x)
    return out


def compile_config(c: m.ConfigModel, version: str) -> RuntimeConfig:
    specs = {
        name: FieldSpec(
            name=name,
            type=f.type,
            required=f.required,
            pii=f.pii,
            pattern=re.compile(f.pattern) if f.pattern else None,
            enum=frozenset(f.enum) if f.enum is not None else None,
            max_length=f.max_length,
        )
        for name, f in c.lead.fields.items()
    }
    schema = LeadSchema(specs, c.lead.unknown_fields, Limits(c.lead.max_fields, c.lead.max_value_length))
    kinds: dict[str, FieldKind] = {
        n: ("bool" if s.type == "bool" else "int" if s.type == "int" else "string") for n, s in specs.items()
    }
    public = [n for n, s in specs.items() if not s.pii]
    buyers = {b.id: _buyer(b, kinds, public, list(specs), c.max_price) for b in c.buyers if b.enabled}
    flows = {
        f.id: Flow(
            id=f.id,
            deadline_s=f.deadline_ms / 1000,
            post_reserve_s=f.post_reserve_ms / 1000,
            floor=f.floor,
            sources=frozenset(f.sources) if f.sources is not None else None,
            tiers=tuple(Tier(t.name, tuple(buyers[b] for b in t.buyers if b in buyers)) for t in f.tiers),
            dedupe_fields=tuple(f.dedupe.fields) if f.dedupe else (),
            dedupe_ttl_s=(f.dedupe.days * 86400.0) if f.dedupe else 0.0,
        )
        for f in c.flows
    }
    sources = {s.id: Source(s.id, s.cost, s.pay_on, s.refund_cost_on_return) for s in c.sources}
    returns = {
        b.id: (b.returns.days, b.returns.max_rate_percent / 100) for b in c.buyers if b.returns is not None
    }
    return RuntimeConfig(
        schema,
        sources,
        buyers,
        flows,
        c.server.max_message_bytes,
        c.server.verify_buyer_tls,
        version,
        returns,
    )


def _mapping(entries: m.Mapping) -> dict[str, MapSource]:
    return {
        key: MapSource(field=e.field, transform=e.transform, static=e.value, tx=e.from_)
        for key, e in entries.items()
    }


def _endpoint(ep: m.EndpointModel, body: BodyBuilder) -> Endpoint:
    return Endpoint(ep.url, ep.method, json_headers(list(ep.headers.items())), body, ep.timeout_ms / 1000)


def _match(x: m.MatchModel) -> Match:
    values = frozenset(v.strip().lower() if isinstance(v, str) else v for v in x.values)
    return Match(AnswerPath.parse(x.path), values)


def _opt(path: str | None) -> AnswerPath | None:
    return AnswerPath.parse(path) if path else None


def _buyer(
    b: m.BuyerModel, kinds: dict[str, FieldKind], public: list[str], every: list[str], max_price: Any
) -> Buyer:
    ping = ping_parser = None
    if b.ping is not None:
        body = (
            BodyBuilder.compile(_mapping(b.ping.fields), kinds)
            if b.ping.fields is not None
            else BodyBuilder.passthrough(public, kinds, {"lead_id": MapSource(tx="lead_id")})
        )
        ping = _endpoint(b.ping, body)
        a = b.ping.answer
        ping_parser = PingParser(
            bid=_match(a.bid),
            price=AnswerPath.parse(a.price),
            ping_id=_opt(a.ping_id),
            exclusive=_opt(a.exclusive),
            reason=_opt(a.reason),
            conditions=_opt(a.conditions),
            no_bid_statuses=frozenset(a.no_bid_statuses),
            max_price=max_price,
        )
    post_body = (
        BodyBuilder.compile(_mapping(b.post.fields), kinds)
        if b.post.fields is not None
        else BodyBuilder.passthrough(
            every,
            kinds,
            {
                "ping_id": MapSource(tx="ping_id"),
                "price": MapSource(tx="price"),
                "lead_id": MapSource(tx="lead_id"),
            },
        )
    )
    pa = b.post.answer
    periods: tuple[tuple[Period, int | None], ...] = (
        ("hour", b.caps.hour),
        ("day", b.caps.day),
        ("week", b.caps.week),
        ("month", b.caps.month),
    )
    limits = tuple((period, limit) for period, limit in periods if limit is not None)
    return Buyer(
        id=b.id,
        name=b.name or b.id,
        ping=ping,
        ping_parser=ping_parser,
        ping_max_body=b.ping.max_body_bytes if b.ping else 0,
        post=_endpoint(b.post, post_body),
        post_parser=PostParser(
            _match(pa.accepted), _opt(pa.lead_id), _opt(pa.reason), _opt(pa.price), max_price
        ),
        post_max_body=b.post.max_body_bytes,
        fixed_price=b.fixed_price,
        caps=CapLimits(b.id, b.timezone, limits),
        priority=b.priority,
        dedupe_ttl_s=b.dedupe_days * 86400.0,
    )
