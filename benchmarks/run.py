"""Run benchmark scenarios: `python -m benchmarks.run --scenario fast-10` (or `all`, or several).

For each scenario: the buyer fleet in its own process, then the RouteLead service (`routelead serve`,
a separate process) driven closed-loop (maximum throughput) and open-loop (at half of it), then the
two ceilings driven the same way, against the same buyers. Writes <out>/<scenario>.json and .png.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchmarks import load
from benchmarks.procs import Child, Usage, cpu_layout, free_port, python, wait_listening
from benchmarks.report import percentiles_ms, phase_summary, plot
from benchmarks.scenarios import SCENARIOS, Scenario, fleet_spec, service_config

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _redis_installed() -> bool:
    return Path(REDIS_SERVER).is_file()


# Every phase stops at its time limit or at this many leads, whichever comes first.
MAX_LEADS = 2_000_000
WARMUP_S = 1.0


def _machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load1, 2),
        "load_avg_5m_at_start": round(load5, 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


async def _closed(
    target: str, s: Scenario, child: Child, seconds: float, conns: int = 1, **extra: Any
) -> tuple[Any, Any]:
    before, by_pid = child.usage(), child.cpu_by_pid()
    tally, took = await load.closed_loop(target, s.concurrency, seconds, MAX_LEADS, conns)
    after = child.cpu_by_pid()
    if len(after) > 1:
        # `serve --workers N`: each process's share of the phase's CPU (the supervisor included),
        # how evenly the kernel's SO_REUSEPORT hashing spread the connections.
        used = sorted((round(c - by_pid.get(pid, 0.0), 2) for pid, c in after.items()), reverse=True)
        extra["cpu_s_by_process"] = used
    return tally, phase_summary(
        "closed", tally, took, before, child.usage(), concurrency=s.concurrency, **extra
    )


async def _open(target: str, rate: float, child: Child, seconds: float, conns: int = 1) -> tuple[Any, Any]:
    before = child.usage()
    tally, took = await load.open_loop(target, rate, seconds, connections=conns)
    return tally, phase_summary("open", tally, took, before, child.usage(), target_rate=round(rate, 1))


async def _soak(
    target: str,
    rate: float,
    child: Child,
    seconds: float,
    conns: int = 1,
    steps: int = 0,
    concurrency: int = 0,
) -> dict[str, Any]:
    """Open loop (or, with `concurrency`, closed loop) in steps, sampling the service's memory after
    each: is it flat? One step per ~2.5 minutes on long runs (at least six), each with its own
    errors, sheds and latency."""
    steps = steps or max(6, int(seconds // 150))
    samples: list[dict[str, Any]] = []
    leads = 0
    for _ in range(steps):
        if concurrency:
            tally, _took = await load.closed_loop(target, concurrency, seconds / steps, MAX_LEADS, conns)
        else:
            tally, _took = await load.open_loop(target, rate, seconds / steps, connections=conns)
        leads += tally.ok
        u = child.usage()
        samples.append(
            {
                "leads": leads,
                "rss_mb": round(u.rss_bytes / 2**20, 1),
                "errors": sum(tally.errors.values()),
                "shed": tally.shed,
                "overruns": tally.overruns,
                "e2e_p99_ms": round(tally.e2e.get_value_at_percentile(99) / 1000, 1),
            }
        )
        print(f"soak: {samples[-1]}", file=sys.stderr, flush=True)
    half = samples[len(samples) // 2 :]
    growth = (half[-1]["rss_mb"] - half[0]["rss_mb"]) / max(1, half[-1]["leads"] - half[0]["leads"])
    return {
        "mode": f"soak, closed loop of {concurrency}" if concurrency else "soak, open loop",
        "target_rate": rate,
        "samples": samples,
        "peak_rss_mb": round(child.usage().peak_rss_bytes / 2**20, 1),
        "rss_growth_kb_per_1k_leads_second_half": round(growth * 1024 * 1000, 2),
    }


async def run_scenario(
    s: Scenario,
    out: Path,
    profile: bool = False,
    open_rate: float | None = None,
    workers: int = 1,
    redis: bool = False,
    database_url: str = "",
    service_cpus: tuple[int, ...] = (),
    max_in_flight: int = 0,
    threads: bool = False,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"routelead-bench-{s.name}-"))
    spec = work / "fleet.json"
    spec.write_bytes(orjson.dumps(fleet_spec(s)))
    report: dict[str, Any] = {
        "scenario": s.name,
        "description": s.description,
        "buyers_per_lead": len(s.buyers),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            **_machine(),
            "service_processes": workers,
            "max_in_flight": max_in_flight or "no limit",
            "service_cpus": list(service_cpus) or "shared",
            "load_and_fleet_cpus": sorted(os.sched_getaffinity(0)) if service_cpus else "shared",
        },
        "hot_state": "redis (throwaway redis-server)" if redis else "memory",
        "ledger": "postgresql" if database_url else "sqlite file",
        "phases": {},
    }
    tallies: dict[str, load.Tally] = {}
    children: list[Child] = []
    try:
        fleet = Child("buyer fleet", [python(), "-m", "benchmarks.fleet", str(spec)])
        children.append(fleet)
        buyers_url = f"http://127.0.0.1:{fleet.read_port()}"
        fleet_before = fleet.usage()

        config = work / "routelead.yaml"
        config.write_text(yaml.safe_dump(service_config(s, buyers_url), sort_keys=False))
        port = free_port()
        argv = ["-m", "routelead.cli", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers), "--max-in-flight", str(max_in_flight)]
        if profile:
            where = str(out / f"{s.name}.profile.txt")
            argv = ["-m", "benchmarks.profile_service", where, "--", *argv[2:]]
        probed = work / "threads.json"
        if threads:
            argv = ["-m", "benchmarks.threads_probe", str(probed), "--", *argv[2:]]
        # Never an ambient Redis: memory, or the throwaway one below.
        env = {"REDIS_URL": "", "ROUTELEAD_REDIS_URL": ""}
        # The books: a throwaway SQLite file (the embedded default), or --database-url (PostgreSQL).
        env["DATABASE_URL"] = database_url
        env["ROUTELEAD_DB"] = str(work / "ledger.db")
        if redis:
            rport = free_port()
            store = Child(
                "redis-server",
                [
                    REDIS_SERVER,
                    "--port",
                    str(rport),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                announces_port=False,
            )
            children.append(store)
            wait_listening(rport, store)
            env["REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
            env["ROUTELEAD_DEDUPE_KEY"] = secrets.token_hex(32)  # a throwaway key for a throwaway store
        service = Child(
            "routelead serve", [python(), *argv], env=env, announces_port=False, cpus=service_cpus
        )
        children.append(service)
        wait_listening(port, service)
        target = f"127.0.0.1:{port}"
        # SO_REUSEPORT places each connection on one worker by hash: several per worker spread them.
        conns = 1 if workers == 1 else 4 * workers
        await load.closed_loop(target, s.concurrency, WARMUP_S, MAX_LEADS, conns)
        rss_start = service.usage().rss_bytes
        if threads:
            service.proc.send_signal(signal.SIGUSR1)  # per-thread CPU and loop lag from here on
        report["phases"]["routelead_warm_rss_mb"] = round(rss_start / 2**20, 1)

        closed_rate = open_rate / s.open_share if open_rate else 0.0
        if "closed" in s.phases or (not open_rate and ("open" in s.phases or "soak" in s.phases)):
            seconds = s.duration_s if "soak" not in s.phases else 3
            tally, summary = await _closed(target, s, service, seconds, conns)
            tallies["closed"] = tally
            report["phases"]["closed"] = summary
            closed_rate = summary["leads_per_s"]
        if "open" in s.phases and closed_rate:
            tally, summary = await _open(target, closed_rate * s.open_share, service, s.duration_s, conns)
            tallies["open"] = tally
            report["phases"]["open"] = summary
        if "quote" in s.phases:
            # Inbound ping-post: quote from the ping fields, then commit the full lead.
            before = service.usage()
            inbound, took = await load.quote_commit_loop(
                target, s.concurrency, s.duration_s, MAX_LEADS, conns
            )
            tallies["quote+commit"] = inbound.pairs
            report["phases"]["quote_commit"] = phase_summary(
                "quote_commit",
                inbound.pairs,
                took,
                before,
                service.usage(),
                concurrency=s.concurrency,
                quote_ms=percentiles_ms(inbound.quote),
                commit_ms=percentiles_ms(inbound.commit),
            )
        if "soak" in s.phases and closed_rate:
            rate = closed_rate * s.open_share
            report["phases"]["soak"] = await _soak(target, rate, service, s.duration_s, conns)
        if "soak-closed" in s.phases:
            # As many leads as the service answers, `concurrency` at a time: the most leads per hour
            # for a memory run, with no backlog to grow.
            report["phases"]["soak"] = await _soak(
                target, 0.0, service, s.duration_s, conns, concurrency=s.concurrency
            )
        end: Usage = service.usage()
        report["memory"] = {
            "service_rss_mb_warm": round(rss_start / 2**20, 1),
            "service_rss_mb_after_run": round(end.rss_bytes / 2**20, 1),
            "service_peak_rss_mb": round(end.peak_rss_bytes / 2**20, 1),
        }
        service.stop()
        if threads:
            report["threads"] = orjson.loads(probed.read_bytes())

        for kind in ("empty", "fanout"):
            if kind not in s.phases:
                continue
            ceiling = Child(
                f"{kind} ceiling",
                [
                    python(),
                    "-m",
                    "benchmarks.ceilings",
                    kind,
                    "--buyers-url",
                    buyers_url,
                    "--buyers",
                    ",".join(b.id for b in s.buyers),
                ],
                cpus=service_cpus,
            )
            children.append(ceiling)
            ctarget = f"127.0.0.1:{ceiling.read_port()}"
            await load.closed_loop(ctarget, s.concurrency, WARMUP_S / 2, MAX_LEADS, conns)
            tally, summary = await _closed(ctarget, s, ceiling, s.duration_s, conns)
            tallies[kind] = tally
            report["phases"][kind] = summary
            if kind == "fanout" and "open" in report["phases"]:
                # The same open-loop rate against the bare fan-out: the latency floor of the stack at
                # that load, to read our open-loop overhead against.
                rate = report["phases"]["open"]["target_rate"]
                tally, summary = await _open(ctarget, rate, ceiling, s.duration_s, conns)
                tallies["fanout open"] = tally
                report["phases"]["fanout_open"] = summary
            ceiling.stop()
        fleet_after = fleet.usage()
        report["fleet_cpu_s"] = round(fleet_after.cpu_s - fleet_before.cpu_s, 2)
    finally:
        for child in children:
            child.stop()

    phases = report["phases"]
    if "closed" in phases:
        ours = phases["closed"]["leads_per_s"]
        for kind, key in (("empty", "vs_empty_grpc_handler"), ("fanout", "vs_bare_aiohttp_fanout")):
            if kind in phases and phases[kind]["leads_per_s"]:
                report.setdefault("throughput_ratio", {})[key] = round(ours / phases[kind]["leads_per_s"], 3)
    report["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    (out / f"{s.name}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if tallies:
        plot(report, tallies, out / f"{s.name}.png")
    return report


def _line(r: dict[str, Any]) -> str:
    p = r["phases"]
    c, o = p.get("closed", {}), p.get("open", {})
    e2e, oh = o.get("e2e_ms", {}), o.get("overhead_ms", {})
    ratio = r.get("throughput_ratio", {})
    return (
        f"{r['scenario']:<13} closed {c.get('leads_per_s', 0):>7} leads/s  "
        f"open@{o.get('target_rate', 0)}: e2e p99 {e2e.get('p99', '-')} ms, "
        f"overhead p50/p99 {oh.get('p50', '-')}/{oh.get('p99', '-')} ms  "
        f"vs empty {ratio.get('vs_empty_grpc_handler', '-')}, "
        f"vs fanout {ratio.get('vs_bare_aiohttp_fanout', '-')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--scenario", action="append", required=True, help=f"{', '.join(SCENARIOS)} or all")
    parser.add_argument("--duration", type=float, help="seconds per phase (default: the scenario's)")
    parser.add_argument(
        "--concurrency", type=int, help="closed-loop leads in flight (default: the scenario's)"
    )
    parser.add_argument(
        "--phases",
        help="comma-separated subset of closed,open,empty,fanout (default: all); soak scenarios: "
        "soak (open loop at --rate) or soak-closed (closed loop at --concurrency)",
    )
    parser.add_argument(
        "--rate", type=float, help="open-loop leads/s (default: half the closed-loop maximum)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="service worker processes (routelead serve --workers)"
    )
    parser.add_argument(
        "--redis", action="store_true", help="hot state in a throwaway redis-server (else in memory)"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="the service's ledger database, e.g. postgresql://user@host/db (else a throwaway SQLite "
        "file); never an ambient DATABASE_URL",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the service under pyinstrument (<out>/<scenario>.profile.txt)",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="per-thread CPU and event-loop lag of the service over its phases (report's `threads`)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="routelead serve --max-in-flight: admission control (refused calls count as errors)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the service and the ceilings on the last --workers cores, the load generator and the "
        "buyer fleet on the others (default: every process on any core; on 2 cores, pinning puts the "
        "service's ledger thread on its event loop's core and costs it CPU)",
    )
    args = parser.parse_args(argv)
    names = (
        [n for n in SCENARIOS if n != "smoke" and not n.startswith("soak")]
        if "all" in args.scenario
        else args.scenario
    )
    unknown = [n for n in names if n not in SCENARIOS]
    if args.workers > 1 and not args.redis:
        parser.error(
            "--workers > 1 needs --redis: routelead serve refuses per-process caps with several workers"
        )
    if args.redis and not _redis_installed():
        parser.error("--redis needs redis-server: apt-get install redis-server")
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    import uvloop

    service_cpus, others = cpu_layout(args.workers) if args.pin else ((), ())
    if others:
        os.sched_setaffinity(0, others)  # this process (load) and the fleet it starts
    for name in names:
        s = SCENARIOS[name]
        if args.duration:
            s = s.with_(duration_s=args.duration)
        if args.concurrency:
            s = s.with_(concurrency=args.concurrency)
        if args.phases:
            s = s.with_(phases=tuple(args.phases.split(",")))
        args.out.mkdir(parents=True, exist_ok=True)
        report = uvloop.run(
            run_scenario(
                s,
                args.out,
                args.profile,
                args.rate,
                args.workers,
                args.redis,
                args.database_url,
                service_cpus,
                args.max_in_flight,
                args.threads,
            )
        )
        print(_line(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
