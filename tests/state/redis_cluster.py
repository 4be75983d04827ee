"""A real three-master Redis Cluster, started from the installed redis-server and redis-cli on free
loopback ports, for the cluster tests (never the machine's :6379)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import port_for
import pytest
import redis

INSTALL = (
    "the Redis Cluster tests need redis-server and redis-cli (Redis 7 or newer) on PATH: "
    "apt-get install redis-server redis-tools"
)


def binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).is_file():
        pytest.fail(f"{name} not found: {INSTALL}", pytrace=False)
    return found


@dataclass
class RedisCluster:
    ports: list[int]
    dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any one node: the cluster client discovers the rest."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i])

    def nodes(self) -> list[redis.Redis]:
        return [self.node(i) for i in range(len(self.ports))]

    def flush(self) -> None:
        for n in self.nodes():
            with n:
                n.flushall()
                n.script_flush()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(check: object, what: str, within_s: float = 30.0) -> None:
    give_up = time.monotonic() + within_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():  # type: ignore[operator]
                return
        if time.monotonic() > give_up:
            raise AssertionError(f"Redis Cluster: {what} within {within_s} s")
        time.sleep(0.1)


def start_cluster(masters: int = 3) -> RedisCluster:
    server, cli = binary("redis-server"), binary("redis-cli")
    # Short directory: the node files and logs; nothing is persisted (--save '', no AOF).
    work = Path(tempfile.mkdtemp(prefix="rl-cluster-", dir="/tmp"))
    ports = [port_for.select_random() for _ in range(masters)]
    # The bus port is set, not port+10000, which may be taken or past 65535.
    buses = [port_for.select_random(exclude_ports=ports) for _ in range(masters)]
    cluster = RedisCluster(ports, work)
    try:
        for port, bus in zip(ports, buses, strict=True):
            argv = [
                server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(work / f"nodes-{port}.conf"),
                "--cluster-port", str(bus),
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(work),
                "--logfile", str(work / f"{port}.log"),
            ]  # fmt: skip
            cluster.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(masters):
            _wait(cluster.node(i).ping, f"node {ports[i]} did not answer PING")
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}{create.stderr}")

        def ready() -> bool:
            for n in cluster.nodes():
                with n:
                    raw = cast(Any, n).execute_command("CLUSTER", "INFO")
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if "cluster_state:ok" not in text or f"cluster_known_nodes:{masters}" not in text:
                        return False
            return True

        _wait(ready, "cluster_state:ok on every node")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster() -> Iterator[RedisCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
