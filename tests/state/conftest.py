"""Throwaway redis-server processes on free loopback ports (never the machine's :6379)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import port_for
import pytest
import redis
from pytest_redis.executor import RedisExecutor
from routelead.state.memory import (
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemoryVolumeStore,
)
from routelead.state.ports import (
    CapStore,
    DedupeStore,
    IdempotencyStore,
    RotationStore,
    StateMetrics,
    VolumeStore,
)
from routelead.state.redis import RedisState, connect
from routelead.telemetry.metrics import PrometheusStateCounters

SECRET = b"test-dedupe-key-0123456789abcdef"
INSTALL = "redis-server is required for these tests: apt-get install redis-server"


def redis_binary() -> str:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(exe, os.X_OK):
        pytest.fail(INSTALL, pytrace=False)
    return exe


@dataclass
class RedisProcess:
    executor: RedisExecutor
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


def start_redis(*, appendonly: bool = False) -> RedisProcess:
    port = port_for.select_random()
    # Short directory: the unix socket path redis-server creates must stay under 107 bytes.
    datadir = Path(tempfile.mkdtemp(prefix="rl-redis-", dir="/tmp"))
    executor = RedisExecutor(
        executable=redis_binary(),
        databases=4,
        redis_timeout=30,
        loglevel="warning",
        host="127.0.0.1",
        port=port,
        datadir=datadir,
        appendonly="yes" if appendonly else "no",
        startup_timeout=30,
    )
    executor.start()
    return RedisProcess(executor, port)


@pytest.fixture(scope="session")
def redis_proc_shared() -> Iterator[RedisProcess]:
    proc = start_redis()
    yield proc
    proc.executor.stop()


@pytest.fixture
def redis_url(redis_proc_shared: RedisProcess) -> str:
    """A clean database on the shared throwaway server."""
    with redis_proc_shared.client() as c:
        c.flushall()
    return redis_proc_shared.url


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A server of the test's own, persistent (AOF), that the test may stop and restart."""
    proc = start_redis(appendonly=True)
    yield proc
    if proc.executor.running():
        proc.executor.stop()


@dataclass
class Backend:
    name: str
    caps: CapStore
    dedupe: DedupeStore
    idempotency: IdempotencyStore
    rotation: RotationStore
    volume: VolumeStore
    redis: RedisState | None = None


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The contract suite runs once per backend: both must behave the same."""
    if request.param == "memory":
        yield Backend(
            "memory",
            # Exported as the served process exports them (the composition root injects these).
            MemoryCapStore(StateMetrics(export=PrometheusStateCounters())),
            MemoryDedupeStore(secret=SECRET),
            MemoryIdempotencyStore(),
            MemoryRotationStore(),
            MemoryVolumeStore(),
        )
        return
    url = request.getfixturevalue("redis_url")
    state = connect(url, SECRET, op_timeout_s=2.0, counters=PrometheusStateCounters())
    yield Backend("redis", state.caps, state.dedupe, state.idempotency, state.rotation, state.volume, state)
    await state.close()
