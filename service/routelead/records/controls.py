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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
from routelead.settings import Settings
from routelead.state.memory import (
    Changes,
    Journal,
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryRotationStore,
    MemorySuppressionStore,
)
from routelead.state.select import StateConfigError, dedupe_secret

log = structlog.get_logger("routelead.controls")

# How often changes no lead carried to the disk are written, and expired rows deleted.
FLUSH_S = 1.0
PURGE_S = 600.0
# Suppression entries written per statement in a bulk load.
_CHUNK = 5_000


class ControlKeeper:
    """Writes the memory controls' journal with the ledger's transactions; reads it back at start."""

    def __init__(self, ledger: Ledger, journal: Journal) -> None:
        self._ledger = ledger
        self._journal = journal
        self._dialect = ledger.engine.dialect.name
        self._next_purge = 0.0
        # Statements built once: building an upsert cost more CPU than running it.
        self._built: dict[str, Any] = {}

    @classmethod
    async def open(
        cls,
        ledger: Ledger,
        caps: MemoryCapStore,
        dedupe: MemoryDedupeStore,
        rotation: MemoryRotationStore | None,
        settings: Settings,
        suppression: MemorySuppressionStore | None = None,
    ) -> ControlKeeper:
        """Restore what an earlier process kept into the memory stores, then keep every change."""
        secret = dedupe_secret(settings)
        if secret is None:
            secret = await asyncio.to_thread(_kept_secret, ledger)
            # The same consumer must hash the same after a restart, or the windows find nobody.
            dedupe.use_secret(secret)
        journal = Journal()
        keeper = cls(ledger, journal)
        await keeper._restore(caps, dedupe, rotation)
        if suppression is not None:
            await keeper._restore_suppression(suppression)
            suppression.keep = keeper.keep_suppression
        caps.journal = dedupe.journal = journal
        if rotation is not None:
            rotation.journal = journal
        journal.keep = ledger.write_companion
        ledger.attach(keeper)
        return keeper

    async def _restore_suppression(self, store: MemorySuppressionStore) -> None:
        async with self._ledger.engine.connect() as conn:
            rows = (await conn.execute(sa.select(control_suppression))).all()
        store.restore((str(r.list), str(r.buyer), str(r.digest)) for r in rows)
        log.info("controls.suppression_restored", entries=len(rows))

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

    async def _restore(
        self, caps: MemoryCapStore, dedupe: MemoryDedupeStore, rotation: MemoryRotationStore | None
    ) -> None:
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
        caps.restore(
            ((v.key, int(v.value), float(v.expires_at)) for v in values if v.kind == "count"),
            ((v.key, int(v.value)) for v in values if v.kind == "balance"),
            (
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
            ),
        )
        if rotation is not None:
            rotation.restore((v.key, int(v.value)) for v in values if v.kind == "turn")
        dedupe.restore((k.key, float(k.expires_at)) for k in keys)
        log.info(
            "controls.restored",
            counters=sum(1 for v in values if v.kind == "count"),
            balances=sum(1 for v in values if v.kind == "balance"),
            turns=sum(1 for v in values if v.kind == "turn"),
            reservations=len(held),
            dedupe_keys=len(keys),
        )

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


def _kept_secret(ledger: Ledger) -> bytes:
    """The dedupe key of an embedded SQLite database: generated at its first start and kept in a
    file beside it (`<database>.dedupe-key`, mode 0600), not in it, so a copy of the database
    alone does not let anyone test a guessed phone number or e-mail against its digests."""
    url = ledger.engine.url
    if ledger.dialect != "sqlite" or url.database in (None, "", ":memory:"):
        raise StateConfigError(
            "the duplicate check of a service with no REDIS_URL and PostgreSQL books needs a key that "
            "outlives the process: set ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
        )
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
