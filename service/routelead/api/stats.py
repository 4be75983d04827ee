"""The routelead.v1.Stats service: the ledger's reports over gRPC, behind the admin token."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Any, NoReturn, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from routelead.api.admin import require_admin
from routelead.records.reports import BuyerReport, MoneyReport, Reports, SupplierReport, Window, windows
from routelead.v1 import stats_pb2 as pb
from routelead.v1 import stats_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Stats"].full_name
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def buyer_pb(b: BuyerReport) -> pb.BuyerStats:
    return pb.BuyerStats(
        buyer_id=b.buyer_id,
        pings=b.pings,
        bids=b.bids,
        bid_rate=str(b.bid_rate),
        avg_bid=str(b.avg_bid),
        wins=b.wins,
        win_rate=str(b.win_rate),
        posts=b.posts,
        accepted=b.accepted,
        post_accept_rate=str(b.post_accept_rate),
        p50_ms=b.p50_ms,
        p95_ms=b.p95_ms,
        p99_ms=b.p99_ms,
        timeouts=b.timeouts,
        errors=b.errors,
        revenue=str(b.revenue),
        price_disputes=b.price_disputes,
    )


def money_pb(m: MoneyReport) -> pb.MoneyStats:
    return pb.MoneyStats(
        key=m.key,
        leads=m.leads,
        sold=m.sold,
        revenue_per_ping=str(m.revenue_per_ping),
        cost=str(m.cost),
        revenue=str(m.revenue),
        margin=str(m.margin),
        margin_pct=str(m.margin_pct),
    )


def supplier_pb(s: SupplierReport) -> pb.SupplierStats:
    return pb.SupplierStats(
        source_id=s.source_id,
        quotes=s.quotes,
        offers=s.offers,
        won=s.won,
        lost=s.lost,
        expired=s.expired,
        win_rate=str(s.win_rate),
        ping_post_ratio=str(s.ping_post_ratio),
    )


class StatsServicer(pb_grpc.StatsServicer):
    def __init__(self, reports: Reports, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self._reports = reports
        self._expected = f"Bearer {token}".encode()

    def register(self, server: grpc.aio.Server) -> str:
        pb_grpc.add_StatsServicer_to_server(self, server)
        return SERVICE_NAME

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        await require_admin(context, self._expected)
        try:
            asked = _windows(request)
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        out = pb.GetStatsResponse()
        for w in asked:
            out.windows.append(await self._window(w, request))
        return out

    async def _window(self, w: Window, request: pb.GetStatsRequest) -> pb.WindowStats:
        r = self._reports
        return pb.WindowStats(
            label=w.label,
            since=w.since.astimezone(UTC).isoformat(),
            until=w.until.astimezone(UTC).isoformat(),
            buyers=[buyer_pb(b) for b in await r.buyers(w, request.buyer_id or None)],
            flows=[money_pb(m) for m in await r.money("flow", w, request.flow or None)],
            sources=[money_pb(m) for m in await r.money("source", w, request.source_id or None)],
            lead_types=[money_pb(m) for m in await r.money("lead_type", w, request.lead_type or None)],
            suppliers=[supplier_pb(s) for s in await r.suppliers(w, request.source_id or None)],
        )


def _windows(request: pb.GetStatsRequest) -> list[Window]:
    tz: tzinfo = UTC
    if request.timezone:
        try:
            tz = ZoneInfo(request.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {request.timezone!r}: not an IANA zone name") from None

    def day(name: str, text: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} {text!r}: use YYYY-MM-DD") from None

    return windows(
        request.window,
        datetime.now(UTC),
        first=day("from_date", request.from_date),
        last=day("to_date", request.to_date),
        split_by_day=request.by_day,
        tz=tz,
    )


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")
