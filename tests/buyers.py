"""Real aiohttp buyer servers on 127.0.0.1 with per-buyer, per-step behaviour for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    buyer: str
    step: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def respond(doc: object, status: int = 200) -> Behaviour:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")

    return handler


def bid(price: object, **extra: object) -> Behaviour:
    return respond({"bid": True, "price": price, "ping_id": f"ping-{price}", **extra})


def no_bid(reason: str = "not interested") -> Behaviour:
    return respond({"bid": False, "reason": reason})


def accept(lead_id: str = "B-1") -> Behaviour:
    return respond({"status": "accepted", "lead_id": lead_id})


def reject(reason: str = "duplicate") -> Behaviour:
    return respond({"status": "rejected", "reason": reason})


def raw(body: bytes, status: int = 200, content_type: str = "application/json") -> Behaviour:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    return handler


def hang(seconds: float = 30.0) -> Behaviour:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(text="{}")

    return handler


def trickle(interval: float = 0.1, chunks: int = 100) -> Behaviour:
    """Slow-loris: headers at once, then the body one byte at a time."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(chunks):
            await resp.write(b" ")
            await asyncio.sleep(interval)
        await resp.write(b'{"bid": true, "price": 99}')
        return resp

    return handler


def redirect(to: str) -> Behaviour:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(to)

    return handler


def slow(seconds: float, then: Behaviour) -> Behaviour:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return handler


def first_doing(action: Callable[[], Awaitable[None]], then: Behaviour) -> Behaviour:
    """Runs `action` when the request arrives (e.g. the books go down while a post is in flight),
    then answers as `then`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await action()
        return await then(request)

    return handler


@dataclass
class BuyerServer:
    """One aiohttp server that plays every test buyer at /<buyer>/<ping|post>."""

    behaviours: dict[tuple[str, str], Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, buyer: str, step: str) -> str:
        return f"http://127.0.0.1:{self.port}/{buyer}/{step}"

    def on(self, buyer: str, ping: Behaviour | None = None, post: Behaviour | None = None) -> None:
        if ping is not None:
            self.behaviours[(buyer, "ping")] = ping
        if post is not None:
            self.behaviours[(buyer, "post")] = post

    def got(self, buyer: str | None = None, step: str | None = None) -> list[Received]:
        return [r for r in self.received if (buyer in (None, r.buyer)) and (step in (None, r.step))]

    async def start(self) -> None:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            buyer, step = request.match_info["buyer"], request.match_info["step"]
            body = await request.read()
            self.received.append(Received(buyer, step, dict(request.headers), body))
            behaviour = self.behaviours.get((buyer, step))
            if behaviour is None:
                return web.json_response({"bid": False} if step == "ping" else {"status": "rejected"})
            return await behaviour(request)

        app = web.Application()
        app.router.add_route("*", "/{buyer}/{step}", dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
