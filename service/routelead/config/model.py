"""Pydantic models of the configuration file; every error carries its path."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from routelead.domain.lead import FieldType
from routelead.domain.mapping import Transform, TxValue
from routelead.domain.tree import Ranking, TierMode, TierOrder

TX_PATTERN = r"^(ping_id|post_id|price|lead_id|ping\.[A-Za-z_][A-Za-z0-9_]{0,63})$"


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
    # Ours alone (a score, what we pay the source): in no default ping or post, only where a
    # buyer's `fields` maps it by name.
    internal: bool = False
    pattern: str | None = None
    enum: list[str] | None = None
    max_length: int = Field(default=1024, ge=1, le=65536)

    @model_validator(mode="before")
    @classmethod
    def _certificates_are_pii(cls, data: Any) -> Any:
        """A consent certificate identifies the consumer's session: PII, so never in a ping."""
        if isinstance(data, dict) and data.get("type") == "consent_certificate":
            if data.get("pii") is False:
                raise ValueError("a consent_certificate is PII (sent in the post, never in a ping)")
            return {**data, "pii": True}
        return data


class RequiresModel(Strict):
    """What a buyer requires of every lead it is offered."""

    # Consent evidence present (the lead type's consent_certificate field), and at most this old.
    certificate: bool = False
    max_age_minutes: int | None = Field(default=None, ge=1, le=525_600)


class LeadModel(Strict):
    fields: dict[str, FieldModel] = Field(min_length=1)
    # A `datetime` field saying when the consumer submitted the form: lead age rules use it.
    created_at_field: str | None = None
    unknown_fields: Literal["reject", "drop"] = "reject"
    max_fields: int = Field(default=200, ge=1, le=10_000)
    max_value_length: int = Field(default=4096, ge=1, le=1_048_576)
    # The fields that identify a consumer of this type: a flow's `dedupe.fields` default to them.
    identity_fields: list[str] = []
    # HTTP verification / enrichment steps run before any ping; their answers become lead facts.
    lookups: list[LookupModel] = []


# The id of the type the `lead:` block describes.
DEFAULT_LEAD_TYPE = "default"


class LeadTypeModel(LeadModel):
    """One vertical (solar, auto insurance…): its own fields, identity and created-at field."""

    id: Id


class PriceRuleModel(Strict):
    """A pricing rule: when the condition holds (always, if absent), set the price or add to it."""

    when: dict[str, Any] | None = None
    set: Money | None = None
    add: Annotated[Decimal, BeforeValidator(_money), Field(allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> PriceRuleModel:
        if (self.set is None) == (self.add is None):
            raise ValueError("give exactly one of `set` or `add`")
        return self


class SourceTypeCostModel(Strict):
    """What a source charges for one lead type, where it differs from its `cost` and `pricing`."""

    cost: Money | None = None
    pricing: list[PriceRuleModel] | None = None


class MarginModel(Strict):
    """What a quote keeps of the bids that back it: a fixed amount or a percentage of them."""

    fixed: Money | None = None
    percent: Money | None = Field(default=None, le=100)

    @model_validator(mode="after")
    def _one_rule(self) -> MarginModel:
        if (self.fixed is None) == (self.percent is None):
            raise ValueError("give exactly one of `fixed` or `percent`")
        return self


class QuoteLimitsModel(Strict):
    """Per-source quote (inbound ping) limits; absent: no limit."""

    per_second: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)
    # Quotes per commit over the UTC day (the first `max_ping_post_ratio` quotes are free).
    max_ping_post_ratio: int | None = Field(default=None, ge=1)


class InboundModel(Strict):
    margin: MarginModel
    # The least a quote keeps, whatever the margin rule says.
    min_margin: Money = Decimal("0")
    # How long a quote may be committed; buyers' ping ids that expire sooner shorten it.
    ttl_s: int = Field(default=60, ge=1, le=3600)
    limits: QuoteLimitsModel = QuoteLimitsModel()


class SourceModel(Strict):
    id: Id
    name: str = ""
    cost: Money = Decimal("0")
    # `sold`: we pay the source only for leads we sell (the ping-post norm); `accepted`: every valid lead.
    pay_on: Literal["sold", "accepted"] = "sold"
    # Cost rules (all evaluated, last match wins), a lead field carrying the source's own price,
    # and a revenue share in percent paid to the source on top of the fixed cost.
    pricing: list[PriceRuleModel] = []
    price_field: str | None = None
    revenue_share: Money = Field(default=Decimal("0"), le=100)
    # Whether this source refunds its cost when a buyer returns the lead (the source agreement).
    refund_cost_on_return: bool = False
    # The lead types it sells (default: the default type), and its cost where a type differs.
    lead_types: list[Id] | None = Field(default=None, min_length=1)
    cost_by_type: dict[Id, SourceTypeCostModel] = {}

    # Inbound ping-post: the source may ask for a quote (Quote) before it posts the lead (Commit).
    inbound: InboundModel | None = None


def _mapping_entry(value: object) -> object:
    return {"field": value} if isinstance(value, str) else value


class MappingEntry(Strict):
    field: str | None = None
    value: str | int | bool | None = None
    transform: Transform | list[Transform] | None = None
    from_: TxValue | None = Field(default=None, alias="from", pattern=TX_PATTERN)
    # A value table ("CA" → "California"); unmapped values become `default`, or pass unchanged.
    map: dict[str, str | int | bool] | None = None
    default: str | int | bool | None = None
    date_format: str | None = None
    max_length: int | None = Field(default=None, ge=1, le=65536)

    @model_validator(mode="after")
    def _one_source(self) -> MappingEntry:
        given = [k for k in ("field", "value", "from_") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `field`, `value` or `from`")
        shaping = ("transform", "map", "default", "date_format", "max_length")
        if self.field is None and any(getattr(self, k) is not None for k in shaping):
            raise ValueError(
                "`transform`, `map`, `default`, `date_format` and `max_length` apply to a `field`"
            )
        if self.default is not None and self.map is None:
            raise ValueError("`default` is the value for what `map` does not list; give `map` too")
        return self


Mapping = dict[str, Annotated[MappingEntry, BeforeValidator(_mapping_entry)]]


class MatchModel(Strict):
    path: str
    values: list[str | bool | int] = Field(min_length=1)


StatusAction = Literal["read", "no_bid", "accepted", "rejected", "error"]


class AnswerModel(Strict):
    """How to read an answer: its format, text parsing, and what HTTP statuses mean."""

    format: Literal["json", "xml", "text", "html"] = "json"
    # text / html: a regex with named groups, or a delimiter and the names of its columns.
    pattern: str | None = None
    delimiter: str | None = Field(default=None, min_length=1)
    columns: list[str | None] = []
    # 204: no_bid, 409: rejected, 4xx: read …; exact codes win over classes.
    statuses: dict[int | str, StatusAction] = {}


class PingAnswerModel(AnswerModel):
    bid: MatchModel = MatchModel(path="bid", values=[True, "true", "yes", "accepted", "bid"])
    # When given, an answer that is neither a bid nor one of these is an error, not a no-bid.
    no_bid: MatchModel | None = None
    price: str = "price"
    ping_id: str | None = "ping_id"
    exclusive: str | None = "exclusive"
    reason: str | None = "reason"
    conditions: str | None = "conditions"
    no_bid_statuses: list[int] = [204]
    # Further values the post must echo: {post name: path in this answer}; use as `from: ping.NAME`.
    carry: dict[str, str] = {}


class PostAnswerModel(AnswerModel):
    accepted: MatchModel = MatchModel(path="status", values=["accepted", "success", "ok", True])
    # When given, an answer that is neither accepted nor one of these is an error, not a rejection.
    rejected: MatchModel | None = None
    lead_id: str | None = "lead_id"
    reason: str | None = "reason"
    price: str | None = None


class XmlModel(Strict):
    root: str = "lead"
    declaration: bool = True


class EndpointModel(Strict):
    url: str = Field(pattern=r"^https?://[^\s]+$")
    method: Literal["POST", "PUT", "GET"] = "POST"
    # How the request carries the values: a JSON body, a form body, an XML body, or the URL query.
    format: Literal["json", "form", "xml", "query"] = "json"
    xml: XmlModel = XmlModel()
    timeout_ms: int = Field(ge=1, le=60_000)
    headers: dict[str, str] = {}
    # Absent: the ping carries every non-PII field, the post every field, under their own names.
    fields: Mapping | None = None
    # A buyer of several lead types: the mapping for one type, where it is not `fields`.
    fields_by_type: dict[Id, Mapping] = {}
    max_body_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)


class PingModel(EndpointModel):
    answer: PingAnswerModel = PingAnswerModel()


class PostModel(EndpointModel):
    answer: PostAnswerModel = PostAnswerModel()
    # The buyer's contract prices the lead in its post answer (`answer.price`), not at its bid:
    # that price is the revenue, unless it is below the floor (then a price dispute, booked at the
    # bid). Off: a bidding buyer pays its bid, and a different price in its answer is a dispute.
    price_on_post: bool = False


# A fact a lookup adds (`phone.valid`): dotted, so it can never be a lead field a seller sends.
FACT_PATTERN = r"^[a-z][a-z0-9_]{0,31}(\.[a-z0-9_]{1,31}){1,3}$"


class LookupAnswerModel(AnswerModel):
    # Fact name → where its value is in the answer (a JSON path, an XML path, a text group).
    facts: dict[Annotated[str, Field(pattern=FACT_PATTERN)], str] = Field(min_length=1)


class LookupModel(EndpointModel):
    """A verification or enrichment call made before any ping (phone, e-mail, consent checks)."""

    id: Id
    answer: LookupAnswerModel
    # When the step fails or times out: refuse the lead, go on without its facts, or set them "false".
    on_failure: Literal["reject", "continue", "false"] = "continue"


class PeriodCapsModel(Strict):
    hour: int | None = Field(default=None, ge=0)
    day: int | None = Field(default=None, ge=0)
    week: int | None = Field(default=None, ge=0)
    month: int | None = Field(default=None, ge=0)


class CapsModel(PeriodCapsModel):
    # The same buyer's caps for leads from one flow or one source (on top of the totals).
    flows: dict[str, PeriodCapsModel] = {}
    sources: dict[str, PeriodCapsModel] = {}


class PeriodBudgetsModel(Strict):
    hour: Money | None = None
    day: Money | None = None
    week: Money | None = None
    month: Money | None = None


class BudgetsModel(PeriodBudgetsModel):
    """Dollar budgets per period (quoted decimals), counted like caps in the buyer's timezone."""

    flows: dict[str, PeriodBudgetsModel] = {}
    sources: dict[str, PeriodBudgetsModel] = {}


class BalanceModel(Strict):
    """A prepaid buyer: each sale draws its balance down; it may go as low as −credit_limit."""

    credit_limit: Money = Decimal("0")


class ReturnsModel(Strict):
    """A buyer may return a sold lead within `days`, up to `max_rate_percent` of its recent sales."""

    days: int = Field(ge=0, le=365)
    max_rate_percent: Decimal = Field(default=Decimal("10"), ge=0, le=100)


class ScheduleModel(Strict):
    """Hours of operation; `timezone` defaults to the buyer's."""

    timezone: str | None = None
    days: list[str] | None = None
    hours: str | dict[str, str | list[str]] | None = None
    dates_off: list[date] = []


class BreakerModel(Strict):
    """Skip a buyer after this many consecutive timeouts or errors, for `cooldown_s`, then probe."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1, le=1000)
    cooldown_s: float = Field(default=30, gt=0, le=3600)


class PausedModel(Strict):
    """Who paused a buyer, when and why: written by the Admin API's pause, shown on its attempts."""

    by: str = ""
    at: datetime | None = None
    reason: str = ""


class BuyerModel(Strict):
    id: Id
    name: str = ""
    enabled: bool = True
    paused: PausedModel | None = None
    ping: PingModel | None = None
    post: PostModel
    # A fixed-price buyer takes a direct post at this price, without a ping.
    fixed_price: Money | None = None
    caps: CapsModel = CapsModel()
    budgets: BudgetsModel = BudgetsModel()
    prepaid: BalanceModel | None = None
    timezone: str = "UTC"
    priority: int = 0
    # Do not offer this buyer a consumer it already bought within this many days.
    dedupe_days: int = Field(default=0, ge=0, le=3650)
    # Acceptance criteria in the rule language; a filtered buyer is not pinged.
    filter: dict[str, Any] | None = None
    # Requirements on top of the filter (consent evidence): a lead that fails one is not pinged.
    requires: RequiresModel | None = None
    schedule: ScheduleModel | None = None
    # How fast the buyer pays, for the `score` ranking.
    payment_days: int = Field(default=30, ge=0, le=365)
    # Revenue rules on top of the bid or fixed price (all evaluated, last match wins).
    pricing: list[PriceRuleModel] = []
    breaker: BreakerModel = BreakerModel()
    # Send W3C `traceparent` to this buyer, so its own tracing joins our trace.
    trace_context: bool = False
    # No `returns`: the buyer cannot return leads.
    returns: ReturnsModel | None = None
    # The lead types it buys (default: the default type).
    lead_types: list[Id] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _ping_or_fixed(self) -> BuyerModel:
        if (self.ping is None) == (self.fixed_price is None):
            raise ValueError("give either `ping` (a bidding buyer) or `fixed_price` (direct post), not both")
        return self


class TierModel(Strict):
    name: Id
    buyers: list[Id] = Field(min_length=1)
    # auction: ping in parallel, best first; waterfall: offer one by one, first acceptance wins.
    mode: TierMode = "auction"
    # Default: by bid in an auction, by priority in a waterfall.
    order: TierOrder | None = None
    # Replaces the flow's floor for this tier (e.g. a catch-all that buys at a minimum price).
    floor: Money | None = None
    # For `order: weighted`: buyer id → weight (default 1).
    weights: dict[Id, Annotated[int, Field(ge=1, le=1000)]] = {}


class DedupeModel(Strict):
    # The fields that identify a consumer (hashed, never stored in clear); default: the lead
    # type's `identity_fields`.
    fields: list[str] | None = Field(default=None, min_length=1)
    # Reject a repeat of the same consumer into this flow within this many days; 0 keeps only
    # the per-buyer check (`buyers[].dedupe_days`).
    days: int = Field(default=30, ge=0, le=3650)


class QualityStepModel(Strict):
    when: dict[str, Any]
    multiplier: Money


class BusinessHoursModel(ScheduleModel):
    multiplier: Money


class DynamicFloorModel(Strict):
    quality: list[QualityStepModel] = []
    business_hours: BusinessHoursModel | None = None


class ScoreWeightsModel(Strict):
    price: Money = Decimal("0.5")
    acceptance: Money = Decimal("0.3")
    payment: Money = Decimal("0.2")


class FlowModel(Strict):
    id: Id
    # The one lead type this flow sells (default: the default type).
    lead_type: Id | None = None
    deadline_ms: int = Field(default=750, ge=50, le=10_000)
    # The ping window closes this long before the deadline, so the winner can still be posted.
    post_reserve_ms: int = Field(default=150, ge=0, le=5_000)
    floor: Money = Decimal("0")
    # Sources allowed to sell into this flow; absent means all.
    sources: list[Id] | None = None
    tiers: list[TierModel] = Field(min_length=1)
    dedupe: DedupeModel | None = None
    # all_at_once: ping every tier together, then walk the tiers (lowest latency);
    # tier_by_tier: ping a tier only when the ones above found no acceptable bid.
    ping_strategy: Literal["all_at_once", "tier_by_tier"] = "all_at_once"
    # Floor for an exclusive sale (every sale when max_buyers is 1).
    exclusive_floor: Money | None = None
    dynamic_floor: DynamicFloorModel = DynamicFloorModel()
    # Shared sale: sell to up to this many buyers when that earns more than the best exclusive bid.
    max_buyers: int = Field(default=1, ge=1, le=20)
    ranking: Ranking = "price"
    score_weights: ScoreWeightsModel = ScoreWeightsModel()
    # The lead field that records consent, for bids conditioned on it.
    consent_field: str | None = None
    # A per-lead processing fee booked as cost (e.g. a verification charge).
    fee: Money = Decimal("0")
    # Margin protection: a bid that would earn less than this is not taken.
    min_margin: Annotated[Decimal, BeforeValidator(_money), Field(allow_inf_nan=False)] | None = None


class ServerModel(Strict):
    max_message_bytes: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    verify_buyer_tls: bool = True


class ConfigModel(Strict):
    # One lead type (`lead`, whose id is "default"), several (`lead_types`), or both.
    lead: LeadModel | None = None
    lead_types: list[LeadTypeModel] = []
    sources: list[SourceModel] = Field(min_length=1)
    buyers: list[BuyerModel] = Field(min_length=1)
    flows: list[FlowModel] = Field(min_length=1)
    max_price: Money = Decimal("10000")
    server: ServerModel = ServerModel()

    @model_validator(mode="after")
    def _some_lead_type(self) -> ConfigModel:
        if self.lead is None and not self.lead_types:
            raise ValueError("give `lead` (the fields of a lead) or `lead_types` (one entry per vertical)")
        return self

    def types(self) -> dict[str, tuple[str, LeadModel]]:
        """Every lead type by id, with its path in the file; the first is the default type."""
        out: dict[str, tuple[str, LeadModel]] = {}
        if self.lead is not None:
            out[DEFAULT_LEAD_TYPE] = ("lead", self.lead)
        for i, t in enumerate(self.lead_types):
            out.setdefault(t.id, (f"lead_types[{i}]", t))
        return out

    @property
    def default_type(self) -> str:
        return next(iter(self.types()))


LeadModel.model_rebuild()
LeadTypeModel.model_rebuild()
ConfigModel.model_rebuild()
