"""Child processes of a run (buyer fleet, service, ceilings): start, find the port, measure, stop."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TASKSET = shutil.which("taskset") or "/usr/bin/taskset"


def cpu_layout(workers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the service's CPUs, the load generator's and the fleet's): the service measured on cores of
    its own, so load and buyers do not steal its time. ((), ()) when there are too few cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= workers or not Path(TASKSET).is_file():
        return (), ()
    return tuple(cpus[-workers:]), tuple(cpus[:-workers])


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_s: float
    rss_bytes: int
    # Peak resident set size since the process started (VmHWM).
    peak_rss_bytes: int


class Child:
    """One child process; killed (by its own pid) when the run ends, however it ends."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        announces_port: bool = True,
        cpus: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        if cpus:
            # Before exec, so every thread and forked worker the child starts inherits it.
            argv = [TASKSET, "-c", ",".join(map(str, cpus)), *argv]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            # A child that does not announce a port writes logs: they go nowhere, as to a log shipper.
            stdout=subprocess.PIPE if announces_port else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.port = 0

    def read_port(self, timeout_s: float = 20.0) -> int:
        """Children that print `PORT <n>` say where they listen."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                # Nothing else is read from it: send the rest nowhere rather than fill the pipe.
                self.proc.stdout.close()
                return self.port
        self.stop()
        raise RuntimeError(f"{self.name} did not start (exit code {self.proc.poll()})")

    def usage(self) -> Usage:
        """The process and its children (`serve --workers N` forks workers): CPU and memory summed."""
        cpu, rss, peak = 0.0, 0, 0
        try:
            family = [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
                peak += _peak_rss(p.pid)
            except psutil.NoSuchProcess:
                continue  # a worker that just exited
        return Usage(cpu, rss, peak)

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds of the process and each of its children: how SO_REUSEPORT spread the work."""
        out: dict[int, float] = {}
        try:
            family = [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return out
        for p in family:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[p.pid] = t.user + t.system
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                # A profiled service writes its report after SIGTERM: that can take a while.
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, child: Child, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{child.name} is not listening on {port}")


def python() -> str:
    return sys.executable
