"""The simulated buyer fleet as its own process: `python -m benchmarks.fleet SPEC.json`.

Prints `PORT <n>` once listening. Behaviour per buyer comes from the scenario's BuyerSim list.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from pathlib import Path

import orjson
from aiohttp import web

from benchmarks.scenarios import BuyerSim

# Far past every ping timeout, yet bounded so hung handlers do not pile up forever.
HANG_S = 3.0


def build_app(buyers: list[BuyerSim], seed: int = 1) -> web.Application:
    rng = random.Random(seed)
    by_id = {b.id: b for b in buyers}
    no_bid = orjson.dumps({"bid": False, "reason": "not interested"})
    rejected = orjson.dumps({"status": "rejected", "reason": "failed validation"})

    def json(body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json")

    async def ping(request: web.Request) -> web.StreamResponse:
        b = by_id.get(request.match_info["buyer"])
        if b is None:
            raise web.HTTPNotFound()
        await request.read()
        delay = HANG_S if rng.random() < b.hang_rate else b.latency_s(rng)
        if delay:
            await asyncio.sleep(delay)
        if b.fail_rate and rng.random() < b.fail_rate:
            return json(b'{"bid": tru') if rng.random() < 0.5 else json(b'{"error":"boom"}', 500)
        if rng.random() >= b.bid_rate:
            return json(no_bid)
        price = round(rng.uniform(*b.price), 2)
        return json(orjson.dumps({"bid": True, "price": price, "ping_id": uuid.uuid4().hex[:12]}))

    async def post(request: web.Request) -> web.StreamResponse:
        b = by_id.get(request.match_info["buyer"])
        if b is None:
            raise web.HTTPNotFound()
        await request.read()
        delay = b.latency_s(rng) / 2
        if delay:
            await asyncio.sleep(delay)
        if rng.random() >= b.accept_rate:
            return json(rejected)
        return json(orjson.dumps({"status": "accepted", "lead_id": uuid.uuid4().hex[:10]}))

    app = web.Application()
    app.router.add_post("/{buyer}/ping", ping)
    app.router.add_post("/{buyer}/post", post)
    return app


async def serve(buyers: list[BuyerSim], port: int = 0) -> None:
    runner = web.AppRunner(build_app(buyers), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()  # until the parent terminates us
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    spec = orjson.loads(Path(argv[0]).read_bytes())
    buyers = [BuyerSim(**{**b, "price": tuple(b["price"])}) for b in spec]
    import uvloop

    uvloop.run(serve(buyers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
