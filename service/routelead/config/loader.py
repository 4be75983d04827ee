"""Load the YAML file: expand ${ENV} secrets, validate, cross-check, compile.

Every problem is reported with its path (`buyers[2].ping.timeout_ms: …`). All structural
problems come at once; the cross-reference checks (unknown buyers, rules, timeouts over
the deadline…) run once the structure is valid, and again report all they find.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import yaml

from routelead.buyers.endpoint import Endpoint
from routelead.buyers.parsers import PingParser, PostParser
from routelead.config import model as m
from routelead.config import yamltext
from routelead.config.buyers import (
    Problems,
    buyer_problems,
    compile_lookup,
    compile_ping,
    compile_post,
    default_fields,
    for_type,
    internal_fields,
    kinds_of,
)
from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Source, Tier
from routelead.config.secrets import REF as _REF
from routelead.config.secrets import service_files, service_refusal
from routelead.domain.caps import PERIODS, CapLimits, Period
from routelead.domain.floors import FloorPolicy, QualityStep
from routelead.domain.lead import FieldSpec, LeadSchema, Limits
from routelead.domain.patterns import PatternError, compile_pattern
from routelead.domain.periods import zone
from routelead.domain.pricing import PriceBook, PriceRule, SourcePricing
from routelead.domain.quote import InboundTerms, MarginRule, QuoteLimits
from routelead.domain.rules import PASS, RuleError, compile_rule
from routelead.domain.schedule import Schedule, build_schedule
from routelead.domain.tree import ScoreWeights, TierOrder, smooth_weighted_sequence


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
        raw = yamltext.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(origin, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(origin, ["the file must hold a mapping with lead, sources, buyers and flows"])
    problems: list[str] = []
    raw = yamltext.settle(raw, m.ConfigModel, problems)
    env = os.environ if env is None else env
    expanded = _expand(raw, env, "", problems, service_files(env))
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


def _expand(
    node: Any, env: Mapping[str, str], path: str, problems: list[str], own: Mapping[Path, str]
) -> Any:
    """Replace ${VAR}, ${VAR:-default} and ${file:/path} in strings; secrets never sit in the file.
    The service's own tokens, keys and connection strings are never expanded (config.secrets)."""
    if isinstance(node, dict):
        return {k: _expand(v, env, f"{path}.{k}" if path else str(k), problems, own) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, f"{path}[{i}]", problems, own) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(match: re.Match[str]) -> str:
        if why := service_refusal(match, own):
            problems.append(f"{path}: {match.group(0)} is not an allowed secret reference ({why})")
            return ""
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
    types = c.types()
    default = c.default_type
    # With one lead type the messages read as they always did; with several they say which type.
    many = len(types) > 1

    def typed(found: list[str], lead_type: str) -> list[str]:
        return [f"{p} (lead type {lead_type!r})" for p in found] if many else found

    problems += _unique("lead_types", [t.id for t in c.lead_types])
    for i, lt in enumerate(c.lead_types):
        if c.lead is not None and lt.id == m.DEFAULT_LEAD_TYPE:
            problems.append(f"lead_types[{i}].id: {lt.id!r} is the type the `lead` block describes")
    for at, lead in types.values():
        fields = lead.fields
        for name, f in fields.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                problems.append(f"{at}.fields.{name}: field names are letters, digits and _")
            if f.pattern is not None:
                try:
                    compile_pattern(f.pattern)
                except PatternError as exc:
                    problems.append(f"{at}.fields.{name}.pattern: {exc}")
        stamp = lead.created_at_field
        if stamp is not None and (stamp not in fields or fields[stamp].type != "datetime"):
            problems.append(f"{at}.created_at_field: {stamp!r} is not a lead field of type datetime")
        for j, name in enumerate(lead.identity_fields):
            if name not in fields:
                problems.append(f"{at}.identity_fields[{j}]: unknown lead field {name!r}")
        problems += _unique(f"{at}.lookups", [lk.id for lk in lead.lookups])
        for j, lk in enumerate(lead.lookups):
            problems += compile_lookup(lk, f"{at}.lookups[{j}]", fields)[1]

    def known(at: str, named: list[str] | None) -> list[str]:
        """The lead types an entity names (default: the default type); unknown ones reported."""
        for j, t in enumerate(named or []):
            if t not in types:
                problems.append(f"{at}.lead_types[{j}]: unknown lead type {t!r}")
        return [t for t in (named or [default]) if t in types]

    sold_by: dict[str, list[str]] = {}
    for i, src in enumerate(c.sources):
        sold = sold_by[src.id] = known(f"sources[{i}]", src.lead_types)
        for tid in sold:
            fields = types[tid][1].fields
            problems += typed(
                _pricing_problems(src.pricing, f"sources[{i}].pricing", rule_fields(types[tid][1])), tid
            )
            if src.price_field is not None and (
                src.price_field not in fields or fields[src.price_field].type != "decimal"
            ):
                problems += typed(
                    [f"sources[{i}].price_field: {src.price_field!r} is not a lead field of type decimal"],
                    tid,
                )
        for tid, costs in src.cost_by_type.items():
            if tid not in sold:
                where = f"sources[{i}].cost_by_type.{tid}"
                problems.append(f"{where}: the source does not sell lead type {tid!r}")
            elif costs.pricing:
                at = f"sources[{i}].cost_by_type.{tid}.pricing"
                problems += _pricing_problems(costs.pricing, at, rule_fields(types[tid][1]))

    problems += _unique("sources", [s.id for s in c.sources])
    problems += _unique("buyers", [b.id for b in c.buyers])
    problems += _unique("flows", [f.id for f in c.flows])
    buyers = {b.id: b for b in c.buyers}
    sources = {s.id for s in c.sources}
    internal = {tid: internal_fields(c, lead.fields) for tid, (_, lead) in types.items()}

    bought_by: dict[str, list[str]] = {}
    for i, b in enumerate(c.buyers):
        at = f"buyers[{i}]"
        bought = bought_by.setdefault(b.id, known(at, b.lead_types))
        try:
            zone(b.timezone)
        except Exception:
            problems.append(f"{at}.timezone: unknown timezone {b.timezone!r}")
        flow_ids = {f.id for f in c.flows}
        for kind, scoped in (("caps", b.caps), ("budgets", b.budgets)):
            for name in scoped.flows:
                if name not in flow_ids:
                    problems.append(f"{at}.{kind}.flows.{name}: unknown flow {name!r}")
            for name in scoped.sources:
                if name not in sources:
                    problems.append(f"{at}.{kind}.sources.{name}: unknown source {name!r}")
        if b.schedule is not None:
            problems += _schedule_problems(b.schedule, b.timezone, f"{at}.schedule")
        for step, ep in (("ping", b.ping), ("post", b.post)):
            if ep is None:
                continue
            for header, value in ep.headers.items():
                if "\n" in value or "\r" in value or "\n" in header:
                    problems.append(f"{at}.{step}.headers.{header}: line breaks are not allowed")
            for tid in ep.fields_by_type:
                if tid not in (b.lead_types or [default]):
                    problems.append(
                        f"{at}.{step}.fields_by_type.{tid}: the buyer does not buy lead type {tid!r}"
                    )
        for tid in bought:
            fields = types[tid][1].fields
            pii = {name for name, f in fields.items() if f.pii}
            facts = rule_fields(types[tid][1])
            if b.filter is not None:
                problems += typed(_rule_problems(b.filter, f"{at}.filter", facts), tid)
            if b.requires is not None and b.requires.certificate and not _certificate_field(types[tid][1]):
                problems += typed(
                    [f"{at}.requires.certificate: the lead type has no field of type consent_certificate"],
                    tid,
                )
            problems += typed(_pricing_problems(b.pricing, f"{at}.pricing", facts), tid)
            for step, ep in (("ping", b.ping), ("post", b.post)):
                if ep is None:
                    continue
                label = f"fields_by_type.{tid}" if tid in ep.fields_by_type else "fields"
                for key, entry in (ep.fields_by_type.get(tid, ep.fields) or {}).items():
                    where = f"{at}.{step}.{label}.{key}"
                    if entry.field is not None and entry.field not in fields:
                        problems += typed([f"{where}: unknown lead field {entry.field!r}"], tid)
                    if step == "ping" and entry.field in pii:
                        problems += typed(
                            [f"{where}: {entry.field!r} is PII and may not be sent in a ping"], tid
                        )
                    if step == "ping" and entry.from_ not in (None, "lead_id"):
                        problems.append(f"{where}: `from: {entry.from_}` exists only for the post")
            problems += buyer_problems(b, at, fields, c.max_price, internal[tid], tid)

    for i, flow in enumerate(c.flows):
        at = f"flows[{i}]"
        tid = flow.lead_type or default
        if tid not in types:
            problems.append(f"{at}.lead_type: unknown lead type {tid!r}")
            continue
        lead = types[tid][1]
        fields = lead.fields
        if flow.post_reserve_ms >= flow.deadline_ms:
            problems.append(f"{at}.post_reserve_ms: must be shorter than deadline_ms ({flow.deadline_ms})")
        for j, s in enumerate(flow.sources or []):
            if s not in sources:
                problems.append(f"{at}.sources[{j}]: unknown source {s!r}")
            elif tid not in sold_by.get(s, ()):
                problems.append(f"{at}.sources[{j}]: source {s!r} does not sell lead type {tid!r}")
        problems += _unique(f"{at}.tiers", [t.name for t in flow.tiers], what="tier")
        if flow.consent_field is not None and flow.consent_field not in fields:
            problems.append(f"{at}.consent_field: unknown lead field {flow.consent_field!r}")
        for j, quality in enumerate(flow.dynamic_floor.quality):
            problems += _rule_problems(
                quality.when, f"{at}.dynamic_floor.quality[{j}].when", rule_fields(lead)
            )
        if flow.dynamic_floor.business_hours is not None:
            problems += _schedule_problems(
                flow.dynamic_floor.business_hours, "UTC", f"{at}.dynamic_floor.business_hours"
            )
        for j, t in enumerate(flow.tiers):
            if t.weights and t.order != "weighted":
                problems.append(f"{at}.tiers[{j}].weights: only used with `order: weighted`")
            for buyer_id in t.weights:
                if buyer_id not in t.buyers:
                    problems.append(f"{at}.tiers[{j}].weights.{buyer_id}: not a buyer of this tier")
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
                if tid not in bought_by.get(buyer_id, ()):
                    buys = ", ".join(buyer.lead_types or [default])
                    problems.append(
                        f"{where}: buyer {buyer_id!r} does not buy lead type {tid!r} (it buys {buys})"
                    )
                bi = c.buyers.index(buyer)
                for step, ep in (("ping", buyer.ping), ("post", buyer.post)):
                    if ep is not None and ep.timeout_ms > flow.deadline_ms:
                        problems.append(
                            f"buyers[{bi}].{step}.timeout_ms: {ep.timeout_ms} ms exceeds the "
                            f"{flow.deadline_ms} ms deadline of flow {flow.id!r}"
                        )
        if flow.dedupe is not None and flow.dedupe.fields is None and not lead.identity_fields:
            problems.append(
                f"{at}.dedupe.fields: name the identity fields here, or as `identity_fields` of "
                f"lead type {tid!r}"
            )
        for j, name in enumerate(flow.dedupe.fields or [] if flow.dedupe else []):
            if name not in fields:
                problems.append(f"{at}.dedupe.fields[{j}]: unknown lead field {name!r}")
    # A buyer of several types may repeat a problem of what its types share: each once.
    return list(dict.fromkeys(problems))


def _certificate_field(lead: m.LeadModel) -> str | None:
    return next((n for n, f in lead.fields.items() if f.type == "consent_certificate"), None)


def buyer_filter(b: m.BuyerModel, lead: m.LeadModel) -> dict[str, Any] | None:
    """The buyer's filter with its requirements (consent evidence) added."""
    cert = _certificate_field(lead)
    if b.requires is None or not b.requires.certificate or cert is None:
        return b.filter
    need: dict[str, Any] = {"certificate": cert}
    if b.requires.max_age_minutes is not None:
        need["max_age_minutes"] = b.requires.max_age_minutes
    return {"all": [b.filter, need]} if b.filter is not None else need


def rule_fields(lead: m.LeadModel) -> dict[str, m.FieldModel]:
    """What filters, conditions and pricing rules may read: the lead's fields and its lookups' facts."""
    facts = {name: m.FieldModel() for lk in lead.lookups for name in lk.answer.facts}
    return {**lead.fields, **facts}


def _rule_problems(spec: object, path: str, fields: Mapping[str, m.FieldModel]) -> list[str]:
    try:
        compile_rule(spec, path, fields)
    except RuleError as exc:
        return [str(exc)]
    return []


def _pricing_problems(
    rules: list[m.PriceRuleModel], path: str, fields: Mapping[str, m.FieldModel]
) -> list[str]:
    out: list[str] = []
    for j, rule in enumerate(rules):
        if rule.when is not None:
            out += _rule_problems(rule.when, f"{path}[{j}].when", fields)
    return out


def _inbound(i: m.InboundModel | None) -> InboundTerms | None:
    if i is None:
        return None
    margin = MarginRule(i.margin.fixed, i.margin.percent, i.min_margin)
    limits = QuoteLimits(i.limits.per_second, i.limits.per_day, i.limits.max_ping_post_ratio)
    return InboundTerms(margin, float(i.ttl_s), limits)


def _price_book(rules: list[m.PriceRuleModel], fields: Mapping[str, m.FieldModel]) -> PriceBook:
    return PriceBook(
        tuple(
            PriceRule(
                compile_rule(r.when, "", fields) if r.when is not None else PASS,
                "set" if r.set is not None else "add",
                r.set if r.set is not None else (r.add or Decimal(0)),
            )
            for r in rules
        )
    )


def _schedule_problems(model: m.ScheduleModel, default_tz: str, path: str) -> list[str]:
    problems = []
    try:
        zone(model.timezone or default_tz)
    except Exception:
        problems.append(f"{path}.timezone: unknown timezone {model.timezone!r}")
    try:
        _schedule(model, default_tz)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
    return problems


def _schedule(model: m.ScheduleModel, default_tz: str) -> Schedule:
    return build_schedule(model.timezone or default_tz, model.days, model.hours, list(model.dates_off))


def _unique(at: str, ids: list[str], what: str = "id") -> list[str]:
    seen: set[str] = set()
    out = []
    for i, x in enumerate(ids):
        if x in seen:
            out.append(f"{at}[{i}]: duplicate {what} {x!r}")
        seen.add(x)
    return out


def _schema(lead: m.LeadModel) -> LeadSchema:
    specs = {
        name: FieldSpec(
            name=name,
            type=f.type,
            required=f.required,
            pii=f.pii,
            pattern=compile_pattern(f.pattern) if f.pattern else None,
            enum=frozenset(f.enum) if f.enum is not None else None,
            max_length=f.max_length,
        )
        for name, f in lead.fields.items()
    }
    return LeadSchema(
        specs,
        lead.unknown_fields,
        Limits(lead.max_fields, lead.max_value_length),
        created_at_field=lead.created_at_field,
    )


def compile_config(c: m.ConfigModel, version: str) -> RuntimeConfig:
    types = c.types()
    default = c.default_type
    schemas = {tid: _schema(lead) for tid, (_, lead) in types.items()}
    buyers = {b.id: _buyer(b, c, c.max_price) for b in c.buyers if b.enabled}
    paused = {b.id: _paused(b) for b in c.buyers if not b.enabled}
    flows = {f.id: _flow(f, buyers, types[f.lead_type or default][1], paused, default) for f in c.flows}
    sources = {s.id: _source(s, types, default) for s in c.sources}
    returns = {
        b.id: (b.returns.days, b.returns.max_rate_percent / 100) for b in c.buyers if b.returns is not None
    }
    lookups = {
        tid: tuple(compile_lookup(lk, at, lead.fields)[0] for lk in lead.lookups)
        for tid, (at, lead) in types.items()
    }
    return RuntimeConfig(
        schemas[default],
        sources,
        buyers,
        flows,
        c.server.max_message_bytes,
        c.server.verify_buyer_tls,
        version,
        returns,
        schemas,
        lookups,
    )


def _source(s: m.SourceModel, types: Mapping[str, tuple[str, m.LeadModel]], default: str) -> Source:
    sold = s.lead_types or [default]
    fields = rule_fields(types[sold[0]][1])
    by_type = {
        tid: SourcePricing(
            costs.cost if costs.cost is not None else s.cost,
            _price_book(
                costs.pricing if costs.pricing is not None else s.pricing, rule_fields(types[tid][1])
            ),
            s.price_field,
            s.revenue_share,
        )
        for tid, costs in s.cost_by_type.items()
    }
    return Source(
        s.id,
        s.cost,
        s.pay_on,
        SourcePricing(s.cost, _price_book(s.pricing, fields), s.price_field, s.revenue_share),
        s.refund_cost_on_return,
        _inbound(s.inbound),
        frozenset(sold),
        by_type,
    )


def _paused(b: m.BuyerModel) -> str:
    """The attempt reason of a paused buyer: who paused it, when and why, as far as known."""
    p = b.paused
    if p is None:
        return "paused: enabled: false in the configuration"
    who = f" by {p.by}" if p.by else ""
    at = p.at if p.at is None or p.at.tzinfo else p.at.replace(tzinfo=UTC)  # naive: written as UTC
    when = f" at {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if at is not None else ""
    why = f": {p.reason}" if p.reason else ""
    return f"paused{who}{when}{why}"


def _flow(
    f: m.FlowModel,
    buyers: Mapping[str, Buyer],
    lead: m.LeadModel,
    paused: Mapping[str, str],
    default: str,
) -> Flow:
    fields = rule_fields(lead)
    d = f.dynamic_floor
    hours = d.business_hours
    floors = FloorPolicy(
        base=f.floor,
        exclusive=f.exclusive_floor,
        quality=tuple(QualityStep(compile_rule(q.when, "", fields), q.multiplier) for q in d.quality),
        business_hours=_schedule(hours, "UTC") if hours else None,
        business_hours_multiplier=hours.multiplier if hours else Decimal(1),
    )
    w = f.score_weights
    return Flow(
        id=f.id,
        deadline_s=f.deadline_ms / 1000,
        post_reserve_s=f.post_reserve_ms / 1000,
        floor=f.floor,
        sources=frozenset(f.sources) if f.sources is not None else None,
        tiers=tuple(_tier(t, buyers, paused) for t in f.tiers),
        dedupe_fields=tuple(f.dedupe.fields or lead.identity_fields) if f.dedupe else (),
        dedupe_ttl_s=(f.dedupe.days * 86400.0) if f.dedupe else 0.0,
        floors=floors,
        ping_strategy=f.ping_strategy,
        max_buyers=f.max_buyers,
        ranking=f.ranking,
        score_weights=ScoreWeights(w.price, w.acceptance, w.payment),
        consent_field=f.consent_field,
        fee=f.fee,
        min_margin=f.min_margin,
        lead_type=f.lead_type or default,
    )


def _tier(t: m.TierModel, buyers: Mapping[str, Buyer], paused: Mapping[str, str]) -> Tier:
    members = tuple(buyers[b] for b in t.buyers if b in buyers)  # disabled buyers drop out
    order: TierOrder = t.order or ("bid" if t.mode == "auction" else "priority")
    sequence = (
        smooth_weighted_sequence([t.weights.get(b.id, 1) for b in members]) if order == "weighted" else ()
    )
    held = tuple((b, paused[b]) for b in t.buyers if b in paused)  # ... and keep an attempt line
    return Tier(t.name, members, t.mode, order, t.floor, sequence, held)


def _buyer(b: m.BuyerModel, c: m.ConfigModel, max_price: Any) -> Buyer:
    p = Problems(f"buyers.{b.id}")
    types = c.types()
    by_type: dict[str, tuple[Endpoint | None, Endpoint]] = {}
    parsers: tuple[PingParser | None, PostParser] | None = None
    for tid in b.lead_types or [c.default_type]:
        lead = types[tid][1]
        names = {n: str(f.type) for n, f in lead.fields.items()}
        kinds = kinds_of(names)
        public, every = default_fields(lead.fields, internal_fields(c, lead.fields))
        ping = ping_parser = None
        if b.ping is not None:
            ping, ping_parser = compile_ping(for_type(b.ping, tid), kinds, public, max_price, p, names, tid)
        post, post_parser = compile_post(
            for_type(b.post, tid), kinds, every, max_price, p, names, b.ping, tid
        )
        by_type[tid] = (ping, post)
        parsers = parsers or (ping_parser, post_parser)
    if p.found or parsers is None:  # check() has reported these; compiling an unchecked model is a bug
        raise ValueError("; ".join(p.found))
    first = next(iter(by_type))
    fields = rule_fields(types[first][1])
    ping, post = by_type[first]
    ping_parser, post_parser = parsers
    scoped_caps = {f"flow={k}": v for k, v in b.caps.flows.items()} | {
        f"source={k}": v for k, v in b.caps.sources.items()
    }
    scoped_budgets = {f"flow={k}": v for k, v in b.budgets.flows.items()} | {
        f"source={k}": v for k, v in b.budgets.sources.items()
    }
    return Buyer(
        id=b.id,
        name=b.name or b.id,
        ping=ping,
        ping_parser=ping_parser,
        ping_max_body=b.ping.max_body_bytes if b.ping else 0,
        post=post,
        post_parser=post_parser,
        post_max_body=b.post.max_body_bytes,
        fixed_price=b.fixed_price,
        caps=CapLimits(
            b.id,
            b.timezone,
            _periods(b.caps),
            _periods(b.budgets),
            prepaid=b.prepaid is not None,
            credit_limit=b.prepaid.credit_limit if b.prepaid else Decimal("0"),
            scoped_limits=tuple((s, p, n) for s, m in scoped_caps.items() for p, n in _periods(m)),
            scoped_budgets=tuple((s, p, d) for s, m in scoped_budgets.items() for p, d in _periods(m)),
        ),
        priority=b.priority,
        dedupe_ttl_s=b.dedupe_days * 86400.0,
        filter=compile_rule(spec, "", fields)
        if (spec := buyer_filter(b, types[first][1])) is not None
        else PASS,
        schedule=_schedule(b.schedule, b.timezone) if b.schedule is not None else None,
        payment_days=b.payment_days,
        pricing=_price_book(b.pricing, fields),
        breaker_failures=b.breaker.failures if b.breaker.enabled else 0,
        breaker_cooldown_s=b.breaker.cooldown_s,
        trace_context=b.trace_context,
        price_on_post=b.post.price_on_post,
        by_type=by_type,
    )


def _periods(m: m.PeriodCapsModel | m.PeriodBudgetsModel) -> tuple[tuple[Period, Any], ...]:
    """The periods that have a limit, in a fixed order."""
    return tuple((p, getattr(m, p)) for p in PERIODS if getattr(m, p) is not None)
