"""routelead.v1.StateAdmin over a real channel: unsettled sales, balances, breakers, the admin token."""

from __future__ import annotations

import grpc
import pytest
from routelead.api.server import Service
from routelead.api.state_admin import StateAdminServicer
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc
from routelead.v1 import state_admin_pb2 as spb
from routelead.v1 import state_admin_pb2_grpc as spb_grpc

from tests.buyers import BuyerServer, bid, hang, respond
from tests.configs import GOOD_LEAD, buyer, compile_doc, document

TOKEN = "state-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def test_operators_settle_unsettled_sales_top_up_and_see_breakers(buyers: BuyerServer) -> None:
    buyers.on("slow", ping=bid(50), post=hang(30))  # the post times out: outcome unknown
    buyers.on("sick", ping=respond({}, status=503))
    doc = document(
        [
            buyer(buyers.url, "slow", caps={"day": 1}, post={"timeout_ms": 200}),
            buyer(buyers.url, "sick", breaker={"failures": 1, "cooldown_s": 60}),
        ]
    )
    service = Service(compile_doc(doc))
    service.extra_services = [StateAdminServicer(service.caps, lambda: service.router.breakers.states()
                                                 if service.router else {}, TOKEN).register]  # fmt: skip
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            routed = await pb_grpc.RouteLeadStub(channel).RouteLead(
                pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD), timeout=10
            )
            admin = spb_grpc.StateAdminStub(channel)

            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await admin.ListUnsettled(spb.ListUnsettledRequest())
            listed = await admin.ListUnsettled(spb.ListUnsettledRequest(), metadata=AUTH)
            settled = await admin.Settle(
                spb.SettleRequest(buyer_id="slow", reservation_id=listed.reservations[0].reservation_id),
                metadata=AUTH,
            )
            again = await admin.Settle(
                spb.SettleRequest(buyer_id="slow", reservation_id=listed.reservations[0].reservation_id),
                metadata=AUTH,
            )
            after = await admin.ListUnsettled(spb.ListUnsettledRequest(), metadata=AUTH)
            topped = await admin.TopUp(spb.TopUpRequest(buyer_id="slow", amount="125.50"), metadata=AUTH)
            balance = await admin.GetBalance(spb.BalanceRequest(buyer_id="slow"), metadata=AUTH)
            with pytest.raises(grpc.aio.AioRpcError) as bad_amount:
                await admin.TopUp(spb.TopUpRequest(buyer_id="slow", amount="lots"), metadata=AUTH)
            breakers = await admin.ListBreakers(spb.ListBreakersRequest(), metadata=AUTH)
    finally:
        await service.stop(grace=0.5)

    assert routed.outcome == pb.UNSETTLED  # the post timed out after sending: the buyer may hold it
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [u] = listed.reservations
    assert (u.buyer_id, u.lead_id, u.amount, u.state) == ("slow", routed.lead_id, "50.00", "unsettled")
    assert "outcome unknown" in u.reason
    assert settled.settled and not again.settled
    assert list(after.reservations) == []
    assert topped.balance == balance.balance == "125.50"
    assert bad_amount.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {(b.buyer_id, b.state) for b in breakers.breakers} >= {("sick", "open")}
