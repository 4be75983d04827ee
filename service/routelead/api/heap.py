"""The collector's settings for a serving process."""

from __future__ import annotations

import gc

# Each lead allocates thousands of short-lived objects (requests, answers, spans, futures); with the
# default threshold of 700 the young generation is scanned several times per lead.
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once start-up is done: collect, then freeze what start-up built (modules, configuration,
    compiled rules) so no later collection scans it again, and collect the young generation less
    often. What this bought is in benchmarks/README.md."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
