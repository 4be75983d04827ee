"""The embedded default's controls, kept beside the books so that a restart keeps them.

With no Redis the hot state is this process's memory (state/memory.py): caps and dollar budgets
(counted for every buyer, per period in its timezone), prepaid balances, flow and buyer
duplicate-check windows, rotation turns and open reservations. Memory stays the fast path; each
change is also noted in a Journal (a dict write), and the ledger writes the journal's latest
values in the same transaction as its next batch of records, on its own writer thread (SQLite)
or connection (PostgreSQL). A lead's counters are therefore on disk by the time its caller is
answered, as the lead is, and no lead waits for a disk write of its own: its controls share the
group commit. What no lead carries (a top-up, a settlement) is written at once and awaited; a
timer writes anything left over. At start the kept values are read back before any lead is routed.

Kept rather than rebuilt from the books: the books hold neither top-ups, nor the consumers' keyed
digests (the dedupe windows), nor rotation turns, nor the reservations released after a post
failed; keeping the counters themselves restores exactly what memory held, with one mechanism.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite

from routelead.domain.caps import Reservation
from routelead.records.ledger import Ledger
from routelead.records.schema import (
    control_dedupe,
    control_reservations,
    control_suppression,
    control_values,
)

log = structlog.get_logger("routelead.controls")

# How often changes no lead carried to the disk are written, and expired rows deleted.
FLUSH_S = 1.0
PURGE_S = 600.0
# Suppression entries written per statement in a bulk load.
_CHUNK = 5_000


# An open reservation as noted: the reservation, when it was made, its state and reason.
Held = tuple[Reservation, float, str, str]


class Changes(Protocol):
    """What the memory controls' journal (state/memory.py Journal) hands over to be written."""

    @property
    def values(self) -> Mapping[tuple[str, str], tuple[int, float | None]]: ...
    @property
    def dedupe(self) -> Mapping[str, float | None]: ...
    @property
    def reservations(self) -> Mapping[tuple[str, str], Held | None]: ...


class Journal(Protocol):
    def take(self) -> Any: ...
    def put_back(self, taken: Any) -> None: ...
    def __bool__(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Kept:
    """What an earlier process kept, for the memory stores to take back before any lead."""

    counts: list[tuple[str, int, float]]
    balances: list[tuple[str, int]]
    reservations: list[Held]
    turns: list[tuple[str, int]]
    dedupe: list[tuple[str, float]]
    suppression: list[tuple[str, str, str]]


class ControlKeeper:
    """Writes the memory controls' journal with the ledger's transactions; reads it back at start.
    The composition root (api/app.py) builds the memory stores around the journal and hands
    them what `kept` read."""

    def __init__(self, ledger: Ledger, journal: Journal) -> None:
        self._ledger = ledger
        self._journal = journal
        self._dialect = ledger.engine.dialect.name
        self._next_purge = 0.0
        # Statements built once: building an upsert cost more CPU than running it.
        self._built: dict[str, Any] = {}

    async def keep_suppression(self, name: str, buyer: str, digests: Sequence[str], add: bool) -> None:
        """A list change, on disk before it is applied and answered (an operator's bulk load: in
        chunks, one transaction)."""
        table = control_suppression
        async with self._ledger.engine.begin() as conn:
            for start in range(0, len(digests), _CHUNK):
                chunk = digests[start : start + _CHUNK]
                if add:
                    rows = [{"list": name, "buyer": buyer, "digest": d} for d in chunk]
                    insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
                    await conn.execute(insert(table).on_conflict_do_nothing(), rows)
                else:
                    await conn.execute(
                        sa.delete(table).where(
                            table.c.list == name, table.c.buyer == buyer, table.c.digest.in_(chunk)
                        )
                    )

    async def kept(self) -> Kept:
        now = time.time()
        live = sa.or_(control_values.c.expires_at.is_(None), control_values.c.expires_at > now)
        async with self._ledger.engine.connect() as conn:
            values = (await conn.execute(sa.select(control_values).where(live))).all()
            held = (await conn.execute(sa.select(control_reservations))).all()
            keys = (
                await conn.execute(
                    sa.select(control_dedupe.c.key, control_dedupe.c.expires_at)
                    .where(control_dedupe.c.expires_at > now)
                    .order_by(control_dedupe.c.expires_at)
                )
            ).all()
            listed = (await conn.execute(sa.select(control_suppression))).all()
        kept = Kept(
            [(v.key, int(v.value), float(v.expires_at)) for v in values if v.kind == "count"],
            [(v.key, int(v.value)) for v in values if v.kind == "balance"],
            [
                (
                    Reservation(
                        h.buyer_id,
                        tuple(h.counters),
                        h.lead_id,
                        h.reservation_id,
                        int(h.cents),
                        tuple(h.budget_counters),
                        bool(h.prepaid),
                    ),
                    float(h.reserved_at),
                    str(h.state),
                    str(h.reason),
                )
                for h in held
            ],
            [(v.key, int(v.value)) for v in values if v.kind == "turn"],
            [(k.key, float(k.expires_at)) for k in keys],
            [(str(r.list), str(r.buyer), str(r.digest)) for r in listed],
        )
        log.info(
            "controls.restored",
            counters=len(kept.counts),
            balances=len(kept.balances),
            turns=len(kept.turns),
            reservations=len(kept.reservations),
            dedupe_keys=len(kept.dedupe),
            suppression=len(kept.suppression),
        )
        return kept

    # --- the ledger's companion (records/ledger.py) ------------------------------------------------

    def take(self) -> Changes | None:
        changes = self._journal.take()
        return changes or None

    def put_back(self, taken: Changes) -> None:
        self._journal.put_back(taken)

    def write(self, conn: sa.Connection, taken: Changes) -> None:
        """In the ledger's transaction: upserts of the newest values, deletes of what is gone."""
        values = [
            {"kind": kind, "key": key, "value": value, "expires_at": expires}
            for (kind, key), (value, expires) in taken.values.items()
        ]
        if values:
            conn.execute(self._upsert(control_values, ["kind", "key"], ["value", "expires_at"]), values)
        keys = [{"key": k, "expires_at": e} for k, e in taken.dedupe.items() if e is not None]
        if keys:
            conn.execute(self._upsert(control_dedupe, ["key"], ["expires_at"]), keys)
        gone = [{"k": k} for k, e in taken.dedupe.items() if e is None]
        if gone:
            key = control_dedupe.c.key == sa.bindparam("k")
            conn.execute(self._once("dedupe-", lambda: sa.delete(control_dedupe).where(key)), gone)
        held = [
            {
                "buyer_id": r.buyer_id,
                "reservation_id": r.id,
                "lead_id": r.lead_id,
                "cents": r.cents,
                "counters": list(r.keys),
                "budget_counters": list(r.budget_keys),
                "prepaid": r.prepaid,
                "reserved_at": at,
                "state": state,
                "reason": reason,
            }
            for (r, at, state, reason) in (row for row in taken.reservations.values() if row is not None)
        ]
        if held:
            columns = ["lead_id", "cents", "counters", "budget_counters", "prepaid", "reserved_at", "state"]
            upsert = self._upsert(control_reservations, ["buyer_id", "reservation_id"], [*columns, "reason"])
            conn.execute(upsert, held)
        closed = [{"b": b, "r": rid} for (b, rid), row in taken.reservations.items() if row is None]
        if closed:
            c = control_reservations.c
            where = (c.buyer_id == sa.bindparam("b")) & (c.reservation_id == sa.bindparam("r"))
            delete = self._once("reservations-", lambda: sa.delete(control_reservations).where(where))
            conn.execute(delete, closed)
        if time.time() >= self._next_purge:
            self._purge(conn)

    def _upsert(self, table: sa.Table, key: list[str], update: list[str]) -> Any:
        def build() -> Any:
            stmt = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)
            return stmt.on_conflict_do_update(
                index_elements=key, set_={name: stmt.excluded[name] for name in update}
            )

        return self._once(f"{table.name}+", build)

    def _once(self, name: str, build: Callable[[], Any]) -> Any:
        if (stmt := self._built.get(name)) is None:
            stmt = self._built[name] = build()
        return stmt

    def _purge(self, conn: sa.Connection) -> None:
        """Periods that ended and windows that closed are deleted, not kept forever."""
        now = time.time()
        self._next_purge = now + PURGE_S
        conn.execute(sa.delete(control_values).where(control_values.c.expires_at < now))
        conn.execute(sa.delete(control_dedupe).where(control_dedupe.c.expires_at < now))

    # --- the timer ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: write what no lead's transaction carried; then a last write."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        if not self._journal:
            return
        try:
            await self._ledger.write_companion()
        except Exception as exc:  # the books refuse writes: the changes wait for the next try
            log.warning("controls.unwritten", error=type(exc).__name__, detail=str(exc)[:200])


def kept_secret(ledger: Ledger) -> bytes | None:
    """The dedupe key of an embedded SQLite database: generated at its first start and kept in a
    file beside it (`<database>.dedupe-key`, mode 0600), not in it, so a copy of the database
    alone does not let anyone test a guessed phone number or e-mail against its digests.
    None: these books have no file to keep it beside (PostgreSQL, or SQLite in memory)."""
    url = ledger.engine.url
    if ledger.dialect != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(f"{url.database}.dedupe-key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    log.info("controls.dedupe_key_created", path=str(path))
    return path.read_bytes().strip()
