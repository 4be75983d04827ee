"""The books' CPU per sold lead, as the router writes them: `python -m benchmarks.books_cost [URL] [N] [C]`.

Each lead: its first post's intent (committed before the post), then its record (ten attempts, one
sale), `C` leads at a time (default 20) so group commit shares transactions as under load. Prints
leads/s, the writer thread's CPU and the whole process's CPU per lead, and the record write's
latency. URL: a database URL (default a SQLite file in a temporary directory); N default 2000.
`--profile` adds the writer thread's cProfile (top 25 by own time).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.intents import Intent
from routelead.records.ledger import Ledger


def _result(lead_id: str) -> RoutingResult:
    r = RoutingResult(lead_id, "solar", "src-1", False, Outcome.SOLD, Decimal("10.00"))
    r.attempts = [
        Attempt(f"b{i}", "t1", Status.OUTBID, Decimal("20.00") + i, 40.0, 0.0, "outbid") for i in range(9)
    ]
    won = Attempt("win", "t1", Status.POST_ACCEPTED, Decimal("45.10"), 35.0, 60.0, "sold at 45.10")
    r.attempts.append(won)
    r.sales = [Sale("win", Decimal("45.10"), "W-1", True, "t1", Decimal("10.00"))]
    return r


def _thread_cpu(name: str) -> float:
    for t in threading.enumerate():
        if t.name.startswith(name) and t.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return 0.0


async def main(url: str, n: int, concurrency: int, profile: bool) -> None:
    ledger = await Ledger.open(url)
    took: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    prof = cProfile.Profile() if profile else None
    if prof is not None and ledger._writer_thread is not None:
        ledger._writer_thread.submit(prof.enable).result()

    async def one(i: int) -> None:
        lead_id = f"bench-{i}-{time.time_ns()}"
        async with sem:
            price, cost = Decimal("45.10"), Decimal("10.00")
            now = time.time()
            intent = Intent(lead_id, 0, "win", "", price, cost, True, "t1", "solar", "src-1", "v1", now)
            assert await ledger.offer(intent)
            t0 = time.perf_counter()
            assert await ledger.record(_result(lead_id), {"state": "CA", "zip": "90210"}, time.time(), "v1")
            took.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one(-i - 1) for i in range(50)))  # warm-up: statements compiled, caches full
    took.clear()
    cpu0, writer0, t0 = time.process_time(), _thread_cpu("ledger-writer"), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu, writer = time.process_time() - cpu0, _thread_cpu("ledger-writer") - writer0
    if prof is not None and ledger._writer_thread is not None:
        ledger._writer_thread.submit(prof.disable).result()
    await ledger.close()
    q = statistics.quantiles(took, n=100)
    print(
        f"{url.split(':')[0]}: {n} leads, {concurrency} at a time: {n / wall:.0f} leads/s; CPU per lead "
        f"writer {writer / n * 1000:.3f} ms, process {cpu / n * 1000:.3f} ms; "
        f"record write ms p50 {q[49]:.1f} p99 {q[98]:.1f}"
    )
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    args: list[Any] = [a for a in sys.argv[1:] if a != "--profile"]
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    asyncio.run(
        main(
            args[0] if args and args[0] else default,
            int(args[1]) if len(args) > 1 else 2000,
            int(args[2]) if len(args) > 2 else 20,
            "--profile" in sys.argv,
        )
    )
