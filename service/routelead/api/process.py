"""`routelead serve`: one process, or a supervisor and N forked workers sharing the port.

Multi-worker mode forks every worker before any gRPC object exists (gRPC's own rule for fork),
and each worker builds its own server, event loop and buyer session, binding the same port with
SO_REUSEPORT so the kernel spreads incoming connections across them. The supervisor holds no
gRPC state: it forwards SIGTERM (each worker drains its in-flight leads), notices a worker that
dies on its own and starts a replacement (a crash loop ends the whole process instead, so the
orchestrator sees it), and, when metrics are on, runs the /metrics endpoint in one more child that
sums every worker's prometheus-client files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from routelead.config.runtime import RuntimeConfig
from routelead.settings import Settings

if TYPE_CHECKING:
    # Imported for real only after prepare_metrics_dir(): it pulls in prometheus_client.
    from routelead.api.security import Security

log = structlog.get_logger("routelead.supervisor")

# More worker deaths than this within the window is a crash loop, not bad luck.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: RuntimeConfig
    listen: str
    security: Security
    # Every environment setting, read and checked once by the command line.
    settings: Settings
    workers: int = 1
    metrics_listen: str = ""
    health_listen: str = ""
    log_level: str = "INFO"
    # Set: the books (ledger, versioned live configuration, Admin API) come with the service.
    config_path: str = ""
    # Calls one worker takes at once; more are refused with RESOURCE_EXHAUSTED (0: no limit).
    max_in_flight: int = 0


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(opts: ServeOptions, own_metrics_dir: str | None = None) -> int:
    if opts.workers <= 1:
        if opts.metrics_listen:
            from routelead.telemetry.metrics import serve_metrics

            serve_metrics(*split_address(opts.metrics_listen))
        return run_worker(opts, reuse_port=False)
    if split_address(opts.listen)[1] == 0:
        raise ValueError("--workers needs a fixed port to share, not port 0")
    return Supervisor(opts, own_metrics_dir).run()


def prepare_metrics_dir() -> str | None:
    """Point prometheus-client at a directory shared by every worker; call it before anything imports
    prometheus_client. Returns the directory when we created it (ours to remove at exit)."""
    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for f in Path(path).glob("*.db"):  # stale files of a previous run would be summed in
            f.unlink()
        return None
    path = tempfile.mkdtemp(prefix="routelead-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_worker(opts: ServeOptions, *, reuse_port: bool) -> int:
    """One serving process: its own tracer, event loop, gRPC server and buyer session."""
    # Imported after the fork and after prepare_metrics_dir(): it pulls in prometheus_client.
    from routelead.api.app import serve as serve_worker
    from routelead.telemetry.tracing import configure_tracing, shutdown_tracing

    configure_tracing(opts.settings)

    try:
        run_loop(serve_worker(opts, reuse_port=reuse_port))
    finally:
        shutdown_tracing()  # flush spans still queued for export
    return 0


class Supervisor:
    def __init__(self, opts: ServeOptions, own_metrics_dir: str | None = None) -> None:
        self.opts = opts
        self.children: dict[int, str] = {}  # pid → role ("worker-3", "metrics")
        self.stopping = False
        self.deaths: list[float] = []
        self.failed = False
        self._own_metrics_dir = own_metrics_dir
        self._stop_deadline = float("inf")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for i in range(self.opts.workers):
                if not self.stopping:  # a SIGTERM during start-up: fork no more
                    self._spawn(f"worker-{i}")
            if self.opts.metrics_listen and not self.stopping:
                self._spawn("metrics")
            log.info(
                "supervisor.started", workers=self.opts.workers, pid=os.getpid(), listen=self.opts.listen
            )
            self._watch()
        finally:
            if self._own_metrics_dir:
                for f in Path(self._own_metrics_dir).glob("*.db"):
                    f.unlink(missing_ok=True)
                os.rmdir(self._own_metrics_dir)
        log.info("supervisor.stopped", failed=self.failed)
        return 1 if self.failed else 0

    def _spawn(self, role: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # Stop signals are held across the fork: one arriving in between would otherwise run the
        # supervisor's handler inside the new child (which then ignores it and serves on), or
        # reach the supervisor before it knows the child's pid.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        held = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        pid = os.fork()
        if pid:
            self.children[pid] = role
            log.info("worker.started", role=role, pid=pid)
            if self.stopping:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            return
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # A stop that came during the fork ends this child now, by the signal (a clean stop).
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            structlog.contextvars.bind_contextvars(worker=role)
            code = _metrics_child(self.opts.metrics_listen) if role == "metrics" else self._worker_child()
        except BaseException as exc:
            log.error("worker.crashed", role=role, error=type(exc).__name__)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _worker_child(self) -> int:
        return run_worker(self.opts, reuse_port=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + _drain_s(self.opts.config) + 5.0
            log.info("supervisor.draining", signal=signal.Signals(signum).name, workers=len(self.children))
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _watch(self) -> None:
        from routelead.telemetry.metrics import WORKER_RESTARTS, worker_exited

        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self.stopping and time.monotonic() > self._stop_deadline:
                    log.error(
                        "supervisor.kill", reason="workers did not drain in time", pids=list(self.children)
                    )
                    self._signal_children(signal.SIGKILL)
                    self.failed = True
                    self._stop_deadline = float("inf")
                time.sleep(_POLL_S)
                continue
            role = self.children.pop(pid, None)
            if role is None:
                continue
            worker_exited(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker.stopped", role=role, pid=pid, exit_code=code)
                # A worker still starting when our SIGTERM came had no drain handler yet and ended
                # by the signal itself: nothing was in flight there, so that is a clean stop too.
                self.failed |= code not in (0, -signal.SIGTERM)
                continue
            log.error("worker.died", role=role, pid=pid, exit_code=code)
            WORKER_RESTARTS.labels(role).inc()
            self._restart_or_give_up(role)

    def _restart_or_give_up(self, role: str) -> None:
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW_S] + [now]
        if len(self.deaths) > MAX_RESTARTS:
            log.error("supervisor.crash_loop", deaths=len(self.deaths), window_s=RESTART_WINDOW_S)
            self.failed = True
            self._on_signal(signal.SIGTERM, None)
            return
        self._spawn(role)


def _drain_s(config: RuntimeConfig) -> float:
    return max(f.deadline_s for f in config.flows.values()) + 1.0


def _metrics_child(address: str) -> int:
    from routelead.telemetry.metrics import serve_metrics

    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda s, _f: stop.append(s))
    serve_metrics(*split_address(address))
    while not stop:
        time.sleep(0.2)
    return 0
