"""`routelead stats`: GetStats from the command line as readable tables (token from ROUTELEAD_ADMIN_TOKEN)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from routelead.api.admin_channel import add_connection_options, admin_channel
from routelead.cli.common import over_admin_api, table
from routelead.v1 import stats_pb2 as pb

if TYPE_CHECKING:
    from routelead.settings import Settings

_BUYER_COLUMNS = (
    "buyer", "pings", "bids", "bid%", "avg bid", "wins", "win%", "posts", "accept%",
    "p50 ms", "p95 ms", "p99 ms", "timeouts", "errors", "revenue", "disputes",
)  # fmt: skip
_MONEY_COLUMNS = ("leads", "sold", "rev/ping", "cost", "revenue", "margin", "margin %")
_SUPPLIER_COLUMNS = ("supplier", "quotes", "offers", "won", "lost", "expired", "win%", "ping:post")


def add_parsers(sub: Any, settings: Settings) -> None:
    stats = sub.add_parser("stats", help="buyer performance and flow/source money from the ledger")
    add_connection_options(stats, settings)
    stats.add_argument("--window", choices=("last_hour", "today", "range"), default="last_hour")
    stats.add_argument("--from", dest="from_date", default="", help="YYYY-MM-DD (with --window range)")
    stats.add_argument("--to", dest="to_date", default="", help="YYYY-MM-DD, included")
    stats.add_argument("--by-day", action="store_true", help="one table per day of the range")
    stats.add_argument("--tz", default="", help="IANA timezone for today and dates (default UTC)")
    stats.add_argument("--buyer", default="")
    stats.add_argument("--flow", default="")
    stats.add_argument("--source", default="")
    stats.add_argument("--lead-type", default="", help="only this lead type (vertical)")
    stats.set_defaults(run=run)


def request(args: argparse.Namespace) -> pb.GetStatsRequest:
    return pb.GetStatsRequest(
        window=args.window,
        from_date=args.from_date,
        to_date=args.to_date,
        by_day=args.by_day,
        timezone=args.tz,
        buyer_id=args.buyer,
        flow=args.flow,
        source_id=args.source,
        lead_type=args.lead_type,
    )


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    async def show(token: str) -> int:
        response = await _call(args, request(args), token)
        (out or sys.stdout).write(render(response))
        return 0

    return over_admin_api(settings, show)


async def _call(args: argparse.Namespace, req: pb.GetStatsRequest, token: str) -> pb.GetStatsResponse:
    from routelead.v1 import stats_pb2_grpc as pb_grpc

    async with admin_channel(args) as channel:
        got: pb.GetStatsResponse = await pb_grpc.StatsStub(channel).GetStats(
            req, metadata=(("authorization", f"Bearer {token}"),), timeout=30
        )
        return got


def _pct(rate: str) -> str:
    return f"{float(rate) * 100:.1f}"


def render(response: pb.GetStatsResponse) -> str:
    parts: list[str] = []
    for w in response.windows:
        parts.append(f"== {w.label}  [{w.since} .. {w.until})\n")
        buyers = [
            (
                b.buyer_id,
                str(b.pings),
                str(b.bids),
                _pct(b.bid_rate),
                b.avg_bid,
                str(b.wins),
                _pct(b.win_rate),
                str(b.posts),
                _pct(b.post_accept_rate),
                f"{b.p50_ms:.0f}",
                f"{b.p95_ms:.0f}",
                f"{b.p99_ms:.0f}",
                str(b.timeouts),
                str(b.errors),
                b.revenue,
                str(b.price_disputes),
            )
            for b in w.buyers
        ]
        parts.append(table(_BUYER_COLUMNS, buyers) if buyers else "(no buyer activity)\n")
        money = [("flow", w.flows), ("source", w.sources)]
        if len(w.lead_types) > 1:
            money.append(("lead type", w.lead_types))  # a deployment of one vertical: nothing to cut
        for name, rows in money:
            body = [
                (
                    m.key,
                    str(m.leads),
                    str(m.sold),
                    m.revenue_per_ping,
                    m.cost,
                    m.revenue,
                    m.margin,
                    m.margin_pct,
                )
                for m in rows
            ]
            parts.append("\n" + (table((name, *_MONEY_COLUMNS), body) if body else f"(no {name} activity)\n"))
        quoted = [
            (
                q.source_id,
                str(q.quotes),
                str(q.offers),
                str(q.won),
                str(q.lost),
                str(q.expired),
                _pct(q.win_rate),
                q.ping_post_ratio,
            )
            for q in w.suppliers
        ]
        if quoted:  # inbound ping-post: only when a supplier asked for quotes
            parts.append("\n" + table(_SUPPLIER_COLUMNS, quoted))
        parts.append("\n")
    return "".join(parts)
