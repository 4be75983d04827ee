"""SQLite WAL checkpoints off the commit path."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import structlog

log = structlog.get_logger("routelead.ledger")


class Checkpointer:
    """A PASSIVE checkpoint every `every_s` while there are writes, on a connection of its own in a
    worker thread.

    Left alone, SQLite checkpoints inside whichever commit crosses 1,000 WAL pages, and that commit,
    with every lead queued behind it, waits for the database file's fsync. At 100 leads/s that
    made the ledger write's p99 110 ms and p99.9 323 ms; with this, 16 and 27 ms
    (benchmarks/README.md). PASSIVE never waits for readers or writers. The automatic checkpoint
    stays on as the backstop that resets the WAL; it finds almost nothing left to copy.
    """

    def __init__(self, path: str, every_s: float = 0.25) -> None:
        self._path = path
        self._every_s = every_s
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._conn: sqlite3.Connection | None = None

    def wrote(self) -> None:
        """Called after each write transaction (on the event loop)."""
        self._dirty = True
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            # Not cancelled: a checkpoint running in its thread must finish before its connection
            # closes (a full test run crashed once, likely from exactly that).
            self._stop.set()
            await self._task
            self._task = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._every_s)
            if not self._dirty or self._stop.is_set():
                continue
            self._dirty = False
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as exc:
                # Another process checkpointing, a busy file: the next round (or SQLite's own
                # automatic checkpoint) catches up.
                log.debug("ledger.checkpoint_skipped", error=type(exc).__name__)

    def _checkpoint(self) -> None:
        if self._conn is None:
            # One thread at a time uses it (the loop above awaits each round).
            self._conn = sqlite3.connect(self._path, timeout=1, check_same_thread=False)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
