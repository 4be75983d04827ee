"""Event-loop lag: how late a timer fires. Every lead's callbacks queue behind whatever holds the
loop (a long callback, another thread holding the GIL), so this is the wait no span shows.

A task sleeps `interval_s` and records by how much it overslept, into the Prometheus histogram
`routelead_event_loop_lag_seconds` and into `LAG` (the benchmarks read it in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from prometheus_client import Histogram

LAG_SECONDS = Histogram(
    "routelead_event_loop_lag_seconds",
    "How late a 50 ms timer fired on the event loop (the wait every callback shares).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
INTERVAL_S = 0.05


@dataclass(slots=True)
class LagSamples:
    """The oversleeps seen so far in this process, in seconds (bounded: the newest win)."""

    limit: int = 200_000
    samples: list[float] = field(default_factory=list)

    def add(self, lag_s: float) -> None:
        if len(self.samples) >= self.limit:
            del self.samples[: self.limit // 2]
        self.samples.append(lag_s)


LAG = LagSamples()


async def watch(interval_s: float = INTERVAL_S) -> None:
    """Until cancelled."""
    while True:
        due = time.perf_counter() + interval_s
        await asyncio.sleep(interval_s)
        lag = max(0.0, time.perf_counter() - due)
        LAG_SECONDS.observe(lag)
        LAG.add(lag)


def start() -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(watch(), name="event-loop-lag")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
