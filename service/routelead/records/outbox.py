"""The Redis side of the books: stream names, and the router's lead-record writer for the Redis path.

A sale's record is appended to its buyer's stream by the cap-commit Lua script, atomically with the
cap commit; the whole lead record goes to the ledger stream before the RPC answers. The sink
(`routelead.records.sink`) moves both into the database.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from routelead.domain.outcome import RoutingResult
from routelead.records.codec import encode, lead_record

LEDGER_STREAM = "rl:{ledger}:outbox"
# Entries that can never be applied (unreadable bytes) are moved here, with the error, for a human.
DEAD_STREAM = "rl:{ledger}:dead"
FIELD = "record"


def buyer_stream(buyer_id: str) -> str:
    """Same hash tag as the buyer's cap keys, so the Lua commit may touch both in one call."""
    return f"rl:{{{buyer_id}}}:outbox"


class OutboxWriter:
    """LedgerWriter for the Redis path: one XADD per lead, awaited before the answer."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def record(
        self,
        result: RoutingResult,
        ping_fields: Mapping[str, str],
        received_at: float,
        config_version: str,
    ) -> None:
        data = encode(lead_record(result, ping_fields, received_at, time.time(), config_version))
        await self._redis.xadd(LEDGER_STREAM, {FIELD: data})
