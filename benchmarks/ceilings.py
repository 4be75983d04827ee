"""The ceilings of our stack, each its own process: `python -m benchmarks.ceilings empty|fanout ...`.

- empty:  a grpc.aio RouteLead handler that answers at once: the most leads/s gRPC alone allows.
- fanout: a grpc.aio handler doing a bare aiohttp fan-out of the same shape as the router (ping every
  buyer of the scenario in parallel with the same ping body, post the full lead to the best bid),
  with no validation, ranking rules, caps, dedupe, tracing or logging: the most leads/s our stack allows
  for that many buyers.
Both print `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

import aiohttp
import grpc
import orjson
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from benchmarks.scenarios import DEADLINE_MS, PII, POST_RESERVE_MS


class RouteLeadOnly(pb_grpc.RouteLeadServicer):
    """A RouteLead-only stand-in: Quote and Commit are not served."""

    async def Quote(
        self, request: pb.QuoteRequest, context: grpc.aio.ServicerContext[pb.QuoteRequest, pb.QuoteResponse]
    ) -> pb.QuoteResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served here")
        raise AssertionError("unreachable")

    async def Commit(
        self,
        request: pb.CommitRequest,
        context: grpc.aio.ServicerContext[pb.CommitRequest, pb.RouteLeadResponse],
    ) -> pb.RouteLeadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served here")
        raise AssertionError("unreachable")


class Empty(RouteLeadOnly):
    async def RouteLead(self, request: pb.RouteLeadRequest, context: object) -> pb.RouteLeadResponse:
        return pb.RouteLeadResponse(lead_id=request.lead_id)


class FanOut(RouteLeadOnly):
    def __init__(self, session: aiohttp.ClientSession, buyers_url: str, buyer_ids: list[str]) -> None:
        self._session = session
        self._pings = [(b, f"{buyers_url}/{b}/ping") for b in buyer_ids]
        self._posts = {b: f"{buyers_url}/{b}/post" for b in buyer_ids}
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}

    async def _ask(self, url: str, body: bytes) -> object:
        async with self._session.post(url, data=body, headers=self._headers) as resp:
            return orjson.loads(await resp.read())

    async def RouteLead(self, request: pb.RouteLeadRequest, context: object) -> pb.RouteLeadResponse:
        lead_id = request.lead_id or uuid.uuid4().hex
        fields = dict(request.fields)
        ping_body = orjson.dumps({k: v for k, v in fields.items() if k not in PII} | {"lead_id": lead_id})
        window = (DEADLINE_MS - POST_RESERVE_MS) / 1000
        tasks = [asyncio.ensure_future(self._ask(url, ping_body)) for _, url in self._pings]
        done, late = await asyncio.wait(tasks, timeout=window)
        for t in late:
            t.cancel()
        best: tuple[float, str] | None = None
        for (buyer, _), t in zip(self._pings, tasks, strict=True):
            if t in done and t.exception() is None:
                doc = t.result()
                if isinstance(doc, dict) and doc.get("bid") is True:
                    price = float(doc["price"])
                    if best is None or price > best[0]:
                        best = (price, buyer)
        outcome = pb.UNSOLD
        if best is not None:
            post_body = orjson.dumps(fields | {"lead_id": lead_id, "price": best[0]})
            try:
                async with asyncio.timeout(POST_RESERVE_MS / 1000):
                    answer = await self._ask(self._posts[best[1]], post_body)
                if isinstance(answer, dict) and answer.get("status") == "accepted":
                    outcome = pb.SOLD
            except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
                pass
        return pb.RouteLeadResponse(lead_id=lead_id, outcome=outcome)


async def serve(kind: str, buyers_url: str, buyer_ids: list[str]) -> None:
    # The same server options as routelead.api.server.Service, so only the handler differs.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    session: aiohttp.ClientSession | None = None
    if kind == "empty":
        pb_grpc.add_RouteLeadServicer_to_server(Empty(), server)
    else:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=256, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        pb_grpc.add_RouteLeadServicer_to_server(FanOut(session, buyers_url, buyer_ids), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"PORT {port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        if session is not None:
            await session.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.ceilings")
    parser.add_argument("kind", choices=["empty", "fanout"])
    parser.add_argument("--buyers-url", default="")
    parser.add_argument("--buyers", default="", help="comma-separated buyer ids")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.kind, args.buyers_url, [b for b in args.buyers.split(",") if b]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
