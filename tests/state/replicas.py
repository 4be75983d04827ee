"""Real service processes for the multi-replica tests: `routelead serve` (or the clocked variant)
sharing one throwaway Redis, reached over gRPC on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import port_for
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.configs import GOOD_LEAD
from tests.state.conftest import SECRET

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp: Path, doc: dict[str, Any]) -> Path:
    path = tmp / "flows.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def env_for(redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        ROUTELEAD_DEDUPE_KEY=SECRET.decode(),
        # Two shared cores under parallel test load: a generous per-call bound.
        ROUTELEAD_REDIS_TIMEOUT_MS="250",
    )
    return env


def consumer(i: int) -> dict[str, str]:
    """A distinct person per i, so no duplicate check interferes."""
    return {**GOOD_LEAD, "email": f"person{i}@example.com", "phone": f"555{i:07d}"}


class Replica:
    """One service process; `route` sends it a lead."""

    def __init__(self, config: Path, redis_url: str, clock_file: Path | None = None) -> None:
        self.port = port_for.select_random()
        listen = f"127.0.0.1:{self.port}"
        if clock_file is None:
            argv = [
                sys.executable,
                "-m",
                "routelead.cli",
                "serve",
                "--config",
                str(config),
                "--listen",
                listen,
            ]
        else:
            argv = [sys.executable, "-m", "tests.state.clocked_serve", str(config), listen, str(clock_file)]
        self.proc = subprocess.Popen(
            [*argv, *(["--log-level", "WARNING"] if clock_file is None else [])],
            env=env_for(redis_url),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.channel = grpc.aio.insecure_channel(listen)
        self.stub = pb_grpc.RouteLeadStub(self.channel)

    async def ready(self, within_s: float = 30.0) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        give_up = time.monotonic() + within_s
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"replica exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > give_up:
                raise AssertionError("replica did not become ready")
            await asyncio.sleep(0.1)

    async def route(
        self, fields: dict[str, str], lead_id: str = "", deadline_s: float = 5.0
    ) -> pb.RouteLeadResponse:
        request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=fields, lead_id=lead_id)
        reply: pb.RouteLeadResponse = await self.stub.RouteLead(request, timeout=deadline_s)
        return reply

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> None:
        await self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr:
            self.proc.stderr.close()


async def replicas(n: int, config: Path, redis_url: str, clock_file: Path | None = None) -> list[Replica]:
    started = [Replica(config, redis_url, clock_file) for _ in range(n)]
    await asyncio.gather(*(r.ready() for r in started))
    return started


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routelead.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sold_to(replies: list[pb.RouteLeadResponse]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reply in replies:
        for sale in reply.sales:
            counts[sale.buyer_id] = counts.get(sale.buyer_id, 0) + 1
    return counts
