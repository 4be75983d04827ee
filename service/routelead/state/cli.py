"""`routelead unsettled | settle | balance`: operations on the shared hot state (REDIS_URL)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from routelead.settings import Settings


def add_state_commands(sub: Any) -> None:
    ls = sub.add_parser(
        "unsettled", help="list reservations whose outcome is unknown (they still count against caps)"
    )
    ls.add_argument(
        "--older-than", type=float, default=30.0, help="also list never-settled reservations this old (s)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(state_command="unsettled")

    st = sub.add_parser(
        "settle",
        help="close an unsettled reservation and book it (DATABASE_URL / ROUTELEAD_DB): --confirm or --free",
    )
    st.add_argument("buyer")
    st.add_argument("reservation")
    how = st.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--confirm", action="store_true", help="the buyer took it: keep it counted and book the sale"
    )
    how.add_argument("--free", action="store_true", help="the buyer did not take it: give the slot back")
    st.set_defaults(state_command="settle")

    bal = sub.add_parser("balance", help="show a prepaid buyer's balance, or top it up")
    bal.add_argument("buyer")
    bal.add_argument("--top-up", metavar="AMOUNT", help='add this amount (a decimal, e.g. "500.00")')
    bal.set_defaults(state_command="balance")


def run_state_command(args: argparse.Namespace, settings: Settings) -> int:
    from routelead.state.select import StateConfigError, dedupe_secret, redis_url

    url = redis_url(settings)
    if not url:
        print(
            "routelead: set REDIS_URL: without it each `serve` process keeps its state in its own memory",
            file=sys.stderr,
        )
        return 2
    amount: Decimal | None = None
    if getattr(args, "top_up", None) is not None:
        try:
            amount = Decimal(args.top_up)
        except InvalidOperation:
            print(f"routelead: --top-up: not an amount: {args.top_up!r}", file=sys.stderr)
            return 2
        if not amount.is_finite():
            print("routelead: --top-up: not an amount", file=sys.stderr)
            return 2
    try:
        secret = dedupe_secret(settings) or b"-" * 16  # no dedupe here; any key will do
    except StateConfigError as exc:
        print(f"routelead: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(url, secret, args, amount, settings))


async def _run(
    url: str, secret: bytes, args: argparse.Namespace, amount: Decimal | None, settings: Settings
) -> int:
    from routelead.state.redis import connect

    # Operations are not on a lead's clock: a generous timeout.
    state = connect(url, secret, op_timeout_s=5.0)
    try:
        match args.state_command:
            case "unsettled":
                for u in await state.caps.list_unsettled(args.older_than):
                    row = {
                        "buyer": u.buyer_id,
                        "reservation": u.reservation_id,
                        "lead_id": u.lead_id,
                        "amount": str(u.amount),
                        "reserved_at": datetime.fromtimestamp(u.reserved_at, UTC).isoformat(),
                        "state": u.state,
                        "reason": u.reason,
                    }
                    if args.json:
                        print(orjson.dumps(row).decode())
                    else:
                        print("  ".join(str(v) for v in row.values()))
                return 0
            case "settle":
                return await _settle(state, args.buyer, args.reservation, args.confirm, settings)
            case "balance":
                if amount is not None:
                    print(await state.caps.top_up(args.buyer, amount))
                else:
                    print(await state.caps.balance(args.buyer))
                return 0
    finally:
        await state.close()
    return 2


async def _settle(state: Any, buyer: str, reservation: str, confirm: bool, settings: Settings) -> int:
    """The books first (a confirmed sale is booked at its intent's price), then the cap counters:
    a database that refuses leaves the reservation open, so running it again finishes both."""
    from routelead.records.db import database_url
    from routelead.records.ledger import Ledger

    open_ = {u.reservation_id: u for u in await state.caps.list_unsettled(0.0) if u.buyer_id == buyer}
    known = open_.get(reservation)
    ledger = await Ledger.open(database_url(settings))
    try:
        lead_id, booked = await ledger.settle_reservation(
            buyer, reservation, confirm, known.lead_id if known is not None else ""
        )
    except LookupError as exc:
        lead_id, booked = "", ""
        print(f"routelead: {exc}: nothing to book", file=sys.stderr)
    finally:
        await ledger.close()
    done = await state.caps.settle(buyer, reservation, accepted=confirm)
    if not done and not booked:
        print(f"routelead: no open reservation {reservation} for {buyer}", file=sys.stderr)
        return 1
    what = "confirmed as a sale" if confirm else "freed"
    print(f"{reservation}: {what}" + (f"; books: lead {lead_id} {booked}" if booked else ""))
    return 0
