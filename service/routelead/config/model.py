"""Pydantic models of the configuration file; every error carries its path."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from routelead.domain.lead import FieldType
from routelead.domain.mapping import Transform, TxValue


def _money(value: object) -> object:
    # Floats would smuggle binary rounding into the books: money in config is a string or an int.
    if isinstance(value, float):
        raise ValueError('write money as a quoted decimal string, e.g. "45.00"')
    if isinstance(value, bool):
        raise ValueError("must be an amount, not a boolean")
    return str(value) if isinstance(value, int) else value


Money = Annotated[Decimal, BeforeValidator(_money), Field(ge=0, allow_inf_nan=False)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldModel(Strict):
    type: FieldType = "string"
    required: bool = False
    pii: bool = False
    pattern: str | None = None
    enum: list[str] | None = None
    max_length: int = Field(default=1024, ge=1, le=65536)


class LeadModel(Strict):
    fields: dict[str, FieldModel] = Field(min_length=1)
    unknown_fields: Literal["reject", "drop"] = "reject"
    max_fields: int = Field(default=200, ge=1, le=10_000)
    max_value_length: int = Field(default=4096, ge=1, le=1_048_576)


class SourceModel(Strict):
    id: Id
    name: str = ""
    cost: Money = Decimal("0")
    # `sold`: we pay the source only for leads we sell (the ping-post norm); `accepted`: every valid lead.
    pay_on: Literal["sold", "accepted"] = "sold"
    # Whether this source refunds its cost when a buyer returns the lead (the source agreement).
    refund_cost_on_return: bool = False


def _mapping_entry(value: object) -> object:
    return {"field": value} if isinstance(value, str) else value


class MappingEntry(Strict):
    field: str | None = None
    value: str | int | bool | None = None
    transform: Transform | None = None
    from_: TxValue | None = Field(default=None, alias="from")

    @model_validator(mode="after")
    def _one_source(self) -> MappingEntry:
        given = [k for k in ("field", "value", "from_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `field`, `value` or `from`")
        if self.transform is not None and self.field is None:
            raise ValueError("`transform` applies to a `field`")
        return self


Mapping = dict[str, Annotated[MappingEntry, BeforeValidator(_mapping_entry)]]


class MatchModel(Strict):
    path: str
    values: list[str | bool | int] = Field(min_length=1)


class PingAnswerModel(Strict):
    bid: MatchModel = MatchModel(path="bid", values=[True, "true", "yes", "accepted", "bid"])
    price: str = "price"
    ping_id: str | None = "ping_id"
    exclusive: str | None = "exclusive"
    reason: str | None = "reason"
    conditions: str | None = "conditions"
    no_bid_statuses: list[int] = [204]


class PostAnswerModel(Strict):
    accepted: MatchModel = MatchModel(path="status", values=["accepted", "success", "ok", True])
    lead_id: str | None = "lead_id"
    reason: str | None = "reason"
    price: str | None = None


class EndpointModel(Strict):
    url: str = Field(pattern=r"^https?://[^\s]+$")
    method: Literal["POST", "PUT"] = "POST"
    timeout_ms: int = Field(ge=1, le=60_000)
    headers: dict[str, str] = {}
    # Absent: the ping carries every non-PII field, the post every field, under their own names.
    fields: Mapping | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)


class PingModel(EndpointModel):
    answer: PingAnswerModel = PingAnswerModel()


class PostModel(EndpointModel):
    answer: PostAnswerModel = PostAnswerModel()


class CapsModel(Strict):
    hour: int | None = Field(default=None, ge=0)
    day: int | None = Field(default=None, ge=0)
    week: int | None = Field(default=None, ge=0)
    month: int | None = Field(default=None, ge=0)


class ReturnsModel(Strict):
    """A buyer may return a sold lead within `days`, up to `max_rate_percent` of its recent sales."""

    days: int = Field(ge=0, le=365)
    max_rate_percent: Decimal = Field(default=Decimal("10"), ge=0, le=100)


class BuyerModel(Strict):
    id: Id
    name: str = ""
    enabled: bool = True
    ping: PingModel | None = None
    post: PostModel
    # A fixed-price buyer takes a direct post at this price, without a ping.
    fixed_price: Money | None = None
    caps: CapsModel = CapsModel()
    timezone: str = "UTC"
    priority: int = 0
    # Do not offer this buyer a consumer it already bought within this many days.
    dedupe_days: int = Field(default=0, ge=0, le=3650)
    # No `returns`: the buyer cannot return leads.
    returns: ReturnsModel | None = None

    @model_validator(mode="after")
    def _ping_or_fixed(self) -> BuyerModel:
        if (self.ping is None) == (self.fixed_price is None):
            raise ValueError("give either `ping` (a bidding buyer) or `fixed_price` (direct post), not both")
        return self


class TierModel(Strict):
    name: Id
    buyers: list[Id] = Field(min_length=1)


class DedupeModel(Strict):
    # The fields that identify a consumer (hashed, never stored in clear).
    fields: list[str] = Field(min_length=1)
    # Reject a repeat of the same consumer into this flow within this many days; 0 keeps only
    # the per-buyer check (`buyers[].dedupe_days`).
    days: int = Field(default=30, ge=0, le=3650)


class FlowModel(Strict):
    id: Id
    deadline_ms: int = Field(default=750, ge=50, le=10_000)
    # The ping window closes this long before the deadline, so the winner can still be posted.
    post_reserve_ms: int = Field(default=150, ge=0, le=5_000)
    floor: Money = Decimal("0")
    # Sources allowed to sell into this flow; absent means all.
    sources: list[Id] | None = None
    tiers: list[TierModel] = Field(min_length=1)
    dedupe: DedupeModel | None = None


class ServerModel(Strict):
    max_message_bytes: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    verify_buyer_tls: bool = True


class ConfigModel(Strict):
    lead: LeadModel
    sources: list[SourceModel] = Field(min_length=1)
    buyers: list[BuyerModel] = Field(min_length=1)
    flows: list[FlowModel] = Field(min_length=1)
    max_price: Money = Decimal("10000")
    server: ServerModel = ServerModel()
