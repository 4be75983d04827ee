"""Compiled configuration: what the router reads on the hot path, built once at load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from routelead.buyers.json_protocol import Endpoint, PingParser, PostParser
from routelead.domain.lead import LeadSchema
from routelead.state.ports import CapLimits


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

    @property
    def capped(self) -> bool:
        return bool(self.caps.limits)


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    buyers: tuple[Buyer, ...]


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


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    cost: Decimal
    pay_on: Literal["sold", "accepted"]
    refund_cost_on_return: bool = False


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
