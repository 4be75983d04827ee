"""Pick the hot-state backend from the environment: Redis when REDIS_URL is set, else memory."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from routelead.state.memory import (
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemoryVolumeStore,
)
from routelead.state.ports import CapStore, DedupeStore, IdempotencyStore, RotationStore, VolumeStore


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

    async def close(self) -> None:
        if self.closer is not None:
            await self.closer()


def dedupe_secret(env: Mapping[str, str]) -> bytes | None:
    """ROUTELEAD_DEDUPE_KEY, or the file named by ROUTELEAD_DEDUPE_KEY_FILE (a mounted secret)."""
    if value := env.get("ROUTELEAD_DEDUPE_KEY"):
        secret = value.encode()
    elif path := env.get("ROUTELEAD_DEDUPE_KEY_FILE"):
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise StateConfigError(f"ROUTELEAD_DEDUPE_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    else:
        return None
    if len(secret) < 16:
        raise StateConfigError("the dedupe key must be at least 16 bytes (ROUTELEAD_DEDUPE_KEY)")
    return secret


def redis_url(env: Mapping[str, str]) -> str:
    """REDIS_URL, or ROUTELEAD_REDIS_URL (the name deploy/ uses); empty: memory."""
    return env.get("REDIS_URL") or env.get("ROUTELEAD_REDIS_URL") or ""


def answer_ttl_s(env: Mapping[str, str]) -> int:
    """ROUTELEAD_ANSWER_TTL_HOURS: how long Redis keeps each answer for a retried lead_id (7 days)."""
    raw = env.get("ROUTELEAD_ANSWER_TTL_HOURS", "").strip()
    try:
        hours = float(raw) if raw else 168.0
    except ValueError:
        hours = -1.0
    if not 1 <= hours <= 2160:
        raise StateConfigError(f"ROUTELEAD_ANSWER_TTL_HOURS: hours from 1 to 2160 (90 days), got {raw!r}")
    return int(hours * 3600)


def check_state_env(env: Mapping[str, str], workers: int = 1, books: str = "") -> None:
    """Raise StateConfigError for a hot-state setting `hot_state` would refuse, or one that cannot
    keep caps exact across `workers` processes (`books`: the books' database URL, when served)."""
    if workers > 1 and not redis_url(env):
        # Memory state is per process: each worker would count caps, budgets and dedupe alone and
        # answer a retried lead_id from its own memory, so N workers could sell N× a cap.
        raise StateConfigError(
            f"--workers {workers} (ROUTELEAD_WORKERS) needs shared hot state: set REDIS_URL (and "
            "ROUTELEAD_DEDUPE_KEY), or run one worker; in-memory caps, dedupe and idempotency "
            f"are per process, so {workers} workers could sell a buyer {workers}x its cap"
        )
    answer_ttl_s(env)
    secret = dedupe_secret(env)
    if not redis_url(env) and books.startswith("postgresql") and secret is None:
        # The memory controls are kept in PostgreSQL too (records/controls.py), but a random key
        # per process would make the same consumer hash differently after every restart.
        raise StateConfigError(
            "DATABASE_URL without REDIS_URL keeps caps, budgets and duplicate checks in PostgreSQL "
            "across restarts; the duplicate check needs a key that outlives the process: set "
            "ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
        )
    if redis_url(env) and secret is None:
        # Replicas must agree on the key, or the same consumer hashes differently on each.
        raise StateConfigError(
            "REDIS_URL is set but no dedupe key: set ROUTELEAD_DEDUPE_KEY (or ROUTELEAD_DEDUPE_KEY_FILE)"
        )


def hot_state(env: Mapping[str, str] | None = None) -> HotState:
    env = os.environ if env is None else env
    check_state_env(env)
    secret = dedupe_secret(env)
    url = redis_url(env)
    if not url:
        return HotState(
            MemoryCapStore(),
            MemoryDedupeStore(secret=secret),
            MemoryIdempotencyStore(),
            MemoryRotationStore(),
            "memory",
            volume=MemoryVolumeStore(),
        )
    assert secret is not None  # checked above
    from routelead.state.redis import connect

    shared = connect(url, secret, answer_ttl_s=answer_ttl_s(env))
    return HotState(
        shared.caps, shared.dedupe, shared.idempotency, shared.rotation, "redis", shared.close, shared.volume
    )
