"""Simulated buyers for the demo and local runs: realistic latencies, bid rates and failures.

Each buyer answers at /<buyer>/ping and /<buyer>/post. Behaviour is random but seeded,
so a demo run is repeatable.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Profile:
    bid_rate: float
    price: tuple[float, float]
    latency_ms: tuple[int, int]
    accept_rate: float = 0.9
    hang_rate: float = 0.0
    broken_rate: float = 0.0
    # "standard" JSON, "nested" (BrightPath's own JSON), "form_xml" (form posts, XML answers),
    # "text" (query-string ping, form post, pipe-delimited plain-text answers)
    style: str = "standard"


PROFILES = {
    "sunpower": Profile(0.7, (35, 65), (30, 120), accept_rate=0.85),
    "solarcity": Profile(0.65, (30, 55), (50, 200)),
    "brightpath": Profile(0.75, (20, 45), (80, 250), style="nested"),
    "slowsun": Profile(0.6, (20, 40), (150, 280), hang_rate=0.35),
    "flakysolar": Profile(0.8, (15, 35), (20, 90), broken_rate=0.35),
    "catchall": Profile(1.0, (12, 12), (10, 40), accept_rate=0.97),
    "sunvalley": Profile(0.7, (28, 52), (40, 160), style="form_xml"),
    "rayleads": Profile(0.7, (18, 42), (30, 140), accept_rate=0.85, style="text"),
    # Auto insurance buyers, and a marketplace that buys solar and auto alike.
    "autoshield": Profile(0.7, (18, 38), (40, 160), accept_rate=0.9),
    "roadwise": Profile(0.65, (10, 26), (50, 220)),
    "leadmarket": Profile(0.6, (14, 34), (30, 150), accept_rate=0.85),
    "quotehub": Profile(1.0, (9, 9), (10, 40), accept_rate=0.97),
}


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _xml(text: str) -> web.Response:
    return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>' + text, content_type="text/xml")


def _text(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/plain")


async def _read(request: web.Request, p: Profile) -> dict[str, Any]:
    """The request as each buyer style expects it: JSON, a form body, or the query string."""
    raw = await request.read()
    if request.method == "GET":
        return dict(request.query)
    if p.style in ("form_xml", "text"):
        return dict(parse_qsl(raw.decode()))
    doc = orjson.loads(raw)
    return doc if isinstance(doc, dict) else {}


def build_app(seed: int = 7) -> web.Application:
    rng = random.Random(seed)

    async def ping(request: web.Request) -> web.StreamResponse:
        name = request.match_info["buyer"]
        p = PROFILES.get(name)
        if p is None:
            return _json({"error": "unknown buyer"}, 404)
        keyed = name in ("sunpower", "solarcity")
        if keyed and not (request.headers.get("X-API-Key") or request.headers.get("Authorization")):
            return _json({"error": "missing API key"}, 401)
        body = await _read(request, p)
        await asyncio.sleep(rng.uniform(*p.latency_ms) / 1000)
        if rng.random() < p.hang_rate:
            await asyncio.sleep(2.0)  # far past any ping timeout
        if rng.random() < p.broken_rate:
            if rng.random() < 0.5:
                return web.Response(
                    text="<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"
                )
            return web.Response(text='{"bid": tru', content_type="application/json")
        homeowner = body.get("homeowner", body.get("hm", body.get("own")))
        bids = rng.random() < p.bid_rate and homeowner in (True, "Y", "1", None)
        price = round(rng.uniform(*p.price), 2)
        token = uuid.uuid4().hex[:12]
        if p.style == "form_xml":
            if not bids:
                return _xml(
                    "<response><result>pass</result><message>not in service area</message></response>"
                )
            return _xml(
                f"<response><result>bid</result><price>{price:.2f}</price><token>{token}</token></response>"
            )
        if p.style == "text":
            return _text(f"bid|{price:.2f}|{token}|" if bids else "pass|||budget spent")
        if p.style == "nested":
            if not bids:
                return _json({"result": {"decision": "pass", "message": "outside buy box"}})
            return _json({"result": {"decision": "buy", "amount": f"{price:.2f}", "token": token}})
        if not bids:
            return _json({"bid": False, "reason": "not interested"})
        return _json({"bid": True, "price": price, "ping_id": token, "exclusive": True})

    async def post(request: web.Request) -> web.StreamResponse:
        name = request.match_info["buyer"]
        p = PROFILES.get(name)
        if p is None:
            return _json({"error": "unknown buyer"}, 404)
        body = await _read(request, p)
        await asyncio.sleep(rng.uniform(*p.latency_ms) / 2000)
        accepted = rng.random() < p.accept_rate
        lead_id = f"{name[:3].upper()}-{uuid.uuid4().hex[:8]}"
        if p.style == "form_xml":
            if not body.get("token"):
                return _xml('<response status="Rejected"><message>unknown auction token</message></response>')
            if accepted:
                return _xml(f'<response status="Accepted"><lead_id>{lead_id}</lead_id></response>')
            return _xml('<response status="Rejected"><message>duplicate</message></response>')
        if p.style == "text":
            return _text(f"accepted|{lead_id}|" if accepted else "rejected||phone failed verification")
        if p.style == "nested":
            decision = "accepted" if accepted else "rejected"
            return _json(
                {"result": {"decision": decision, "id": lead_id, "message": "" if accepted else "duplicate"}}
            )
        if accepted:
            return _json({"status": "accepted", "lead_id": lead_id})
        return _json({"status": "rejected", "reason": "failed internal validation"})

    async def verify_phone(request: web.Request) -> web.StreamResponse:
        """A simulated phone verifier (a lookup step): about one phone in ten is invalid."""
        doc = orjson.loads(await request.read() or b"{}")
        phone = str(doc.get("phone", "")) if isinstance(doc, dict) else ""
        await asyncio.sleep(rng.uniform(5, 30) / 1000)
        if not phone:
            return _json({"error": "phone required"}, 400)
        valid = rng.random() >= 0.1
        line = "mobile" if rng.random() < 0.7 else "landline"
        return _json({"valid": valid, "line_type": line if valid else "unknown"})

    app = web.Application()
    app.router.add_post("/verify/phone", verify_phone)
    app.router.add_post("/{buyer}/ping", ping)
    app.router.add_route("GET", "/{buyer}/ping", ping)
    app.router.add_post("/{buyer}/post", post)
    return app


async def start_fleet(host: str = "127.0.0.1", port: int = 0, seed: int = 7) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(seed), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
