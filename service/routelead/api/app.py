"""The composition root of `serve`: every adapter is built here, once, in order — the books, the
hot state (Redis, or memory kept beside the books), the ranking's rates, the Admin API — and the
service gets them whole. Nothing is set on a part after it is built."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from routelead.api.admin import AdminServicer, admin_token
from routelead.api.security import SecurityError, token_matches
from routelead.api.server import Service, serve_until_signalled
from routelead.api.state_admin import StateAdminServicer
from routelead.api.stats import StatsServicer
from routelead.config.runtime import RuntimeConfig
from routelead.domain.breaker import Breakers
from routelead.domain.outcome import RoutingResult
from routelead.records.answers import past_answer, recent_lead_ids
from routelead.records.buyer_stats import keep_fresh, refresh
from routelead.records.configstore import ConfigStore, ConfigWatcher
from routelead.records.controls import ControlKeeper, kept_secret
from routelead.records.db import database_url
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports
from routelead.records.spool import apply_spool, spool_dir
from routelead.settings import Settings
from routelead.state.memory import (
    Journal,
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemorySuppressionStore,
    MemoryVolumeStore,
    SeededBuyerStats,
)
from routelead.state.ports import BuyerStats, StateCounters, StateMetrics
from routelead.state.quotes import MemoryQuoteLimiter, MemoryQuoteStore
from routelead.state.select import HotState, StateConfigError, dedupe_secret, hot_state, redis_url
from routelead.telemetry.metrics import PrometheusStateCounters

if TYPE_CHECKING:
    from routelead.api.process import ServeOptions

log = structlog.get_logger("routelead.app")
# After a restart of the in-memory (embedded) state, retries of leads answered this recently,
# up to this many of the newest, get the answer back from the books instead of a new route.
RECALL_HOURS = 24
RECALL_LEADS = 100_000


async def serve(opts: ServeOptions, *, reuse_port: bool) -> None:
    """One worker, until SIGTERM: with the books when a config file is served from them."""
    counters = PrometheusStateCounters()
    if opts.config_path:
        await serve_with_books(opts, reuse_port=reuse_port, counters=counters)
        return
    # Per worker, after the fork: Redis (REDIS_URL) or this process's own memory.
    state = hot_state(opts.settings, counters)
    try:
        await serve_until_signalled(_service(opts, reuse_port, state))
    finally:
        await state.close()


async def serve_with_books(
    opts: ServeOptions, *, reuse_port: bool, counters: StateCounters | None = None
) -> None:
    """Until SIGTERM: the file seeds version 1; afterwards the database's live version rules.
    Each worker process opens its own connections and follows the live version itself."""
    settings = opts.settings
    text = await asyncio.to_thread(Path(opts.config_path).read_text)
    token = admin_token(settings)
    if token and token_matches(token, opts.security.token_digests):
        raise SecurityError("ROUTELEAD_ADMIN_TOKEN must differ from every routing token")
    ledger = await Ledger.open(database_url(settings))
    state: HotState | None = None
    service: Service | None = None
    try:
        store = ConfigStore(ledger.engine)
        live = await store.seed(text, None)
        if live.document != text:
            log.warning(
                "config.file_not_live",
                detail="Admin changes made since the file was last edited are live; see `routelead admin`",
                live_version=live.version,
            )
        config = await store.compile(live, None)
        spool = spool_dir(settings)
        if spool is not None:
            # Leads routed before a shutdown whose records the books refused until then.
            await apply_spool(ledger, spool)
        keeper: ControlKeeper | None = None
        if redis_url(settings):
            state = hot_state(settings, counters)
        else:
            # No Redis: caps, budgets, balances, dedupe windows, rotation and the suppression
            # lists are kept beside the books.
            state, keeper = await embedded_state(settings, ledger, counters)
        # The hot state forgets (a restart, an outage, a lost key): the books remember.
        await state.idempotency.backed_by(BookAnswers(ledger.engine))
        reports = Reports(ledger.engine)
        # The ranking's post-accept rates come from the books (every replica's posts), refreshed.
        stats = SeededBuyerStats()
        await refresh(stats, reports)
        breakers = Breakers()
        extra: list[Callable[[grpc.aio.Server], str]] = []
        if token:
            extra = [
                AdminServicer(store, token, None).register,
                StateAdminServicer(
                    state.caps, breakers.states, token, ledger, state.suppression, state.dedupe.fingerprint
                ).register,
                StatsServicer(reports, token).register,
            ]
        else:
            log.info(
                "admin.disabled", detail="set ROUTELEAD_ADMIN_TOKEN to serve routelead.v1.Admin and Stats"
            )
        service = _service(
            opts,
            reuse_port,
            state,
            config=config,
            ledger=ledger,
            books_spool=spool,
            stats=stats,
            breakers=breakers,
            extra_services=extra,
        )
        stop = asyncio.Event()
        watcher = asyncio.create_task(ConfigWatcher(store, service.use_config, live.version).run(stop))
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
        books = service.router.books if service is not None else None
        # With the books refusing writes, queued writes are futile (their leads are spooled):
        # do not spend the pod's grace period waiting for them.
        await ledger.close(timeout_s=10.0 if books is None or books.writable else 1.0)
        if state is not None:
            await state.close()


def _service(
    opts: ServeOptions,
    reuse_port: bool,
    state: HotState,
    *,
    config: RuntimeConfig | None = None,
    ledger: Ledger | None = None,
    books_spool: Path | None = None,
    stats: BuyerStats | None = None,
    breakers: Breakers | None = None,
    extra_services: Sequence[Callable[[grpc.aio.Server], str]] = (),
) -> Service:
    return Service(
        opts.config if config is None else config,
        address=opts.listen,
        security=opts.security,
        reuse_port=reuse_port,
        health_address=opts.health_listen or None,
        max_in_flight=opts.max_in_flight,
        caps=state.caps,
        dedupe=state.dedupe,
        idempotency=state.idempotency,
        rotation=state.rotation,
        volume=state.volume,
        quotes=state.quotes,
        quote_limits=state.quote_limits,
        suppression=state.suppression,
        ledger=ledger,
        books_spool=books_spool,
        stats=stats,
        breakers=breakers,
        extra_services=extra_services,
    )


async def embedded_state(
    settings: Settings, ledger: Ledger, counters: StateCounters | None = None
) -> tuple[HotState, ControlKeeper]:
    """The memory stores, built around the journal the books keep (records/controls.py) and
    holding what an earlier process kept, before any lead is routed."""
    secret = dedupe_secret(settings)
    if secret is None:
        # The same consumer must hash the same after a restart, or the windows find nobody.
        secret = await asyncio.to_thread(kept_secret, ledger)
        if secret is None:
            raise StateConfigError(
                "the duplicate check of a service with no REDIS_URL and PostgreSQL books needs a key "
                "that outlives the process: set ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
            )
    journal = Journal(keep=ledger.write_companion)
    keeper = ControlKeeper(ledger, journal)
    kept = await keeper.kept()
    metrics = StateMetrics() if counters is None else StateMetrics(export=counters)
    caps = MemoryCapStore(metrics, journal)
    caps.restore(kept.counts, kept.balances, kept.reservations)
    dedupe = MemoryDedupeStore(secret=secret, journal=journal)
    dedupe.restore(kept.dedupe)
    rotation = MemoryRotationStore(journal)
    rotation.restore(kept.turns)
    suppression = MemorySuppressionStore(keep=keeper.keep_suppression)
    suppression.restore(kept.suppression)
    # From now on every write transaction of the books carries the journal's changes.
    ledger.attach(keeper)
    state = HotState(
        caps,
        dedupe,
        MemoryIdempotencyStore(),
        rotation,
        "memory",
        volume=MemoryVolumeStore(),
        quotes=MemoryQuoteStore(),
        quote_limits=MemoryQuoteLimiter(),
        suppression=suppression,
    )
    return state, keeper


@dataclass(frozen=True, slots=True)
class BookAnswers:
    """The books' answers, as the idempotency stores fall back on them (state/ports.py PastAnswers)."""

    engine: AsyncEngine

    async def answer(self, lead_id: str) -> RoutingResult | None:
        return await past_answer(self.engine, lead_id)

    async def recent(self) -> list[str]:
        since = datetime.now(UTC) - timedelta(hours=RECALL_HOURS)
        earlier = await recent_lead_ids(self.engine, since, RECALL_LEADS)
        log.info("idempotency.recalled", leads=len(earlier), hours=RECALL_HOURS)
        return earlier
