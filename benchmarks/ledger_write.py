"""How long the router's ledger write adds to a lead: `python benchmarks/ledger_write.py [URL] [N]`.

URL: a database URL (default: a SQLite file in a temporary directory). Writes N (default 500)
sold leads of six attempts each, 20 at a time, and prints the per-write latency percentiles.
Bounded in count; run it on a quiet machine.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.ledger import Ledger


def _result(n: int) -> RoutingResult:
    r = RoutingResult(f"bench-{n}-{time.time_ns()}", "solar", "src-1", False, Outcome.SOLD, Decimal("10.00"))
    r.attempts = [
        Attempt(f"b{i}", "t1", Status.OUTBID, Decimal("20.00") + i, 40.0, 0.0, "outbid") for i in range(5)
    ]
    r.attempts.append(
        Attempt("win", "t1", Status.POST_ACCEPTED, Decimal("45.10"), 35.0, 60.0, "sold at 45.10")
    )
    r.sales = [Sale("win", Decimal("45.10"), "W-1", True, "t1", Decimal("10.00"))]
    return r


async def main(url: str, n: int) -> None:
    ledger = await Ledger.open(url)
    took: list[float] = []
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            await ledger.record(_result(i), {"state": "CA", "zip": "90210"}, time.time(), "v1")
            took.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    await ledger.close()
    q = statistics.quantiles(took, n=100)
    print(
        f"{url.split(':')[0]}: {n} leads in {wall:.2f} s ({n / wall:.0f}/s); "
        f"write ms p50 {q[49]:.1f}  p95 {q[94]:.1f}  p99 {q[98]:.1f}  max {max(took):.1f}"
    )


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    asyncio.run(
        main(sys.argv[1] if len(sys.argv) > 1 else default, int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    )
