"""Compiled configuration: what the router reads on the hot path, built once at load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Literal

from routelead.buyers.endpoint import Endpoint
from routelead.buyers.parsers import PingParser, PostParser, StatusRules, scalar
from routelead.buyers.readers import MISSING, Locator, Reader
from routelead.domain.auction import AuctionSpec, TierSpec
from routelead.domain.caps import CapLimits
from routelead.domain.floors import FloorPolicy
from routelead.domain.lead import LeadSchema
from routelead.domain.pricing import PriceBook, SourcePricing
from routelead.domain.quote import InboundTerms
from routelead.domain.rules import PASS, Facts, Rule
from routelead.domain.schedule import Schedule
from routelead.domain.tree import Ranking, ScoreWeights, TierMode, TierOrder


@dataclass(frozen=True, slots=True)
class Buyer:
    id: str
    name: str
    ping: Endpoint | None
    ping_parser: PingParser | None
    ping_max_body: int
    post: Endpoint
    post_parser: PostParser
    post_max_body: int
    fixed_price: Decimal | None
    caps: CapLimits
    priority: int
    dedupe_ttl_s: float
    filter: Rule = PASS
    schedule: Schedule | None = None
    payment_days: int = 30
    pricing: PriceBook = field(default_factory=PriceBook)
    # Consecutive failures that open the circuit (0: no breaker), and the cool-down.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    # Send W3C `traceparent` on ping and post.
    trace_context: bool = False
    # The post answer's price is the revenue (at or above the floor), not the bid.
    price_on_post: bool = False
    # The lead types it buys → its ping and post for that type (each type's own mapping and
    # default fields); `ping` and `post` above are those of its first type.
    by_type: Mapping[str, tuple[Endpoint | None, Endpoint]] = field(default_factory=dict)

    def buys(self, lead_type: str) -> bool:
        return not self.by_type or lead_type in self.by_type

    def endpoints(self, lead_type: str) -> tuple[Endpoint | None, Endpoint]:
        """The ping and post that carry a lead of this type."""
        return self.by_type.get(lead_type) or (self.ping, self.post)

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Header values that may be credentials (everything but the content headers): a buyer
        that echoes one back in an answer must not get it into attempts or logs."""
        plain = {"content-type", "accept", "user-agent", "content-length", "accept-encoding"}
        endpoints = [e for e in (self.ping, self.post) if e is not None]
        return tuple({v for e in endpoints for k, v in e.headers if k.lower() not in plain and len(v) >= 6})

    @property
    def capped(self) -> bool:
        return self.caps.active


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    buyers: tuple[Buyer, ...]
    mode: TierMode = "auction"
    order: TierOrder = "bid"
    floor: Decimal | None = None
    # For weighted order: one cycle of buyer indexes, interleaved by weight.
    sequence: tuple[int, ...] = ()
    # Paused members (not in `buyers`): (buyer id, who paused it and when), for their attempt lines.
    paused: tuple[tuple[str, str], ...] = ()

    @property
    def rotates(self) -> bool:
        return self.order in ("round_robin", "weighted")


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    deadline_s: float
    post_reserve_s: float
    floor: Decimal
    sources: frozenset[str] | None
    tiers: tuple[Tier, ...]
    dedupe_fields: tuple[str, ...]
    dedupe_ttl_s: float
    floors: FloorPolicy = field(default_factory=lambda: FloorPolicy(Decimal(0)))
    ping_strategy: str = "all_at_once"
    max_buyers: int = 1
    ranking: Ranking = "price"
    score_weights: ScoreWeights = field(default_factory=ScoreWeights)
    consent_field: str | None = None
    fee: Decimal = Decimal(0)
    min_margin: Decimal | None = None
    # The one lead type this flow sells: its schema validates the flow's leads.
    lead_type: str = "default"

    def margin_floor(self, source: Source, fixed_cost: Decimal) -> Decimal | None:
        """Margin protection as a floor for a single buyer (None: no minimum margin)."""
        if self.min_margin is None:
            return None
        return source.pricing.margin_floor(fixed_cost - self.fee, self.fee, self.min_margin)

    def auction(
        self,
        tiers: Sequence[TierSpec],
        facts: Facts,
        now: datetime,
        *,
        ping_end: float,
        deadline: float,
        pricing: SourcePricing,
        fixed_cost: Decimal,
        pay_on: Literal["sold", "accepted"],
        margin_floor: Decimal | None = None,
        test: bool = False,
    ) -> AuctionSpec:
        """This flow's auction for one lead: the tree as seated, the flow's rules, the lead's money.
        One place for the live router, a quote, a commit and replay."""
        return AuctionSpec(
            tiers=tuple(tiers),
            facts=facts,
            now=now,
            ping_end=ping_end,
            deadline=deadline,
            max_buyers=self.max_buyers,
            ping_all_at_once=self.ping_strategy == "all_at_once",
            ranking=self.ranking,
            score_weights=self.score_weights,
            consent_field=self.consent_field,
            floors=self.floors,
            margin_floor=margin_floor,
            test=test,
            source_pricing=pricing,
            fixed_cost=fixed_cost,
            pay_on=pay_on,
        )


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    cost: Decimal
    pay_on: Literal["sold", "accepted"]
    pricing: SourcePricing = field(default_factory=lambda: SourcePricing(Decimal(0)))
    refund_cost_on_return: bool = False
    # Inbound ping-post terms (margin, quote ttl, ping limits); None: the source cannot quote.
    inbound: InboundTerms | None = None
    # The lead types it sells (None: any), and its pricing for a type where that differs.
    lead_types: frozenset[str] | None = None
    pricing_by_type: Mapping[str, SourcePricing] = field(default_factory=dict)

    def sells(self, lead_type: str) -> bool:
        return self.lead_types is None or lead_type in self.lead_types

    def selling(self, lead_type: str) -> Source:
        """This source as it prices a lead of this type."""
        pricing = self.pricing_by_type.get(lead_type)
        return self if pricing is None else replace(self, cost=pricing.default, pricing=pricing)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A compiled lookup step: its request (the buyers' request machinery) and how to read its facts."""

    id: str
    endpoint: Endpoint
    reader: Reader
    facts: tuple[tuple[str, Locator], ...]
    on_failure: Literal["reject", "continue", "false"]
    statuses: StatusRules
    max_body: int

    def read(self, doc: object) -> dict[str, str]:
        """The facts the answer carries ("true"/"false" for booleans); a missing one is left out."""
        out = {}
        for name, where in self.facts:
            value = scalar(where.get(doc))
            if value is MISSING or value is None:
                continue
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value).strip()
        return out


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    schema: LeadSchema
    sources: Mapping[str, Source]
    buyers: Mapping[str, Buyer]
    flows: Mapping[str, Flow]
    max_message_bytes: int
    verify_buyer_tls: bool
    # Short digest of the file: which configuration decided a lead.
    version: str
    # Every buyer's return terms, disabled ones too: (window in days, max return rate 0..1).
    buyer_returns: Mapping[str, tuple[int, Decimal]] = field(default_factory=dict)
    # Every lead type's schema by id; `schema` is the default type's.
    lead_types: Mapping[str, LeadSchema] = field(default_factory=dict)
    # Every lead type's lookup steps by id, run before any ping of its leads.
    lookups: Mapping[str, tuple[Lookup, ...]] = field(default_factory=dict)

    def schema_of(self, flow: Flow) -> LeadSchema:
        """The schema a flow's leads are validated against: its lead type's."""
        return self.lead_types.get(flow.lead_type, self.schema)

    def lookups_of(self, flow: Flow) -> tuple[Lookup, ...]:
        return self.lookups.get(flow.lead_type, ())
