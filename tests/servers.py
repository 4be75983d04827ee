"""Throwaway PostgreSQL and Redis servers on free loopback ports, from the installed binaries.

Not pytest-postgresql: initdb refuses to run as root (as CI does), so under root the server runs
as the `postgres` system user; and tests need to stop and restart the server mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PG_INSTALL = "apt-get install postgresql (PostgreSQL 15 server binaries: initdb, pg_ctl)"
REDIS_INSTALL = "apt-get install redis-server (/usr/bin/redis-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_answering(
    port: int, proc: subprocess.Popen[bytes], ready: Callable[[], bool] = lambda: True, within_s: float = 60
) -> None:
    """Until `routelead serve` (proc) answers on port, once `ready()`: an invalid lead is refused
    with anything but UNAVAILABLE / DEADLINE_EXCEEDED, and nothing is routed or booked."""
    import grpc
    from routelead.v1 import routelead_pb2 as pb
    from routelead.v1 import routelead_pb2_grpc as pb_grpc

    give_up = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RouteLeadStub(channel)
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"serve exited with {proc.returncode}: {err[-2000:]}")
            if ready():
                try:
                    await stub.RouteLead(pb.RouteLeadRequest(flow="none", source_id="src-1"), timeout=1)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        return
            assert time.monotonic() < give_up, f"serve did not answer within {within_s:.0f} s"
            await asyncio.sleep(0.2)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        pytest.fail(f"PostgreSQL tests need `{name}` and no DATABASE_URL is set: {PG_INSTALL}")
    return found


class PgServer:
    """initdb + pg_ctl in a temporary directory; `stop()` / `start()` for outage tests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="routelead-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        self.running = False
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"running as root, PostgreSQL needs the `postgres` system user: {PG_INSTALL}")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()}\n{tail}\n({PG_INSTALL})")

    def start(self) -> None:
        if self.running:
            return
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server on a free port, with append-only persistence (fsync on every write) in a
    temporary directory; `crash_and_restart()` SIGKILLs it and starts it on the same data."""

    def __init__(self) -> None:
        self.exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.exe):
            pytest.fail(f"outbox tests need redis-server: {REDIS_INSTALL}")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="routelead-redis-")
        self._start()

    def _start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen([self.exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.close()
        pytest.fail(f"redis-server did not start on port {self.port}: {REDIS_INSTALL}")

    def crash_and_restart(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
