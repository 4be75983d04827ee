"""Ledger records the books refused until shutdown, kept on disk and applied at the next start.

A routed lead whose record the database would not take is held in memory and retried
(`records/guard.py`); if the process has to stop before the database comes back, its record
goes to a spool file instead of only a log line. The next `serve` applies every spool file
before it takes leads (applying a record twice changes nothing) and removes it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from routelead.records.codec import BadRecord, LeadRecord, Record, decode, encode
from routelead.records.db import DEFAULT_SQLITE_PATH
from routelead.records.ledger import Ledger

if TYPE_CHECKING:
    from routelead.settings import Settings

log = structlog.get_logger("routelead.records")


def spool_dir(settings: Settings) -> Path | None:
    """ROUTELEAD_SPOOL_DIR; else, for the embedded SQLite books, `<db file>.spool` beside it.
    With PostgreSQL and no ROUTELEAD_SPOOL_DIR there is none (set it to a persistent volume)."""
    if chosen := settings.spool_dir.strip():
        return Path(chosen)
    if settings.database_url.strip():
        return None
    db = settings.db_path.strip() or DEFAULT_SQLITE_PATH
    return Path(f"{db}.spool")


def write_spool(directory: Path, records: Sequence[LeadRecord]) -> Path:
    """One file per shutdown, written whole and then renamed: never half a file to apply."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"unbooked-{time.time_ns()}-{os.getpid()}.jsonl"
    partial = final.with_suffix(".partial")
    with partial.open("wb") as f:
        for r in records:
            f.write(encode(r) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    partial.rename(final)
    return final


def read_spool(directory: Path) -> list[tuple[Path, list[Record]]]:
    """Every readable spool file and its records. One that cannot be read is left where it is,
    with an error line, for a human."""
    found: list[tuple[Path, list[Record]]] = []
    for path in sorted(directory.glob("unbooked-*.jsonl")) if directory.is_dir() else []:
        try:
            found.append((path, [decode(line) for line in path.read_bytes().splitlines() if line.strip()]))
        except (OSError, BadRecord) as exc:
            log.error("ledger.spool_unreadable", path=str(path), error=str(exc))
    return found


async def apply_spool(ledger: Ledger, directory: Path) -> int:
    """Apply and remove every spool file (at start-up, before any lead); the records applied."""
    applied = 0
    for path, records in await asyncio.to_thread(read_spool, directory):
        await ledger.apply(records)
        await asyncio.to_thread(path.unlink)
        applied += len(records)
        log.info("ledger.spool_applied", path=str(path), records=len(records))
    return applied
