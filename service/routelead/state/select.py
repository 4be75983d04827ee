"""Pick the hot-state backend from the settings: Redis when REDIS_URL is set, else memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from routelead.settings import Settings
from routelead.state.memory import (
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemorySuppressionStore,
    MemoryVolumeStore,
)
from routelead.state.ports import (
    CapStore,
    DedupeStore,
    IdempotencyStore,
    RotationStore,
    StateCounters,
    StateMetrics,
    SuppressionStore,
    VolumeStore,
)
from routelead.state.quotes import MemoryQuoteLimiter, MemoryQuoteStore, QuoteLimiter, QuoteStore


class StateConfigError(ValueError):
    pass


@dataclass
class HotState:
    caps: CapStore
    dedupe: DedupeStore
    idempotency: IdempotencyStore
    rotation: RotationStore
    backend: str
    closer: Callable[[], Awaitable[None]] | None = None
    volume: VolumeStore | None = None
    quotes: QuoteStore | None = None
    quote_limits: QuoteLimiter | None = None
    suppression: SuppressionStore | None = None

    async def close(self) -> None:
        if self.closer is not None:
            await self.closer()


def dedupe_secret(settings: Settings) -> bytes | None:
    """ROUTELEAD_DEDUPE_KEY, or the file named by ROUTELEAD_DEDUPE_KEY_FILE (a mounted secret)."""
    if value := settings.dedupe_key:
        secret = value.encode()
    elif path := settings.dedupe_key_file:
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise StateConfigError(f"ROUTELEAD_DEDUPE_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    else:
        return None
    if len(secret) < 16:
        raise StateConfigError("the dedupe key must be at least 16 bytes (ROUTELEAD_DEDUPE_KEY)")
    return secret


def redis_url(settings: Settings) -> str:
    """REDIS_URL, or ROUTELEAD_REDIS_URL (the name deploy/ uses); empty: memory."""
    return settings.redis_url


def answer_ttl_s(settings: Settings) -> int:
    """ROUTELEAD_ANSWER_TTL_HOURS: how long Redis keeps each answer for a retried lead_id (7 days;
    the settings check the range, 1 to 2160 hours)."""
    return int(settings.answer_ttl_hours * 3600)


def check_state_env(settings: Settings, workers: int = 1, books: str = "") -> None:
    """Raise StateConfigError for a hot-state setting `hot_state` would refuse, or one that cannot
    keep caps exact across `workers` processes (`books`: the books' database URL, when served)."""
    if workers > 1 and not redis_url(settings):
        # Memory state is per process: each worker would count caps, budgets and dedupe alone and
        # answer a retried lead_id from its own memory, so N workers could sell N× a cap.
        raise StateConfigError(
            f"--workers {workers} (ROUTELEAD_WORKERS) needs shared hot state: set REDIS_URL (and "
            "ROUTELEAD_DEDUPE_KEY), or run one worker; in-memory caps, dedupe and idempotency "
            f"are per process, so {workers} workers could sell a buyer {workers}x its cap"
        )
    if settings.redis_cluster and not redis_url(settings):
        # An operator who asked for a cluster and got per-process memory would not notice until
        # caps were oversold across replicas.
        raise StateConfigError(
            "ROUTELEAD_REDIS_CLUSTER is set but REDIS_URL is not: name any one node of the cluster "
            "in REDIS_URL (e.g. redis://redis-0.redis:6379/0), or unset ROUTELEAD_REDIS_CLUSTER"
        )
    secret = dedupe_secret(settings)
    if not redis_url(settings) and books.startswith("postgresql") and secret is None:
        # The memory controls are kept in PostgreSQL too (records/controls.py), but a random key
        # per process would make the same consumer hash differently after every restart.
        raise StateConfigError(
            "DATABASE_URL without REDIS_URL keeps caps, budgets and duplicate checks in PostgreSQL "
            "across restarts; the duplicate check needs a key that outlives the process: set "
            "ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
        )
    if redis_url(settings) and secret is None:
        # Replicas must agree on the key, or the same consumer hashes differently on each.
        raise StateConfigError(
            "REDIS_URL is set but no dedupe key: set ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
        )


def hot_state(settings: Settings, counters: StateCounters | None = None) -> HotState:
    """`counters`: where the stores' counters are exported (the composition root's Prometheus)."""
    check_state_env(settings)
    secret = dedupe_secret(settings)
    url = redis_url(settings)
    if not url:
        return HotState(
            MemoryCapStore(StateMetrics() if counters is None else StateMetrics(export=counters)),
            MemoryDedupeStore(secret=secret),
            MemoryIdempotencyStore(),
            MemoryRotationStore(),
            "memory",
            volume=MemoryVolumeStore(),
            quotes=MemoryQuoteStore(),
            quote_limits=MemoryQuoteLimiter(),
            suppression=MemorySuppressionStore(),
        )
    assert secret is not None  # checked above
    from routelead.state.redis import connect

    shared = connect(
        url,
        secret,
        op_timeout_s=settings.redis_timeout_ms / 1000,
        answer_ttl_s=answer_ttl_s(settings),
        cluster=settings.redis_cluster,
        counters=counters,
    )
    return HotState(
        shared.caps,
        shared.dedupe,
        shared.idempotency,
        shared.rotation,
        "redis",
        shared.close,
        shared.volume,
        shared.quotes,
        shared.quote_limits,
        shared.suppression,
    )
