"""Where the embedded (in-memory) hot state stops growing: `python -m benchmarks.memory_bounds`.

The in-memory default keeps two things per lead that outlive it: the answer (idempotency, the
newest 100 000) and consumer fingerprints (dedupe, the newest 1 000 000 keys within their TTL:
one per flow plus one per buyer that bought). A soak that reaches the plateau takes hours of
routing; filling the stores the way the router does takes seconds and measures the same bytes.
Prints a JSON report and writes it to benchmarks/results/memory-bounds.json.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.state.memory import MemoryDedupeStore, MemoryIdempotencyStore

OUT = Path(__file__).resolve().parent / "results" / "memory-bounds.json"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * _PAGE / 2**20, 1)


def answer(n: int, buyers: int = 10) -> RoutingResult:
    """A realistic ten-buyer answer: one sale, the rest outbid, no-bid or timed out."""
    lead_id = f"{n:032x}"
    r = RoutingResult(lead_id, "solar", "aff-sunrise", False, Outcome.SOLD, Decimal("12.00"))
    r.trace_id = f"{n:032x}"
    r.elapsed_ms = 231.5
    r.config_version = "7"
    r.sales = [Sale("buyer-0", Decimal("45.10"), f"B-{n}", True, "premium", Decimal("12.00"))]
    statuses = [Status.POST_ACCEPTED, Status.OUTBID, Status.OUTBID, Status.NO_BID, Status.TIMED_OUT]
    for i in range(buyers):
        s = statuses[i % len(statuses)]
        price = Decimal("45.10") - i if s in (Status.POST_ACCEPTED, Status.OUTBID) else None
        reason = {
            Status.POST_ACCEPTED: "sold at 45.10",
            Status.OUTBID: "buyer-0 won at 45.10",
            Status.NO_BID: "no bid: out of area",
            Status.TIMED_OUT: "no answer within 400 ms",
        }[s]
        r.attempts.append(
            Attempt(f"buyer-{i}", "premium", s, price, 35.2 + i, 80.1 if i == 0 else 0.0, reason, 200)
        )
    return r


async def fill_dedupe(leads: int, step: int) -> list[dict[str, Any]]:
    store = MemoryDedupeStore()
    day = 86400.0
    samples = []
    for n in range(1, leads + 1):
        fp = store.fingerprint([f"person{n}@example.com", f"555{n:07d}"])
        await store.seen_or_add(f"lead|solar|{fp}", day, add=True)  # the flow's pre-ping check
        await store.seen_or_add(f"buyer|buyer-{n % 10}|{fp}", 30 * day, add=True)  # the buyer's
        if n % step == 0:
            samples.append({"leads": n, "keys": len(store._expiry), "rss_mb": rss_mb()})
    return samples


async def fill_answers(leads: int, step: int) -> list[dict[str, Any]]:
    store = MemoryIdempotencyStore()
    samples = []
    for n in range(1, leads + 1):
        await store.remember(answer(n))
        if n % step == 0:
            samples.append({"leads": n, "answers": len(store._done), "rss_mb": rss_mb()})
    return samples


def measure(kind: str) -> dict[str, Any]:
    """One store in a process of its own: freed memory stays in the allocator's arenas, so two
    stores measured one after the other in one process would blur each other's plateau."""
    start = rss_mb()
    if kind == "answers":
        samples = asyncio.run(fill_answers(300_000, 25_000))
    else:
        samples = asyncio.run(fill_dedupe(1_500_000, 100_000))
    return {"start_rss_mb": start, "samples": samples}


def main() -> dict[str, Any]:
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    for kind in ("answers", "dedupe"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_bounds", kind],
            capture_output=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        report[kind] = orjson.loads(out.stdout)
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(orjson.dumps(measure(sys.argv[1])).decode())
    else:
        result = main()
        OUT.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
