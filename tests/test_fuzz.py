"""Property-based fuzzing of the RouteLead request: any input gives a clear error or a correct
result — never a crash (INTERNAL / UNKNOWN), never a hang past the deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from routelead.api.server import Service
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, LEAD_FIELDS, buyer, compile_doc, document

CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}


class Background:
    """The service and its buyers on their own event loop thread, for a synchronous client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.buyers = BuyerServer()
        self.service: Service | None = None

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def start(self) -> int:
        async def go() -> int:
            await self.buyers.start()
            self.buyers.on("a", ping=bid(30), post=accept())
            self.buyers.on("b", ping=bid(20), post=accept())
            doc = document([buyer(self.buyers.url, "a"), buyer(self.buyers.url, "b")])
            doc["lead"]["unknown_fields"] = "drop"
            self.service = Service(compile_doc(doc))
            return await self.service.start()

        port = self.run(go())
        assert isinstance(port, int)
        return port

    def stop(self) -> None:
        async def go() -> None:
            assert self.service is not None
            await self.service.stop(grace=0.5)
            await self.buyers.stop()

        self.run(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def stub() -> Iterator[pb_grpc.RouteLeadStub]:
    bg = Background()
    port = bg.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.RouteLeadStub(channel)
    bg.stop()


names = st.one_of(st.sampled_from(sorted(LEAD_FIELDS)), st.text(max_size=70))
values = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=6000),
    st.sampled_from(
        ["", " ", "CA", "90210", "yes", "NaN", "1e999", "\u0000", "👍" * 40, "'; DROP TABLE leads;--"]
    ),
)


def check(stub: pb_grpc.RouteLeadStub, request: pb.RouteLeadRequest) -> None:
    t0 = time.monotonic()
    error: grpc.RpcError | None = None
    try:
        reply = stub.RouteLead(request, timeout=10)
    except grpc.RpcError as err:
        error = err
    if error is not None:
        assert error.code() in CLEAR, (error.code(), error.details())
        assert error.details()
    else:
        assert reply.outcome in (pb.SOLD, pb.UNSOLD, pb.DUPLICATE)
        assert Decimal(reply.revenue) - Decimal(reply.cost) == Decimal(reply.margin)
        assert len(reply.attempts) == 2
    assert time.monotonic() - t0 < 0.75 + 1.5


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(names, values, max_size=30))
def test_arbitrary_field_maps(stub: pb_grpc.RouteLeadStub, fields: dict[str, str]) -> None:
    check(stub, pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=fields))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from([GOOD_LEAD, {}]),
    changes=st.dictionaries(st.sampled_from(sorted(LEAD_FIELDS)), values, max_size=4),
    flow=st.one_of(st.just("solar"), st.text(max_size=10)),
    source=st.one_of(st.just("src-1"), st.text(max_size=10)),
    lead_id=st.one_of(st.just(""), st.text(max_size=200)),
    test=st.booleans(),
)
def test_near_valid_requests(
    stub: pb_grpc.RouteLeadStub,
    base: dict[str, str],
    changes: dict[str, str],
    flow: str,
    source: str,
    lead_id: str,
    test: bool,
) -> None:
    request = pb.RouteLeadRequest(
        lead_id=lead_id, flow=flow, source_id=source, fields=base | changes, test=test
    )
    check(stub, request)
