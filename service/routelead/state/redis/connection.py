"""One place that opens a Redis client: a single server, or a Redis Cluster (`ROUTELEAD_REDIS_CLUSTER`).

Both clients take the same calls. On a cluster every multi-key call must keep its keys in one hash
slot; where each family of keys lives, and why, is written beside the keys (caps.py, quotes.py, …)
and summed up in docs/SCALING.md.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

Client: TypeAlias = aioredis.Redis | RedisCluster


def open_client(url: str, *, cluster: bool = False, op_timeout_s: float | None = None) -> Client:
    """A client for `url`; with `cluster`, `url` names any one node and the client finds the rest
    (CLUSTER SLOTS), sends each key to its slot's master and follows MOVED/ASK on a reshard."""
    options: dict[str, Any] = {"health_check_interval": 10}
    if op_timeout_s is not None:
        options |= {
            "socket_timeout": op_timeout_s,
            "socket_connect_timeout": op_timeout_s,
            # One immediate retry on a fresh connection: a pooled connection may have died with a
            # restarted Redis. Each call stays bounded by Health.call's timeout regardless.
            "retry": Retry(NoBackoff(), 1),
        }
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)
