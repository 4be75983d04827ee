"""Domain results to protobuf messages; money as decimal strings."""

from __future__ import annotations

from routelead.domain.money import fmt
from routelead.domain.outcome import Outcome, RoutingResult, Status
from routelead.v1 import routelead_pb2 as pb

_OUTCOME = {o: pb.Outcome.Value(o.value) for o in Outcome}
_STATUS = {s: pb.AttemptStatus.Value(s.value) for s in Status}


def to_proto(r: RoutingResult) -> pb.RouteLeadResponse:
    return pb.RouteLeadResponse(
        lead_id=r.lead_id,
        outcome=_OUTCOME[r.outcome],
        sales=[
            pb.Sale(
                buyer_id=s.buyer_id,
                price=fmt(s.price),
                buyer_lead_id=s.buyer_lead_id,
                exclusive=s.exclusive,
                tier=s.tier,
                cost=fmt(s.cost),
                margin=fmt(s.margin),
                stated_price=fmt(s.stated_price) if s.stated_price is not None else "",
            )
            for s in r.sales
        ],
        cost=fmt(r.cost),
        revenue=fmt(r.revenue),
        margin=fmt(r.margin),
        attempts=[
            pb.Attempt(
                buyer_id=a.buyer_id,
                tier=a.tier,
                status=_STATUS[a.status],
                price=fmt(a.price) if a.price is not None else "",
                ping_ms=round(a.ping_ms, 3),
                post_ms=round(a.post_ms, 3),
                reason=a.reason,
                http_status=a.http_status,
                unsettled=a.unsettled,
            )
            for a in r.attempts
        ],
        trace_id=r.trace_id,
        test=r.test,
        replayed=r.replayed,
        flow=r.flow,
        source_id=r.source_id,
        elapsed_ms=round(r.elapsed_ms, 3),
        negative_margin=r.negative_margin,
        reason=r.reason,
        checks=[
            pb.ComplianceCheck(name=c.name, kind=c.kind, result=c.result, detail=c.detail, ms=round(c.ms, 3))
            for c in r.checks
        ],
    )
