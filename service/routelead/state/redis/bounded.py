"""Every Redis call is bounded: by its own timeout and by the lead's remaining deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from routelead.state.ports import StateMetrics, StateUnavailable, remaining_s

T = TypeVar("T")
log = structlog.get_logger("routelead.state.redis")

# After a failure, callers treat Redis as down this long (the mirror refresh clears it sooner).
DOWN_FOR_S = 0.5
# A refused connection means down at once; timeouts only when they come in a row (one slow
# answer on a busy event loop is not an outage).
TIMEOUTS_FOR_DOWN = 3


class Health:
    """Shared by the stores of one connection: is Redis answering, as far as we know?"""

    def __init__(self, op_timeout_s: float, metrics: StateMetrics) -> None:
        self.op_timeout_s = op_timeout_s
        self.metrics = metrics
        self._down_until = 0.0
        self._timeouts = 0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def ok(self) -> None:
        self._down_until = 0.0
        self._timeouts = 0

    def failed(self, what: str, exc: BaseException) -> None:
        self.metrics.error()
        if isinstance(exc, TimeoutError | RedisTimeout):
            self._timeouts += 1
            if self._timeouts < TIMEOUTS_FOR_DOWN:
                return
        if self.up:
            log.warning("redis.unavailable", op=what, error=type(exc).__name__)
        self._down_until = time.monotonic() + DOWN_FOR_S

    async def call(self, what: str, op: Callable[[], Awaitable[T]], *, settle: bool = False) -> T:
        """Run `op` within the op timeout, and within the lead deadline unless it records an outcome
        that has already happened (`settle`: commit, release, unsettled are never cut short by it)."""
        budget = self.op_timeout_s
        left = remaining_s()
        if left is not None and not settle:
            budget = min(budget, left)
        if budget <= 0:
            raise StateUnavailable(f"{what}: no time left before the lead's deadline")
        try:
            async with asyncio.timeout(budget):
                result = await op()
        # RedisClusterException is not a RedisError: it is what a cluster client raises when no
        # node it knows answers (the whole cluster away), which is an outage like any other.
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            self.failed(what, exc)
            raise StateUnavailable(f"{what}: Redis did not answer ({type(exc).__name__})") from exc
        self.ok()
        return result
