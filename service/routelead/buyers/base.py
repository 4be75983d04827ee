"""The values passed between adapters, the transport and the router."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class PingAnswer:
    bid: bool
    price: Decimal | None = None
    ping_id: str = ""
    # Further values the post must echo (`answer.carry`), by name.
    carried: dict[str, str] = field(default_factory=dict)
    exclusive: bool = False
    reason: str = ""
    conditions: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PostAnswer:
    accepted: bool
    buyer_lead_id: str = ""
    reason: str = ""
    price: Decimal | None = None


class BadAnswer(Exception):
    """The buyer answered, but not in a form we can use; the message is a PII-free reason."""


class ErrorStatus(BadAnswer):
    """The buyer answered with an HTTP error status (4xx / 5xx) its status rules call an error:
    an answer that says no, unlike an unreadable one (a 3xx, a body we cannot parse)."""
