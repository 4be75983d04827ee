"""`routelead lead | report | return | settle-sale | open-posts`: the books from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from routelead.cli.common import fail, load, when
from routelead.domain.money import fmt
from routelead.records.returns import ReturnRefused, policy_for

if TYPE_CHECKING:  # the SQL stack loads only for these commands, not for every CLI start
    from routelead.records.ledger import LeadStory, Ledger
    from routelead.settings import Settings

# `routelead return`: the sale had been returned before; nothing was booked this time.
EXIT_ALREADY_RETURNED = 3
_LEAD_ID_HELP = "a lead id, or a unique prefix of one (at least 4 characters), as git takes commits"


def add_parsers(sub: Any, settings: Settings) -> None:
    lead = sub.add_parser("lead", help='the books on one lead: "who got it and why"')
    lead.add_argument("lead_id", help=_LEAD_ID_HELP)
    lead.set_defaults(run=_lead)

    report = sub.add_parser(
        "report", help="gross and net money by source, buyer, flow or lead type over a period"
    )
    report.add_argument("--by", choices=["source", "buyer", "flow", "lead_type"], default="source")
    report.add_argument("--since", help="ISO date or time, UTC (default: 24 hours ago)")
    report.add_argument("--until", help="ISO date or time, UTC (default: now)")
    report.set_defaults(run=_report)

    ret = sub.add_parser("return", help="a buyer returns a sold lead (checked against its terms)")
    ret.add_argument("lead_id", help=_LEAD_ID_HELP)
    ret.add_argument("buyer_id")
    ret.add_argument("--reason", required=True)
    ret.add_argument("--config", default=settings.config, help="for the buyer's return terms")
    ret.set_defaults(run=_return)

    # `settle` (cli/state.py) closes the cap reservation in Redis; this settles the books.
    settle = sub.add_parser("settle-sale", help="in the books: resolve a sale whose post outcome was unknown")
    settle.add_argument("lead_id", help=_LEAD_ID_HELP)
    settle.add_argument("buyer_id")
    settle.add_argument("outcome", choices=["sold", "rejected"])
    settle.set_defaults(run=_settle_sale)

    posts = sub.add_parser(
        "open-posts",
        help="posts whose outcome the books do not know (the process stopped mid-post): settle each "
        "with settle-sale",
    )
    posts.add_argument("--older-than", type=float, default=0.0, help="offered at least this long ago (s)")
    posts.add_argument("--json", action="store_true", help="one JSON object per line")
    posts.set_defaults(run=_open_posts)


def _with_ledger(settings: Settings, work: Callable[[Ledger], Awaitable[int]]) -> int:
    from routelead.records.db import database_url
    from routelead.records.ledger import Ledger

    async def go() -> int:
        ledger = await Ledger.open(database_url(settings))
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    return asyncio.run(go())


def _lead(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    async def show(ledger: Ledger) -> int:
        try:
            lead_id = await ledger.resolve(args.lead_id)
        except LookupError as exc:
            fail(exc.args[0])
            return 1
        print_story(await ledger.lead(lead_id), out or sys.stdout)
        return 0

    return _with_ledger(settings, show)


def _report(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    until = when(args.until) if args.until else datetime.now(UTC)
    since = when(args.since) if args.since else until - timedelta(days=1)

    async def report(ledger: Ledger) -> int:
        rows = await ledger.totals(args.by, since, until)
        print(
            f"{args.by:<16} {'sales':>6} {'returns':>7} {'gross rev':>11} {'net rev':>11} "
            f"{'gross cost':>11} {'net cost':>11} {'net margin':>11} {'disputes':>8}",
            file=out,
        )
        for t in rows:
            print(
                f"{t.key or '-':<16} {t.sales:>6} {t.returns:>7} {fmt(t.gross_revenue):>11} "
                f"{fmt(t.net_revenue):>11} {fmt(t.gross_cost):>11} {fmt(t.net_cost):>11} "
                f"{fmt(t.net_margin):>11} {t.disputes:>8}",
                file=out,
            )
        return 0

    return _with_ledger(settings, report)


def _return(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    config = load(args.config)

    async def give_back(ledger: Ledger) -> int:
        try:
            lead_id = await ledger.resolve(args.lead_id)
        except LookupError as exc:
            fail(f"return refused: {exc.args[0]}")
            return 1
        story = await ledger.lead(lead_id)
        sale = next((s for s in story.sales if s["buyer_id"] == args.buyer_id), None)
        source = config.sources.get(sale["source_id"]) if sale else None
        refund = bool(source and source.refund_cost_on_return)
        try:
            done = await ledger.return_sale(
                lead_id,
                args.buyer_id,
                args.reason,
                policy_for(config.buyer_returns, refund, args.buyer_id),
            )
        except ReturnRefused as exc:
            fail(f"return refused: {exc}")
            return 1
        if not done["booked"]:
            fail(
                f"lead {lead_id} was already returned by {args.buyer_id} at "
                f"{done['returned_at']:%Y-%m-%d %H:%M:%S} UTC ({done['reason']}); nothing booked"
            )
            return EXIT_ALREADY_RETURNED
        print(
            f"returned: revenue -{fmt(done['revenue_reversed'])}, cost -{fmt(done['cost_reversed'])}",
            file=out,
        )
        return 0

    return _with_ledger(settings, give_back)


def _settle_sale(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    async def settle(ledger: Ledger) -> int:
        try:
            lead_id = await ledger.resolve(args.lead_id)
            now = await ledger.settle(lead_id, args.buyer_id, sold=args.outcome == "sold")
        except LookupError as exc:
            fail(str(exc))
            return 1
        print(f"settlement: {now}", file=out)
        return 0

    return _with_ledger(settings, settle)


def _open_posts(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    import orjson

    async def listing(ledger: Ledger) -> int:
        for i in await ledger.open_intents(args.older_than):
            row = {
                "lead_id": i["lead_id"],
                "buyer": i["buyer_id"],
                "reservation": i["reservation_id"],
                "price": fmt(i["price"]),
                "offered_at": i["offered_at"].isoformat(),
                "state": i["state"],
            }
            print(orjson.dumps(row).decode() if args.json else "  ".join(map(str, row.values())), file=out)
        return 0

    return _with_ledger(settings, listing)


def print_story(story: LeadStory, out: TextIO) -> None:
    if story.lead is not None:
        r = story.lead
        print(
            f"lead {r['lead_id']}  flow {r['flow']}  source {r['source_id']}  config {r['config_version']}"
            f"{'  TEST' if r['test'] else ''}",
            file=out,
        )
        print(
            f"  {r['outcome']}  received {r['received_at']:%Y-%m-%d %H:%M:%S.%f}  {r['elapsed_ms']:.0f} ms  "
            f"cost {fmt(r['cost'])}  revenue {fmt(r['revenue'])}  margin {fmt(r['margin'])}",
            file=out,
        )
        print(f"  ping fields: {r['ping_fields']}", file=out)
        compliance = r.get("compliance") or {}
        if compliance.get("reason"):
            print(f"  refused: {compliance['reason']}", file=out)
        checks = compliance.get("checks") or []
        if not checks:
            print("  compliance checks: none ran", file=out)
        for c in checks:
            facts = ", ".join(f"{k}={v}" for k, v in (c.get("facts") or {}).items())
            print(
                f"  check {c['kind']} {c['name']}: {c['result']} ({c.get('ms', 0):.0f} ms)"
                + (f"  {c['detail']}" if c.get("detail") else "")
                + (f"  [{facts}]" if facts else ""),
                file=out,
            )
    for a in story.attempts:
        bid = fmt(a["bid"]) if a["bid"] is not None else ""
        print(f"    {a['buyer_id']:<12} {a['tier']:<10} {a['status']:<19} {bid:>8}  {a['reason']}", file=out)
    for s in story.sales:
        print(
            f"  sale: {s['buyer_id']} at {fmt(s['price'])} ({s['settlement']}"
            f"{', exclusive' if s['exclusive'] else ''}) buyer's id {s['buyer_lead_id'] or '-'}"
            + (
                f"  PRICE DISPUTE: its post answer stated {fmt(s['stated_price'])}"
                if s.get("stated_price") is not None
                else ""
            ),
            file=out,
        )
    for e in story.returns:
        print(f"  returned by {e['buyer_id']} at {e['returned_at']:%Y-%m-%d %H:%M}: {e['reason']}", file=out)
    for e in story.entries:
        print(f"  entry: {e['kind']:<17} {fmt(e['amount']):>9}  {e['buyer_id'] or '(source)'}", file=out)
