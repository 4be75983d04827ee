"""`routelead-client stats`: buyer performance and flow / source money as tables (or --json)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TextIO

from routelead_client.admin import RouteLeadAdmin
from routelead_client.cli_common import PROG, LocalError, admin_token, credentials, to_json
from routelead_client.errors import RouteLeadError
from routelead_client.stats import MoneyStats, WindowStats

_BUYER_COLUMNS = (
    "buyer", "pings", "bids", "bid%", "avg bid", "wins", "win%", "posts", "accept%",
    "p50 ms", "p95 ms", "p99 ms", "timeouts", "errors", "revenue",
)  # fmt: skip
_SUPPLIER_COLUMNS = ("supplier", "quotes", "offers", "won", "lost", "expired", "win%", "ping:post")
_MONEY_COLUMNS = ("leads", "sold", "rev/ping", "cost", "revenue", "margin", "margin %")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use YYYY-MM-DD") from None


def add_parser(sub: Any, connection: argparse.ArgumentParser) -> None:
    stats = sub.add_parser(
        "stats",
        parents=[connection],
        help="buyer performance and flow / source money (needs the admin token)",
    )
    stats.add_argument(
        "--window",
        choices=("last_hour", "today", "range"),
        help="default last_hour, or range when --from / --to are given",
    )
    stats.add_argument("--from", dest="from_date", type=_day, help="YYYY-MM-DD (with --window range)")
    stats.add_argument("--to", dest="to_date", type=_day, help="YYYY-MM-DD, included")
    stats.add_argument("--by-day", action="store_true", help="one window per day of the range")
    stats.add_argument("--tz", help="IANA timezone for today and dates (default UTC)")
    stats.add_argument("--buyer", help="only this buyer")
    stats.add_argument("--flow", help="only this flow")
    stats.add_argument("--source", help="only this source")
    stats.add_argument("--token-file", help="file holding the admin token (else ROUTELEAD_ADMIN_TOKEN)")
    stats.add_argument("--json", action="store_true", help="print JSON (money as decimal strings)")


def _window(args: argparse.Namespace) -> str:
    dated = args.from_date or args.to_date
    window: str = args.window or ("range" if dated else "last_hour")
    if window == "range" and not (args.from_date and args.to_date):
        raise LocalError("--window range needs --from and --to")
    if window != "range" and dated:
        raise LocalError(f"--from / --to need --window range, not {window}")
    return window


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        window = _window(args)
        token, creds = admin_token(args), credentials(args)
    except LocalError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    with RouteLeadAdmin(args.target, token=token, credentials=creds, timeout_s=args.timeout) as admin:
        try:
            windows = admin.stats(
                window,
                from_date=args.from_date,
                to_date=args.to_date,
                by_day=args.by_day,
                tz=args.tz,
                buyer=args.buyer,
                flow=args.flow,
                source=args.source,
            )
        except RouteLeadError as exc:
            print(f"{PROG}: {exc}", file=err)
            return 1
    out.write(to_json({"windows": windows}) + "\n" if args.json else render(windows))
    return 0


def _pct(rate: Decimal) -> str:
    return str((rate * 100).quantize(Decimal("0.1"), ROUND_HALF_UP))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, widths from the content."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)]) + "\n"


def _money_rows(rows: Sequence[MoneyStats]) -> list[tuple[str, ...]]:
    return [
        (m.key, str(m.leads), str(m.sold), str(m.revenue_per_ping), str(m.cost), str(m.revenue),
         str(m.margin), str(m.margin_pct))
        for m in rows
    ]  # fmt: skip


def render(windows: Sequence[WindowStats]) -> str:
    parts: list[str] = []
    for w in windows:
        parts.append(f"== {w.label}  [{w.since.isoformat()} .. {w.until.isoformat()})\n")
        buyers = [
            (b.buyer_id, str(b.pings), str(b.bids), _pct(b.bid_rate), str(b.avg_bid), str(b.wins),
             _pct(b.win_rate), str(b.posts), _pct(b.post_accept_rate), f"{b.p50_ms:.0f}", f"{b.p95_ms:.0f}",
             f"{b.p99_ms:.0f}", str(b.timeouts), str(b.errors), str(b.revenue))
            for b in w.buyers
        ]  # fmt: skip
        parts.append(table(_BUYER_COLUMNS, buyers) if buyers else "(no buyer activity)\n")
        cuts = [("flow", w.flows), ("source", w.sources)]
        if len(w.lead_types) > 1:
            cuts.append(("lead type", w.lead_types))  # a deployment of one vertical: nothing to cut
        for name, money in cuts:
            rows = _money_rows(money)
            parts.append("\n" + (table((name, *_MONEY_COLUMNS), rows) if rows else f"(no {name} activity)\n"))
        quoted = [
            (q.source_id, str(q.quotes), str(q.offers), str(q.won), str(q.lost), str(q.expired),
             _pct(q.win_rate), str(q.ping_post_ratio))
            for q in w.suppliers
        ]  # fmt: skip
        if quoted:  # inbound ping-post: only when a supplier asked for quotes
            parts.append("\n" + table(_SUPPLIER_COLUMNS, quoted))
        parts.append("\n")
    return "".join(parts)
