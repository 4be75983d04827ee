"""`routelead serve` with a probe: `python -m benchmarks.threads_probe OUT.json -- SERVE-ARGS...`.

Used by `python -m benchmarks.run --threads`. Runs the very command the benchmark measures in this
process and writes, when SIGTERM ends it, the CPU each thread used and the event loop's lag since
the last SIGUSR1 (the run sends one as a phase starts); with BENCH_PROFILE_THREAD=ledger-writer,
also that thread's cProfile beside OUT.json:

- threads by name: Python's (the books' writer, the span exporter, asyncio's executor) from
  `threading`, gRPC's C-core threads by their kernel name; CPU from /proc/self/task/*/stat, so
  native threads count too.
- lag: how late the service's own 50 ms timer fired (routelead/telemetry/loop_lag.py): the wait
  every lead's callbacks share with whatever else holds the loop or the GIL.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
from routelead.cli import main as routelead_main

TICK = os.sysconf("SC_CLK_TCK")


def _threads() -> dict[int, tuple[str, float]]:
    """tid → (name, CPU seconds) for every thread of this process."""
    python = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, float]] = {}
    for tid_text in os.listdir("/proc/self/task"):
        tid = int(tid_text)
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
        name = "main (event loop)" if tid == os.getpid() else python.get(tid, f"native: {comm}")
        out[tid] = (name, cpu)
    return out


class Probe:
    def __init__(self) -> None:
        self.base: dict[int, tuple[str, float]] = {}
        self.seen: dict[int, tuple[str, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def mark(self, *_: Any) -> None:
        self.start()
        # Imported here, not at the top: prometheus-client must load after serve sets it up.
        from routelead.telemetry.loop_lag import LAG

        LAG.samples.clear()

    def start(self) -> None:
        with self.lock:
            self.base = _threads()
            self.seen = dict(self.base)

    def sample(self) -> None:
        # Threads that end before the report (a pool's idle worker) keep their last reading.
        while not self.stop.wait(0.2):
            with self.lock:
                self.seen.update(_threads())

    def report(self) -> dict[str, Any]:
        with self.lock:
            self.seen.update(_threads())
            by_name: dict[str, float] = {}
            for tid, (name, cpu) in self.seen.items():
                used = cpu - self.base.get(tid, (name, 0.0))[1]
                key = name.rstrip("0123456789_-") or name  # pool threads, summed by prefix
                by_name[key] = by_name.get(key, 0.0) + used
        from routelead.telemetry.loop_lag import LAG

        lags = sorted(LAG.samples)

        def pct(p: float) -> float | None:
            return round(lags[min(len(lags) - 1, int(p * len(lags)))] * 1000, 3) if lags else None

        return {
            "thread_cpu_s": {k: round(v, 3) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])},
            "loop_lag_ms": {
                "samples": len(lags),
                "p50": pct(0.5),
                "p90": pct(0.9),
                "p99": pct(0.99),
                "max": round(lags[-1] * 1000, 3) if lags else None,
            },
        }


def profile_thread(prefix: str, out: Path) -> None:
    """cProfile the thread whose name starts with `prefix` (e.g. the books' `ledger-writer`),
    written to `out` (top 40 by own time) when it ends."""
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        if not self.name.startswith(prefix):
            return run(self)
        prof = cProfile.Profile()
        prof.enable()
        try:
            return run(self)
        finally:
            prof.disable()
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
            out.write_text(text.getvalue())

    threading.Thread.run = profiled  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    out, sep, *serve_args = argv
    if sep != "--" or ("--workers" in serve_args and serve_args[serve_args.index("--workers") + 1] != "1"):
        print("usage: threads_probe OUT.json -- serve ... (one worker)", file=sys.stderr)
        return 2
    if prefix := os.environ.get("BENCH_PROFILE_THREAD", ""):
        profile_thread(prefix, Path(out).with_suffix(f".{prefix}.txt"))
    probe = Probe()
    probe.start()
    signal.signal(signal.SIGUSR1, probe.mark)
    sampler = threading.Thread(target=probe.sample, name="probe", daemon=True)
    sampler.start()
    try:
        return routelead_main(serve_args)
    finally:
        probe.stop.set()
        report = probe.report()
        report["thread_cpu_s"].pop("probe", None)
        Path(out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
