"""The production wiring: the books, the live configuration version, the Admin API and the router."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from routelead.api.admin import AdminServicer, admin_token
from routelead.api.security import SecurityError, token_matches
from routelead.api.server import Service, serve_until_signalled
from routelead.api.state_admin import StateAdminServicer
from routelead.api.stats import StatsServicer
from routelead.records.answers import past_answer, recent_lead_ids
from routelead.records.buyer_stats import LedgerBuyerStats, keep_fresh, refresh
from routelead.records.configstore import ConfigStore, ConfigWatcher
from routelead.records.controls import ControlKeeper
from routelead.records.db import database_url
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports
from routelead.records.spool import apply_spool, spool_dir
from routelead.settings import Settings
from routelead.state.memory import (
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemorySuppressionStore,
)

log = structlog.get_logger("routelead.app")
# After a restart of the in-memory (embedded) state, retries of leads answered this recently,
# up to this many of the newest, get the answer back from the books instead of a new route.
RECALL_HOURS = 24
RECALL_LEADS = 100_000


async def serve_with_books(
    service: Service, config_path: str, settings: Settings, env: Mapping[str, str] | None = None
) -> None:
    """Until SIGTERM: the file seeds version 1; afterwards the database's live version rules.
    Each worker process opens its own connections and follows the live version itself."""
    text = await asyncio.to_thread(Path(config_path).read_text)
    token = admin_token(settings)
    if token and token_matches(token, service.security.token_digests):
        raise SecurityError("ROUTELEAD_ADMIN_TOKEN must differ from every routing token")
    ledger = await Ledger.open(database_url(settings))
    try:
        store = ConfigStore(ledger.engine)
        live = await store.seed(text, env)
        if live.document != text:
            log.warning(
                "config.file_not_live",
                detail="Admin changes made since the file was last edited are live; see `routelead admin`",
                live_version=live.version,
            )
        service.use_config(await store.compile(live, env))
        service.ledger = ledger
        spool = service.books_spool = spool_dir(settings)
        if spool is not None:
            # Leads routed before a shutdown whose records the books refused until then.
            await apply_spool(ledger, spool)
        if isinstance(service.idempotency, MemoryIdempotencyStore):
            # Memory forgets at every restart; the books remember what was answered before it.
            since = datetime.now(UTC) - timedelta(hours=RECALL_HOURS)
            earlier = await recent_lead_ids(ledger.engine, since, RECALL_LEADS)
            service.idempotency.recall(earlier, functools.partial(past_answer, ledger.engine))
            log.info("idempotency.recalled", leads=len(earlier), hours=RECALL_HOURS)
        else:
            from routelead.state.redis.idempotency import RedisIdempotencyStore

            if isinstance(service.idempotency, RedisIdempotencyStore):
                # Redis forgets (an outage, a lost key): the books remember every offer.
                service.idempotency.use_books(functools.partial(past_answer, ledger.engine))
        keeper: ControlKeeper | None = None
        if isinstance(service.caps, MemoryCapStore) and isinstance(service.dedupe, MemoryDedupeStore):
            # No Redis: caps, budgets, balances, dedupe windows and rotation are kept beside the books.
            rotation = service.rotation if isinstance(service.rotation, MemoryRotationStore) else None
            # And the suppression lists: an operator's do-not-contact entries outlive the process.
            kept = service.suppression if isinstance(service.suppression, MemorySuppressionStore) else None
            keeper = await ControlKeeper.open(ledger, service.caps, service.dedupe, rotation, settings, kept)
        reports = Reports(ledger.engine)
        # The ranking's post-accept rates come from the books (every replica's posts), refreshed.
        stats = service.stats = LedgerBuyerStats()
        await refresh(stats, reports)
        if token:

            def breakers() -> dict[str, str]:
                return service.router.breakers.states() if service.router is not None else {}

            service.extra_services = [
                AdminServicer(store, token, env).register,
                StateAdminServicer(
                    service.caps, breakers, token, ledger, service.suppression, service.dedupe.fingerprint
                ).register,
                StatsServicer(reports, token).register,
            ]
        else:
            log.info(
                "admin.disabled", detail="set ROUTELEAD_ADMIN_TOKEN to serve routelead.v1.Admin and Stats"
            )
        stop = asyncio.Event()
        watcher = asyncio.create_task(
            ConfigWatcher(store, service.use_config, live.version, env=env).run(stop)
        )
        freshener = asyncio.create_task(keep_fresh(stats, reports, stop))
        keeping = asyncio.create_task(keeper.run(stop)) if keeper is not None else None
        try:
            await serve_until_signalled(service)
        finally:
            stop.set()
            await watcher
            await freshener
            if keeping is not None:
                await keeping  # the last changes, written once no lead is in flight
    finally:
        books = service.router.books if service.router is not None else None
        # With the books refusing writes, queued writes are futile (their leads are spooled):
        # do not spend the pod's grace period waiting for them.
        await ledger.close(timeout_s=10.0 if books is None or books.writable else 1.0)
