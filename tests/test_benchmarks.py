"""A short run of the benchmark suite: real processes, real gRPC; checks the report, never the speed."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import orjson
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parent.parent
PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")


def _ordered(p: dict[str, float]) -> bool:
    values = [p[k] for k in PERCENTILES]
    return all(a <= b for a, b in itertools.pairwise(values))


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python ARGS` from the project's root, as a user runs the benchmarks; must succeed."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_smoke_run_writes_a_sane_report_and_plot(tmp_path: Path) -> None:
    proc = _python("-m", "benchmarks.run", "--scenario", "smoke", "--duration", "1", "--out", str(tmp_path))
    report = orjson.loads((tmp_path / "smoke.json").read_bytes())
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "smoke" in proc.stdout

    phases = report["phases"]
    assert report["buyers_per_lead"] == 3 and report["machine"]["cpus"] >= 1
    for name in ("closed", "open", "empty", "fanout", "fanout_open"):
        ph = phases[name]
        assert ph["answered"] > 0 and ph["errors"] == {}, (name, ph["errors"])
        assert ph["leads_per_s"] > 0 and ph["cpu_s"] >= 0
        assert _ordered(ph["e2e_ms"]), (name, ph["e2e_ms"])
        assert ph["peak_rss_mb"] >= ph["rss_mb"] > 10
        hdr = HdrHistogram.decode(ph["e2e_hdr"].encode())
        assert hdr.get_total_count() == ph["answered"]

    for name in ("closed", "open"):
        ph = phases[name]
        # Every lead reached all three buyers (one always hangs, one sometimes fails) and the
        # outcomes account for every answer: unique leads, so nothing is a duplicate.
        assert ph["pings"] == 3 * ph["answered"] and set(ph["outcomes"]) <= {"SOLD", "UNSOLD"}
        assert sum(ph["outcomes"].values()) == ph["answered"]
        # A rejected post moves on to the next bid, so a lead may take several posts.
        assert ph["outcomes"].get("SOLD", 0) <= ph["posts"] <= ph["pings"]
        assert ph["buyer_requests_per_s"] > ph["leads_per_s"]
        assert _ordered(ph["overhead_ms"]) and _ordered(ph["server_overhead_ms"])
        # The overhead is a part of each lead's end-to-end time, so no percentile of it can be larger.
        for k in PERCENTILES:
            assert ph["server_overhead_ms"][k] <= ph["overhead_ms"][k] * 1.01 + 0.01
            assert ph["overhead_ms"][k] <= ph["e2e_ms"][k] * 1.01 + 0.01
        assert ph["cpu_ms_per_lead"] > 0 and ph["deadline_overruns"] >= 0
    assert phases["open"]["target_rate"] > 0 and phases["open"]["shed"] == 0
    assert report["memory"]["service_peak_rss_mb"] >= report["memory"]["service_rss_mb_after_run"] > 10
    ratios = report["throughput_ratio"]
    assert ratios["vs_empty_grpc_handler"] > 0 and ratios["vs_bare_aiohttp_fanout"] > 0
    assert report["fleet_cpu_s"] > 0
    # Quote then commit: every pair answered, each call timed on its own, within the pair's time.
    qc = phases["quote_commit"]
    assert qc["answered"] > 0 and qc["errors"] == {}, qc["errors"]
    assert (
        set(qc["outcomes"]) <= {"SOLD", "UNSOLD", "NO_OFFER"}
        and sum(qc["outcomes"].values()) == qc["answered"]
    )
    assert _ordered(qc["quote_ms"]) and _ordered(qc["commit_ms"])
    assert qc["quote_ms"]["p50"] <= qc["e2e_ms"]["max"]


def test_with_redis_the_service_runs_on_a_throwaway_redis_server(tmp_path: Path) -> None:
    _python(
        *("-m", "benchmarks.run", "--scenario", "smoke", "--duration", "0.5"),
        *("--redis", "--workers", "2", "--phases", "closed,open", "--out", str(tmp_path)),
    )
    report = orjson.loads((tmp_path / "smoke.json").read_bytes())
    assert report["hot_state"].startswith("redis")
    for name in ("closed", "open"):
        ph = report["phases"][name]
        # Unique leads through the Redis dedupe: every one reaches the buyers, none is a duplicate.
        assert ph["answered"] > 0 and ph["errors"] == {} and "DUPLICATE" not in ph["outcomes"]
        assert ph["pings"] == 3 * ph["answered"]
    assert "empty" not in report["phases"] and "throughput_ratio" not in report
    # The supervisor and its two workers, each with its share of the closed loop's CPU.
    by_process = report["phases"]["closed"]["cpu_s_by_process"]
    assert len(by_process) == 3 and sum(by_process) > 0


def test_the_thread_probe_reports_each_threads_cpu_and_the_loops_lag(tmp_path: Path) -> None:
    _python(
        *("-m", "benchmarks.run", "--scenario", "smoke", "--duration", "1"),
        *("--threads", "--phases", "closed", "--out", str(tmp_path)),
        env={**os.environ, "BENCH_PROFILE_THREAD": "ledger-writer"},
    )
    threads = orjson.loads((tmp_path / "smoke.json").read_bytes())["threads"]
    cpu = threads["thread_cpu_s"]
    # The loop routed the leads; the books' writer thread wrote them.
    assert cpu["main (event loop)"] > 0 and cpu["ledger-writer"] > 0
    lag = threads["loop_lag_ms"]
    assert lag["samples"] > 0 and 0 <= lag["p50"] <= lag["p99"] <= lag["max"]


def test_the_micro_benchmarks_run_and_say_what_they_measured() -> None:
    books = _python("-m", "benchmarks.books_cost", "", "60", "4")
    assert "sqlite: 60 leads, 4 at a time" in books.stdout and "CPU per lead writer" in books.stdout
    spans = _python("-m", "benchmarks.trace_cost", "20")
    for line in ("live,  spans made only", "after, spans made only", "OTLP protobuf encode"):
        assert line in spans.stdout
    machine = _python("-m", "benchmarks.machine_cost", "20")
    assert "10 buyers:" in machine.stdout and "30 buyers:" in machine.stdout


def test_the_results_table_renders_every_scenario_of_a_directory(tmp_path: Path) -> None:
    from benchmarks.table import rows

    report = {
        "scenario": "fast-3",
        "phases": {
            "closed": {"leads_per_s": 100.0, "buyer_requests_per_s": 400.0, "deadline_overruns": 2},
            "open": {"target_rate": 50.0, "e2e_ms": {"p50": 2.0, "p90": 3.0, "p99": 4.0, "p99.9": 12.5}},
        },
        "throughput_ratio": {"vs_empty_grpc_handler": 0.1, "vs_bare_aiohttp_fanout": 0.8},
        "memory": {"service_rss_mb_warm": 70, "service_rss_mb_after_run": 72, "service_peak_rss_mb": 73},
    }

    lines = rows([report])

    assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|")
    assert "| fast-3 | 100.0 | 400.0 | 0.1 | 0.8 | 50.0 | 2.00 / 3.00 / 4.00 / 12.5 |" in lines[2]
    assert "| – / – | 2 / – |" in lines[2]
