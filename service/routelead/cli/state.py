"""`routelead unsettled | settle | balance`: operations on the hot state.

With REDIS_URL, on Redis directly. Without it (the embedded default), through the running
service's StateAdmin API: its memory holds the controls and is the only writer of the copy kept
beside the books, so the file is never edited under it (connection options as `routelead admin`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from routelead.api.admin_channel import add_connection_options
from routelead.cli.common import fail, over_admin_api

if TYPE_CHECKING:
    from routelead.settings import Settings


def add_parsers(sub: Any, settings: Settings) -> None:
    ls = sub.add_parser(
        "unsettled", help="list reservations whose outcome is unknown (they still count against caps)"
    )
    ls.add_argument(
        "--older-than", type=float, default=30.0, help="also list never-settled reservations this old (s)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(state_command="unsettled", run=run)
    add_connection_options(ls, settings)

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
    st.set_defaults(state_command="settle", run=run)
    add_connection_options(st, settings)

    bal = sub.add_parser("balance", help="show a prepaid buyer's balance, or top it up")
    bal.add_argument("buyer")
    bal.add_argument("--top-up", metavar="AMOUNT", help='add this amount (a decimal, e.g. "500.00")')
    bal.set_defaults(state_command="balance", run=run)
    add_connection_options(bal, settings)

    sup = sub.add_parser(
        "suppress",
        help="change suppression lists (phones, e-mails, ZIPs, domains) of the running service",
        description="Entries are hashed by the service (its dedupe key) and never stored or shown "
        "in clear. A global list refuses a lead; a --buyer list skips that buyer.",
    )
    sup.add_argument("action", choices=["add", "remove", "load", "list"])
    sup.add_argument("values", nargs="*", help="entries (add, remove), or FILE (load: one entry a line)")
    sup.add_argument("--list", dest="list_name", default="", help="the list's name, e.g. dnc")
    sup.add_argument("--buyer", default="", help="a buyer's own list (default: a global list)")
    sup.add_argument("--kind", choices=["phone", "email", "zip", "domain"], help="default: recognised")
    sup.set_defaults(state_command="suppress", run=run)
    add_connection_options(sup, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from routelead.state.select import StateConfigError, dedupe_secret, redis_url

    if args.state_command == "suppress":
        if args.action == "load":
            if len(args.values) != 1:
                fail("suppress load: give one FILE (one entry a line)")
                return 2
            try:
                with open(args.values[0], encoding="utf-8") as f:
                    lines = [ln.strip() for ln in f]
            except OSError as exc:
                fail(f"suppress load: {args.values[0]}: {exc.strerror}")
                return 2
            args.values = [ln for ln in lines if ln and not ln.startswith("#")]
        # Always through the service: it holds the key that hashes the entries.
        return _run_over_api(args, None, settings)
    url = redis_url(settings)
    amount: Decimal | None = None
    if getattr(args, "top_up", None) is not None:
        try:
            amount = Decimal(args.top_up)
        except InvalidOperation:
            fail(f"--top-up: not an amount: {args.top_up!r}")
            return 2
        if not amount.is_finite():
            fail("--top-up: not an amount")
            return 2
    if not url:
        return _run_over_api(args, amount, settings)
    try:
        secret = dedupe_secret(settings) or b"-" * 16  # no dedupe here; any key will do
    except StateConfigError as exc:
        fail(str(exc))
        return 2
    return asyncio.run(_run(url, secret, args, amount, settings))


async def _run(
    url: str, secret: bytes, args: argparse.Namespace, amount: Decimal | None, settings: Settings
) -> int:
    from routelead.state.redis import connect

    # Operations are not on a lead's clock: a generous timeout.
    state = connect(url, secret, op_timeout_s=5.0, cluster=settings.redis_cluster)
    try:
        match args.state_command:
            case "unsettled":
                for u in await state.caps.list_unsettled(args.older_than):
                    _print_unsettled(
                        u.buyer_id, u.reservation_id, u.lead_id, str(u.amount), u.reserved_at, u.state,
                        u.reason, as_json=args.json,
                    )  # fmt: skip
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
        fail(f"{exc}: nothing to book")
    finally:
        await ledger.close()
    done = await state.caps.settle(buyer, reservation, accepted=confirm)
    if not done and not booked:
        fail(f"no open reservation {reservation} for {buyer}")
        return 1
    what = "confirmed as a sale" if confirm else "freed"
    print(f"{reservation}: {what}" + (f"; books: lead {lead_id} {booked}" if booked else ""))
    return 0


def _print_unsettled(
    buyer: str,
    reservation: str,
    lead_id: str,
    amount: str,
    at: float,
    state: str,
    reason: str,
    *,
    as_json: bool,
) -> None:
    row = {
        "buyer": buyer,
        "reservation": reservation,
        "lead_id": lead_id,
        "amount": amount,
        "reserved_at": datetime.fromtimestamp(at, UTC).isoformat(),
        "state": state,
        "reason": reason,
    }
    if as_json:
        print(orjson.dumps(row).decode())
    else:
        print("  ".join(str(v) for v in row.values()))


def _settled(args: argparse.Namespace, done: bool) -> int:
    if not done:
        fail(f"no open reservation {args.reservation} for {args.buyer}")
        return 1
    print(f"{args.reservation}: {'confirmed as a sale' if args.confirm else 'freed'}")
    return 0


def _run_over_api(args: argparse.Namespace, amount: Decimal | None, settings: Settings) -> int:
    """No REDIS_URL: the controls are in the running service's memory; ask it (StateAdmin)."""
    hint = (
        ": without REDIS_URL this asks the running `routelead serve` at "
        f"{args.target} (--target), through its admin API"
    )
    return over_admin_api(settings, lambda token: _call(args, token, amount), target=args.target, hint=hint)


async def _call(args: argparse.Namespace, token: str, amount: Decimal | None) -> int:
    from routelead.api.admin_channel import admin_channel
    from routelead.v1 import state_admin_pb2 as pb
    from routelead.v1 import state_admin_pb2_grpc as pb_grpc

    meta = (("authorization", f"Bearer {token}"),)
    async with admin_channel(args) as channel:
        stub = pb_grpc.StateAdminStub(channel)
        match args.state_command:
            case "unsettled":
                listed = await stub.ListUnsettled(
                    pb.ListUnsettledRequest(older_than_s=args.older_than), metadata=meta, timeout=30
                )
                for u in listed.reservations:
                    _print_unsettled(
                        u.buyer_id, u.reservation_id, u.lead_id, u.amount, u.reserved_at, u.state, u.reason,
                        as_json=args.json,
                    )  # fmt: skip
                return 0
            case "settle":
                request = pb.SettleRequest(
                    buyer_id=args.buyer, reservation_id=args.reservation, confirm=args.confirm
                )
                settled = await stub.Settle(request, metadata=meta, timeout=30)
                return _settled(args, settled.settled)
            case "balance":
                if amount is not None:
                    top_up = pb.TopUpRequest(buyer_id=args.buyer, amount=str(amount))
                    shown = await stub.TopUp(top_up, metadata=meta, timeout=30)
                else:
                    asked = pb.BalanceRequest(buyer_id=args.buyer)
                    shown = await stub.GetBalance(asked, metadata=meta, timeout=30)
                print(shown.balance)
                return 0
            case "suppress":
                return await _suppress(stub, args, meta)
    return 2


# Entries per ChangeSuppression call of `suppress load`: well under the message size limit.
LOAD_BATCH = 5000


async def _suppress(stub: Any, args: argparse.Namespace, meta: tuple[tuple[str, str], ...]) -> int:
    from routelead.v1 import state_admin_pb2 as pb

    if args.action == "list":
        listed = await stub.ListSuppression(pb.ListSuppressionRequest(), metadata=meta, timeout=30)
        for s in listed.lists:
            print(f"{s.list}  {s.buyer_id or '(global)'}  {s.entries}")
        return 0
    if not args.list_name:
        fail("suppress: --list NAME is required")
        return 2
    values = list(args.values)
    if not values:
        fail("suppress: no entries given")
        return 2
    changed = 0
    for i in range(0, len(values), LOAD_BATCH):
        request = pb.ChangeSuppressionRequest(
            list=args.list_name,
            buyer_id=args.buyer,
            values=values[i : i + LOAD_BATCH],
            remove=args.action == "remove",
            kind=args.kind or "",
        )
        try:
            done = await stub.ChangeSuppression(request, metadata=meta, timeout=60)
        except Exception as exc:
            import grpc

            if isinstance(exc, grpc.aio.AioRpcError) and i:
                # Say how far it got: the batches before this one are in.
                print(
                    f"routelead: entries {i + 1}..: {exc.details()} ({changed} changed before)",
                    file=sys.stderr,
                )
                return 1
            raise
        changed += done.changed
    whose = f"buyer {args.buyer}'s list" if args.buyer else "global list"
    verb = "removed from" if args.action == "remove" else "added to"
    print(f"{changed} of {len(values)} entries {verb} {whose} {args.list_name}")
    return 0
