"""What one lookup step costs a lead: `python -m benchmarks.lookup_cost [N]`.

A real aiohttp verifier on loopback (answering at once) and the service's own transport and
lookup runner: the wall time a lead waits for one step, and the CPU our side spends on it
(request encoding, the HTTP exchange, the answer's reading, its span). The verifier's own time
is outside the CPU figure only to the extent the OS schedules it apart: both share one loop here,
so the CPU figure is an upper bound. Prints a JSON report and writes it to
benchmarks/results/lookup-cost.json.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web
from routelead.config.loader import load_config_bytes
from routelead.lookups import Lookups
from routelead.transport import Transport

OUT = Path(__file__).resolve().parent / "results" / "lookup-cost.json"
LEAD = {"phone": "5552013344", "email": "maria@example.com"}


def config(port: int) -> bytes:
    return f"""
lead:
  fields:
    phone: {{type: phone, required: true, pii: true}}
    email: {{type: email, required: true, pii: true}}
  lookups:
    - id: phone-verify
      url: http://127.0.0.1:{port}/verify/phone
      timeout_ms: 500
      fields: {{phone: {{field: phone, transform: phone_e164}}, ref: {{from: lead_id}}}}
      answer: {{facts: {{phone.valid: valid, phone.line: line_type}}}}
sources: [{{id: s, cost: "1.00"}}]
buyers: [{{id: b, fixed_price: "2.00", post: {{url: "http://127.0.0.1:{port}/b/post", timeout_ms: 100}}}}]
flows: [{{id: f, tiers: [{{name: t, buyers: [b]}}]}}]
""".encode()


async def main(n: int) -> dict[str, object]:
    async def verify(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"valid": True, "line_type": "mobile"})

    app = web.Application()
    app.router.add_post("/verify/phone", verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    cfg = load_config_bytes(config(port), "bench.yaml", {})
    steps = cfg.lookups_of(cfg.flows["f"])
    walls: list[float] = []
    async with Transport() as transport:
        lookups = Lookups(transport)
        for i in range(200):  # warm the connection pool and the loop
            await lookups.run(steps, LEAD, f"w{i}", time.monotonic() + 1)
        cpu0 = time.process_time()
        for i in range(n):
            t0 = time.perf_counter()
            looked = await lookups.run(steps, LEAD, f"l{i}", time.monotonic() + 1)
            walls.append((time.perf_counter() - t0) * 1000)
            assert looked.facts == {"phone.valid": "true", "phone.line": "mobile"}, looked
        cpu = time.process_time() - cpu0
    await runner.cleanup()
    walls.sort()
    report: dict[str, object] = {
        "steps": n,
        "wall_ms_p50": round(statistics.median(walls), 3),
        "wall_ms_p99": round(walls[int(n * 0.99) - 1], 3),
        "cpu_ms_per_step_incl_verifier": round(cpu * 1000 / n, 3),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))).decode())
