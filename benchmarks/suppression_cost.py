"""What a suppression list costs: `python -m benchmarks.suppression_cost [ENTRIES]`.

Memory per million entries (the in-process store's RSS growth; Redis's `used_memory` growth for
the same entries on a throwaway redis-server) and the time one lead's check takes against a list
that large (its phone, e-mail and domain, as the router checks them). Prints a JSON report and
writes it to benchmarks/results/suppression-cost.json.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from routelead.domain.identity import fingerprint
from routelead.domain.suppression import digest, lead_values
from routelead.state.memory import MemorySuppressionStore
from routelead.state.redis import connect

OUT = Path(__file__).resolve().parent / "results" / "suppression-cost.json"
KEY = b"benchmark-dedupe-key-0123456789ab"
LEAD = {"phone": "5552013344", "email": "maria@example.com", "zip": "90210"}
TYPES = {"phone": "phone", "email": "email", "zip": "zip"}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def fp(values: list[str]) -> str:
    return fingerprint(KEY, values)


def entries(n: int) -> list[str]:
    return [digest(fp, "phone", f"+1{5550000000 + i}") for i in range(n)]


async def per_lead(check: object, rounds: int = 2000) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        digests = [digest(fp, k, v) for k, v in lead_values(LEAD, TYPES)]
        await check.hits(digests)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 4), "p99_ms": round(times[int(rounds * 0.99) - 1], 4)}


def redis_server() -> tuple[subprocess.Popen[bytes] | None, int]:
    """A throwaway redis-server (none when it is not installed)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(exe, os.X_OK):
        return None, 0
    port = 6390 + os.getpid() % 500
    workdir = tempfile.mkdtemp(prefix="rl-bench-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    return proc, port


async def main(n: int, port: int) -> dict[str, object]:
    batch = entries(n)
    before = rss_mb()
    memory = MemorySuppressionStore()
    for i in range(0, n, 100_000):
        await memory.change("dnc", "", batch[i : i + 100_000], add=True)
    report: dict[str, object] = {
        "entries": n,
        "memory_store_mb_per_million": round((rss_mb() - before) * 1_000_000 / n, 1),
        "memory_store_check_per_lead": await per_lead(memory),
    }
    del memory
    if port:
        raw = aioredis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                await raw.ping()
                break
            except Exception:
                await asyncio.sleep(0.1)
        used0 = int((await raw.info("memory"))["used_memory"])
        state = connect(f"redis://127.0.0.1:{port}/0", KEY)
        for i in range(0, n, 10_000):
            await state.suppression.change("dnc", "", batch[i : i + 10_000], add=True)
        used = int((await raw.info("memory"))["used_memory"]) - used0
        report["redis_mb_per_million"] = round(used / 2**20 * 1_000_000 / n, 1)
        report["redis_check_per_lead"] = await per_lead(state.suppression, 1000)
        await state.close()
        await raw.aclose()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


if __name__ == "__main__":
    server, redis_port = redis_server()
    try:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        print(orjson.dumps(asyncio.run(main(n, redis_port))).decode())
    finally:
        if server is not None:
            server.terminate()
            server.wait()
