"""routelead.v1.StateAdmin: unsettled sales, prepaid balances and circuit breakers, for operators."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc

from routelead.api.admin import require_admin
from routelead.domain.money import fmt
from routelead.domain.suppression import KINDS, digest, entry
from routelead.records.ledger import Ledger
from routelead.state.ports import CapStore, SuppressionStore
from routelead.v1 import state_admin_pb2 as pb
from routelead.v1 import state_admin_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StateAdmin"].full_name
Context = Any


class StateAdminServicer(pb_grpc.StateAdminServicer):
    def __init__(
        self,
        caps: CapStore,
        breakers: Callable[[], dict[str, str]],
        token: str,
        ledger: Ledger | None = None,
        suppression: SuppressionStore | None = None,
        fingerprint: Callable[[list[str]], str] | None = None,
    ) -> None:
        self._suppression = suppression
        self._fingerprint = fingerprint
        self._caps = caps
        self._breakers = breakers
        self._expected = f"Bearer {token}".encode()
        self._ledger = ledger

    def register(self, server: grpc.aio.Server) -> str:
        pb_grpc.add_StateAdminServicer_to_server(self, server)
        return SERVICE_NAME

    async def ListUnsettled(
        self, request: pb.ListUnsettledRequest, context: Context
    ) -> pb.ListUnsettledResponse:
        await require_admin(context, self._expected)
        found = await self._caps.list_unsettled(older_than_s=max(0.0, request.older_than_s))
        return pb.ListUnsettledResponse(
            reservations=[
                pb.UnsettledReservation(
                    buyer_id=u.buyer_id,
                    reservation_id=u.reservation_id,
                    lead_id=u.lead_id,
                    amount=fmt(u.amount),
                    reserved_at=u.reserved_at,
                    state=u.state,
                    reason=u.reason,
                )
                for u in found
            ]
        )

    async def Settle(self, request: pb.SettleRequest, context: Context) -> pb.SettleResponse:
        await require_admin(context, self._expected)
        pending = {u.reservation_id: u for u in await self._caps.list_unsettled(older_than_s=0.0)}
        known = pending.get(request.reservation_id)
        books = ""
        if self._ledger is not None:
            # The books first, so a database that refuses leaves the reservation open to retry:
            # a confirmed post is booked as a sale at its intent's price (records/intents.py).
            hint = known.lead_id if known is not None and known.buyer_id == request.buyer_id else ""
            try:
                _, books = await self._ledger.settle_reservation(
                    request.buyer_id, request.reservation_id, request.confirm, hint
                )
            except LookupError:
                books = ""  # no post of it on the books: it never left, nothing to book
        settled = await self._caps.settle(request.buyer_id, request.reservation_id, accepted=request.confirm)
        return pb.SettleResponse(settled=settled, ledger=books)

    async def GetBalance(self, request: pb.BalanceRequest, context: Context) -> pb.BalanceResponse:
        await require_admin(context, self._expected)
        balance = await self._caps.balance(request.buyer_id)
        return pb.BalanceResponse(buyer_id=request.buyer_id, balance=fmt(balance))

    async def TopUp(self, request: pb.TopUpRequest, context: Context) -> pb.BalanceResponse:
        await require_admin(context, self._expected)
        try:
            amount = Decimal(request.amount)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not request.buyer_id or not amount.is_finite():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                'buyer_id: required; amount: a decimal string such as "100.00"',
            )
        balance = await self._caps.top_up(request.buyer_id, amount)
        return pb.BalanceResponse(buyer_id=request.buyer_id, balance=fmt(balance))

    async def ListBreakers(
        self, request: pb.ListBreakersRequest, context: Context
    ) -> pb.ListBreakersResponse:
        await require_admin(context, self._expected)
        return pb.ListBreakersResponse(
            breakers=[pb.BreakerState(buyer_id=b, state=s) for b, s in sorted(self._breakers().items())]
        )

    async def ChangeSuppression(
        self, request: pb.ChangeSuppressionRequest, context: Context
    ) -> pb.ChangeSuppressionResponse:
        await require_admin(context, self._expected)
        if self._suppression is None or self._fingerprint is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "this service keeps no suppression lists"
            )
        assert self._suppression is not None and self._fingerprint is not None
        problems = []
        if not _LIST.match(request.list):
            problems.append("list: 1-64 letters, digits and . _ -")
        if request.kind and request.kind not in KINDS:
            problems.append(f"kind: one of {', '.join(KINDS)}")
        digests = []
        for i, value in enumerate(request.values):
            try:
                digests.append(digest(self._fingerprint, *entry(value, request.kind or None)))
            except ValueError as exc:
                # Which entry and why, never the value: list entries are PII.
                problems.append(f"values[{i}]: {exc}")
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems[:20]))
        changed = await self._suppression.change(
            request.list, request.buyer_id, digests, add=not request.remove
        )
        return pb.ChangeSuppressionResponse(changed=changed)

    async def ListSuppression(
        self, request: pb.ListSuppressionRequest, context: Context
    ) -> pb.ListSuppressionResponse:
        await require_admin(context, self._expected)
        sizes = await self._suppression.sizes() if self._suppression is not None else {}
        return pb.ListSuppressionResponse(
            lists=[
                pb.SuppressionList(list=name, buyer_id=buyer, entries=n)
                for (name, buyer), n in sorted(sizes.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            ]
        )


_LIST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
