"""The books guard on its own: what stops routing, what does not, and what is said at exit."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from routelead.domain.outcome import Outcome, RoutingResult, Sale
from routelead.records.guard import BooksGuard
from routelead.records.ledger import Ledger
from routelead.records.port import BooksUnavailable, Unbooked
from routelead.telemetry.logs import configure_logging


def sold(lead_id: str) -> RoutingResult:
    r = RoutingResult(lead_id, "solar", "src-1", False, Outcome.SOLD, Decimal("10.00"))
    r.sales = [Sale("a", Decimal("33.33"), "A-1", True, "t1", Decimal("10.00"))]
    return r


class Rejects:
    """A LedgerWriter whose database answers but refuses one lead's record (a data error)."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.written: list[str] = []

    async def record(
        self, result: RoutingResult, ping_fields: Mapping[str, str], received_at: float, config_version: str
    ) -> None:
        if result.lead_id == self.bad:
            raise sa.exc.DataError("INSERT", {}, ValueError("numeric field overflow"))
        self.written.append(result.lead_id)


async def test_a_record_the_database_rejects_is_held_but_does_not_stop_routing() -> None:
    writer = Rejects("poison")
    guard = BooksGuard(writer, retry_s=60)
    try:
        with pytest.raises(Unbooked):
            await guard.record(sold("poison"), {}, 0.0, "v1")
        guard.check()  # no BooksUnavailable: the database is up
        await guard.record(sold("fine"), {}, 0.0, "v1")
        with pytest.raises(Unbooked):
            await guard.answer("poison")  # a retry still cannot book it, and does not route it
    finally:
        await guard.close()

    assert writer.written == ["fine"] and guard.writable and guard.held == 1


async def test_a_record_still_unwritten_at_exit_is_logged_for_a_human(tmp_path: Path) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'books.db'}")
    lock = sqlite3.connect(tmp_path / "books.db", isolation_level=None, timeout=0)
    out = io.StringIO()
    configure_logging("INFO", out, cache=False)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock throughout
        guard = BooksGuard(ledger, write_timeout_s=0.2)
        with pytest.raises(Unbooked):
            await guard.record(sold("stuck"), {"state": "CA"}, 0.0, "v1")
        with pytest.raises(BooksUnavailable, match="nothing was routed"):
            guard.check()
        await guard.close()
    finally:
        configure_logging("INFO", cache=False)
        lock.execute("ROLLBACK")
        lock.close()
        await ledger.close()

    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    lost = [e for e in events if e["event"] == "ledger.unbooked_at_exit"]
    assert [(e["lead_id"], e["revenue"], e["buyers"]) for e in lost] == [("stuck", "33.33", ["a"])]
    assert not guard.writable
